"""The folder lock itself: an exclusive ``flock`` on a folder, one process at a time.

:func:`acquire` takes an exclusive ``flock`` on the folder itself (no lock file to create or leave
behind). The kernel drops the lock when its process exits, however it exits, so a lock is never
stale: a killed process's folder is free at once. The second process gets one line naming the
owner's pid and command line, read from ``/proc/locks`` and ``/proc/PID/cmdline`` where the system
has them (:func:`in_use`).

Locks are per open file description, so a process keeps the descriptor of each folder it owns
and :func:`acquire` is idempotent within the process; :func:`release_all` frees them (the CLI
calls it when a command ends; in a library process they last until exit). This is the mechanism
of :mod:`dogo.guards.locks` (which folder each command holds) and of :mod:`dogo.runs.runlock`
(one process per run directory); it imports nothing of dogo's but the error class.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from dogo.core.errors import DogoError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, one process is trusted
    fcntl = None  # type: ignore[assignment]

_HELD: dict[tuple[int, int], int] = {}  # (st_dev, st_ino) of a run directory -> its locked descriptor


class RunLockedError(DogoError):
    """The run directory is owned by another live process."""


class FolderInUse(RunLockedError):
    """Another live process holds the folder's lock."""


def _command_of(pid: int) -> str:
    """What process ``pid`` runs, as the user typed it where we can tell (``dogo evaluate runs/x ...``)."""
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return ""
    if "-m" in argv and argv.index("-m") + 1 < len(argv) and argv[argv.index("-m") + 1] == "dogo":
        argv = ["dogo", *argv[argv.index("-m") + 2 :]]
    elif argv and os.path.basename(argv[0]) != "dogo" and len(argv) > 1 and os.path.basename(argv[1]) == "dogo":
        argv = argv[1:]  # python .../bin/dogo ...
    if argv:
        argv[0] = os.path.basename(argv[0])  # python3.11, dogo
    if len(argv) > 2 and argv[1] == "-c":
        argv[2] = "..."  # the program text itself says little
    text = " ".join(argv)
    return text if len(text) <= 240 else text[:237] + "..."


def holder(folder: str | os.PathLike) -> str:
    """``process 123 (dogo evaluate runs/x --protocol knn)``, or ``another process``."""
    pid = owner_pid(folder)
    if pid is None:
        return "another process"
    command = _command_of(pid)
    return f"process {pid}" + (f" ({command})" if command else "")


def in_use(folder: str | os.PathLike) -> FolderInUse:
    """The one-line refusal for a folder another process holds."""
    pid = owner_pid(folder)
    stop = f" (kill {pid})" if pid is not None else ""
    return FolderInUse(
        f"{folder}: in use by {holder(folder)}, which is writing it; wait for it to finish or "
        f"stop it{stop}, then try again"
    )


def _key(run_dir: Path) -> tuple[int, int]:
    st = os.stat(run_dir)
    return st.st_dev, st.st_ino


def owner_pid(run_dir: str | os.PathLike) -> int | None:
    """The pid holding a lock on ``run_dir`` according to ``/proc/locks``, or None."""
    try:
        st = os.stat(run_dir)
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 12345 08:01:1234567 0 EOF" (a "->" marks a waiting lock)
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue
        device_inode = fields[5].split(":")
        if len(device_inode) == 3 and device_inode[2].isdigit() and int(device_inode[2]) == st.st_ino:
            major, minor = int(device_inode[0], 16), int(device_inode[1], 16)
            if os.makedev(major, minor) == st.st_dev and fields[4].isdigit():
                return int(fields[4])
    return None


def acquire(run_dir: str | Path) -> None:
    """Own ``run_dir`` for the rest of this process (or until :func:`release_all`).

    Raises :class:`RunLockedError` naming the owner when another process holds it.
    """
    if fcntl is None:  # pragma: no cover
        return
    run_dir = Path(run_dir)
    key = _key(run_dir)
    if key in _HELD:
        return
    fd = os.open(run_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return  # a file system without flock (some network mounts): nothing to enforce with
        raise locked_error(run_dir) from None
    _HELD[key] = fd


def locked_error(run_dir: str | Path) -> RunLockedError:
    """The one-line refusal naming the process that owns ``run_dir`` (:func:`in_use`)."""
    return in_use(run_dir)


def release(run_dir: str | Path) -> None:
    """Give up ``run_dir`` if this process owns it."""
    try:
        fd = _HELD.pop(_key(Path(run_dir)), None)
    except OSError:
        return
    if fd is not None:
        os.close(fd)  # closing the descriptor drops its flock


def release_all() -> None:
    """Give up every run directory this process owns."""
    while _HELD:
        _, fd = _HELD.popitem()
        os.close(fd)


def is_locked(run_dir: str | Path) -> bool:
    """Whether another process owns ``run_dir`` right now (this process's own locks excluded)."""
    if fcntl is None:  # pragma: no cover
        return False
    run_dir = Path(run_dir)
    try:
        if _key(run_dir) in _HELD:
            return False
        fd = os.open(run_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
