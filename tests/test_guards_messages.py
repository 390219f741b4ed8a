"""Class 9, messages that name things (issue 25): every error line names what is involved, what is true of it and
what would fix it.

The families of classes 1-8 check their own lines (the path, the value, the holder...). Here, every
one-line error dogo can raise is read from the source: its message must name something (a value
filled in, a dotted key, a --flag or a `command`) and say what would fix it, or carry another
message that does (``f"{where}: {exc}"``). A new error joins by being raised: the audit finds it.
The shared wording (what a path is, sizes, the fix of a damaged dataset file) is
:mod:`dogo.guards.messages`.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from dogo.guards.messages import size, what_is

ERRORS = {
    "DogoError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "OutputError",
    "NotOwned",
    "Damaged",
    "ServiceError",
    "RunLockedError",
    "FolderInUse",
    "ArgumentTypeError",
}
NAMES = re.compile(r"\{\}|\b[a-z_]+\.[a-z_]+\b|--[a-z]|`[^`]+`")
FIXES = re.compile(
    r"; |—| use | or | pass |choose|give |set |remove|rebuild|restore|lower|raise |install|rerun|prepare "
    r"|fix|start |delete|add |name |quote|close|free |wait|see |lists |expected|must|should|only |needs? "
    r"|replace|correct|\{\}\W*$"
)


def raised_messages() -> list[tuple[str, str]]:
    """``(where, message with every filled-in value as {})`` of every error raised with a literal message."""
    found = []
    for path in sorted((Path(__file__).parents[1] / "src" / "dogo").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args):
                continue
            func = node.exc.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            message = node.exc.args[0]
            if name not in ERRORS or not isinstance(message, (ast.JoinedStr, ast.Constant)):
                continue
            parts = message.values if isinstance(message, ast.JoinedStr) else [message]
            text = "".join(p.value if isinstance(p, ast.Constant) else "{}" for p in parts)
            found.append((f"{path.relative_to(path.parents[2])}:{node.lineno}", text))
    return found


MESSAGES = raised_messages()


def test_the_audit_reads_every_error():
    assert len(MESSAGES) > 200


@pytest.mark.parametrize(("where", "message"), MESSAGES, ids=[w for w, _ in MESSAGES])
def test_an_error_names_what_is_involved_and_what_would_fix_it(where, message):
    assert NAMES.search(message), f"{where}: names nothing: {message}"
    assert FIXES.search(message), f"{where}: says no fix: {message}"


def test_what_is_true_of_a_path_in_words(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 1500)
    (tmp_path / "d").mkdir()
    os.symlink(tmp_path / "d", tmp_path / "l")
    os.mkfifo(tmp_path / "p")
    assert what_is(tmp_path / "f") == "a file of 1.5 kB"
    assert what_is(tmp_path / "d") == "a folder"
    assert what_is(tmp_path / "l") == f"a symbolic link to {tmp_path / 'd'}"
    assert what_is(tmp_path / "p") == "a FIFO" and what_is(tmp_path / "gone") == "missing"
    assert [size(n) for n in (12, 1_000, 2_500_000, 3e12)] == ["12 bytes", "1.0 kB", "2.5 MB", "3.0 TB"]
