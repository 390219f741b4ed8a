"""Class 8, signals at any moment (issue 25): Ctrl-C once or twice, while dogo starts up and after.

The real process (``python -m dogo``) of every command gets SIGINT once, or twice 10 ms apart,
while it is still starting up (right after its package was imported, while torch is being
imported): exit status 130, one line ``dogo CMD: interrupted``, never a traceback. After start-up,
training stops after the step in flight with a checkpoint (130), and another command is
interrupted with the same one line. ``-X importtime`` tells the test when dogo's first line has
run (the interpreter's own start-up, before any of dogo's code, is Python's).

Called in-process (``dogo.cli.main(argv)`` from a program, or a test), dogo puts back exactly the
SIGINT handler it found, however the command ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import dogo.cli.train
from dogo.cli import main
from dogo.core.errors import DogoError
from guarded import digits_config
from test_bad_inputs import assert_nothing_lost, snapshot

COMMANDS = {
    "pretrain": ["CFG", "--out", "OUT"],
    "evaluate": ["RUN", "--protocol", "knn"],
    "export": ["RUN", "--format", "torchscript", "--out", "OUT"],
    "embed": ["RUN", "--data", "digits", "--out", "OUT"],
    "report": ["RUN"],
    "prepare": ["digits", "--out", "OUT"],
    "bench": ["CFG"],
    "study": ["STUDY"],
    "clean": ["RUN"],
    "datasets": [],
    "configs": [],
    "quickstart": ["--out", "OUT"],
}


def start(tmp: Path, argv: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "DOGO_DATA"}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "dogo", *argv],
        # as from a terminal: Ctrl-C not ignored. pytest started as a background job (`make test &`, nohup, a
        # script's `cmd &`) ignores SIGINT, as POSIX has a non-interactive shell do for `&`; its xdist workers
        # inherit that and so would dogo, which keeps an inherited SIG_IGN as Python does (it was meant to be
        # ignored): the child would train on through the Ctrl-C it is sent here
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(proc: subprocess.Popen, done) -> list[str]:
    """stderr lines until ``done(line)`` (import-time lines included)."""
    seen = []
    while True:
        line = proc.stderr.readline()
        seen.append(line)
        if not line or done(line):
            return seen


def interrupt(proc: subprocess.Popen, twice: bool) -> tuple[int, list[str]]:
    proc.send_signal(signal.SIGINT)
    if twice:
        time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=300)
    return proc.returncode, [line for line in err.splitlines() if not line.startswith("import time:")]


def files(tmp: Path) -> dict[str, str]:
    (tmp / "c.yaml").write_text(yaml.safe_dump(digits_config(max_steps=100_000, epochs=1000)))
    (tmp / "s.yaml").write_text("name: s\nbase: c.yaml\narms: [{name: a}]\n")
    (tmp / "run").mkdir()
    return {"CFG": "c.yaml", "RUN": "run", "OUT": "out", "STUDY": "s.yaml"}


@pytest.mark.parametrize("twice", [False, True], ids=["once", "twice"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_ctrl_c_while_starting_up(command, twice, tmp_path):
    names = files(tmp_path)
    before = snapshot(tmp_path)
    proc = start(tmp_path, [command, *(names.get(a, a) for a in COMMANDS[command])])
    wait_for(proc, lambda line: line.rstrip().endswith("| dogo"))  # dogo's package has been imported
    code, err = interrupt(proc, twice)
    assert code == 130 and err == [f"dogo {command}: interrupted"], (code, err)
    assert_nothing_lost(before, snapshot(tmp_path))  # stopped before it wrote anything


def test_ctrl_c_twice_while_training_saves_and_says_so(tmp_path):
    names = files(tmp_path)
    proc = start(tmp_path, ["pretrain", names["CFG"], "--out", "run2"])
    wait_for(proc, lambda line: line.startswith("device "))  # set up: the training loop starts now
    time.sleep(1.0)
    code, err = interrupt(proc, twice=True)
    assert code == 130 and not any("Traceback" in line for line in err), err
    assert err[-1].startswith("stopped by SIGINT at step ") and "dogo pretrain --resume" in err[-1], err
    assert (tmp_path / "run2" / "checkpoints" / "last.pt").is_file()


@pytest.mark.parametrize("twice", [False, True], ids=["once", "twice"])
def test_ctrl_c_after_start_up_is_one_line(twice, tmp_path):
    names = files(tmp_path)
    proc = start(tmp_path, ["bench", names["CFG"], "--steps", "100000", "--no-ceiling", "--no-reference"])
    wait_for(proc, lambda line: not line.startswith("import time:"))  # bench has begun to say what it does
    time.sleep(0.5)
    code, err = interrupt(proc, twice)
    assert code == 130 and err[-1] == "dogo bench: interrupted", err
    assert not any("Traceback" in line or "Exception ignored" in line for line in err), err


# ------------------------------------------------------------------------ dogo's CLI called in-process


def _host_handler(signum, frame):  # a handler of the program that calls dogo's CLI
    raise AssertionError("not to be called")


def _ends(how: str):
    """A command that ends as ``how`` says, and the SIGINT handler it saw while it ran."""
    seen: list = []

    def command(args) -> int:
        seen.append(signal.getsignal(signal.SIGINT))
        if how == "error":
            raise DogoError("a user error")
        if how == "interrupt":
            raise KeyboardInterrupt
        if how == "bug":
            raise RuntimeError("a bug")
        return 0

    return command, seen


@pytest.mark.parametrize("how", ["ok", "error", "interrupt", "bug", "refused"])
@pytest.mark.parametrize(
    "found",
    [signal.default_int_handler, _host_handler, signal.SIG_DFL, signal.SIG_IGN],
    ids=["python-default", "host-handler", "SIG_DFL", "SIG_IGN"],
)
def test_main_in_process_puts_back_the_sigint_handler_it_found(found, how, monkeypatch, capsys):
    command, seen = _ends(how)
    monkeypatch.setattr(dogo.cli.train, "cmd_configs", command)
    argv = ["configs", "--no-such-option"] if how == "refused" else ["configs"]
    previous = signal.signal(signal.SIGINT, found)
    try:
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's refusal
            code = exc.code
        after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == {"ok": 0, "error": 2, "interrupt": 130, "bug": 1, "refused": 2}[how], capsys.readouterr().err
    assert after is found
    if how != "refused":  # the command ran under dogo's own handling: SIGINT was not the program's meanwhile
        assert seen == [signal.SIG_IGN if found is signal.SIG_IGN else signal.default_int_handler]
