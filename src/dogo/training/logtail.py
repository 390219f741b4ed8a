"""Append-only logs (``metrics.jsonl``) brought back to a whole-line state before appending again.

A process killed (or a disk filled) in the middle of a ``write`` leaves a last line without its
newline; the next row appended would be glued onto it and both would be lost to every reader.
A checkpoint records the log's length when it was taken (``metrics_bytes``); on resume the log
is cut back to that length, and whatever the cut leaves is checked to end on a line boundary.
"""

from __future__ import annotations

import os
from pathlib import Path


def last_line_end(path: Path, size: int) -> int:
    """Offset just past the last newline within the first ``size`` bytes of ``path`` (0 if none)."""
    with open(path, "rb") as handle:
        end = size
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            chunk = handle.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            end = start
    return 0


def restore_log(path: str | Path, recorded: int | None = None) -> str | None:
    """Cut ``path`` back to ``recorded`` bytes (the checkpoint's view), then to its last whole line.

    Returns what was unusual, in one sentence for the user, or None: a log shorter than the
    checkpoint recorded (rows were lost), or a torn last line that had to be cut.
    """
    path = Path(path)
    if not path.is_file():
        return None
    size = path.stat().st_size
    notes = []
    target = size
    if recorded is not None:
        if size < recorded:
            notes.append(
                f"{path} is shorter than its checkpoint recorded ({size} < {recorded} bytes; rows were "
                "lost or the file was edited)"
            )
        else:
            target = recorded
    end = last_line_end(path, target) if target else 0
    if end < target:
        notes.append(
            f"{path}: cut a torn last line ({target - end} bytes without a newline, from a write that was interrupted)"
        )
    if end < size:
        with open(path, "r+b") as handle:
            handle.truncate(end)
            handle.flush()
            os.fsync(handle.fileno())
    return "; ".join(notes) or None
