"""Messages that name things (class 9): what is true of a path, and sizes, in the words errors use.

An error line names the path, key or value involved, says what is true of it and what would fix
it: ``out.npy: cannot write 4.0 MB (No space left on device; 1.2 MB free there); free some space
or write elsewhere``. The helpers here give every guard the same wording.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["REPLACE_FILE", "size", "what_is"]

#: The fix of a dataset file that is damaged or not what its reader needs.
REPLACE_FILE = "replace it with an intact copy (download or copy the dataset again)"


def size(nbytes: float) -> str:
    """``1536`` -> ``1.5 kB``; decimal units, as ``df -H`` and file managers show them."""
    nbytes = float(nbytes)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if abs(nbytes) < 1000 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} TB"  # pragma: no cover


def what_is(path: str | os.PathLike) -> str:
    """What ``path`` is right now, without following a link: ``a symbolic link to /x``, ``a folder``,
    ``a file of 12 bytes``, ``a FIFO``, ``missing``."""
    path = Path(path)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if stat.S_ISLNK(st.st_mode):
        try:
            return f"a symbolic link to {os.readlink(path)}"
        except OSError:
            return "a symbolic link"
    if stat.S_ISDIR(st.st_mode):
        return "a folder"
    if stat.S_ISREG(st.st_mode):
        return f"a file of {size(st.st_size)}"
    kinds = {
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a device file",
        stat.S_ISBLK: "a device file",
    }
    return next((name for test, name in kinds.items() if test(st.st_mode)), "a special file")
