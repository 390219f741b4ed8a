"""Writing an output (class 1): every file dogo writes goes through :class:`Outputs`.

What it guarantees, whatever writes the bytes (text, JSON, ``torch.save``, ``numpy.save``,
safetensors, TorchScript, ONNX, a matplotlib figure):

- **Whole or not at all.** The content is rendered in memory first (a library writer gets a
  ``BytesIO``: none of them ever sees the disk, so none can abort the process or raise its own
  error types on a full disk), written to a temporary file beside the target
  (``.NAME.tmp-PID``), fsynced and renamed over the target. Files written together (an export and
  its sidecar) are renamed together, after every one of them was written.
- **A full disk is one line.** Any failure (no space, a quota, the file size limit, a read-only
  folder) removes the temporary files, leaves the old output as it was and raises
  :class:`OutputError` naming the path, the bytes wanted, the reason and the space free there.
- **Never over what the user had.** An output the user named (``--out``) is refused when it would
  replace one of a dogo folder's own files (a run's ``config.yaml``, checkpoints, results; a
  store; a study's records; see :func:`dogo.guards.ownership.is_own_path`), an input the command
  reads (:mod:`dogo.guards.inputs`), a folder, or a symbolic link. dogo's writers of its own
  files (``own=True``) skip that check: they are the owner.
- **The umask decides the mode**, as for any file a program creates (``0o666 & ~umask``).

Outputs too large to render in memory are written in pieces, under the same guarantees:
:meth:`Outputs.stream` (a download: chunks into the temporary file, renamed with the others) and
:func:`allocate` (a memory-mapped array filled in place inside a work folder that is itself renamed
into place when whole, as an image store's ``images.npy``). Both reserve the bytes they know they
need up front (``posix_fallocate``), so that a full disk is refused at once in the same one line,
never halfway through, and never as a SIGBUS from a page of a memory map that finds no block.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from dogo.core.errors import DogoError
from dogo.core.fileio import TEMP_MARK, temp_path
from dogo.guards.messages import size, what_is

__all__ = [
    "NO_ROOM",
    "TEMP_MARK",
    "Appender",
    "OutputError",
    "Outputs",
    "Stream",
    "allocate",
    "check_target",
    "render",
    "temp_path",
    "write_all",
    "write_output",
]


Data = bytes | bytearray | memoryview | str | Callable[[BinaryIO], Any]
T = TypeVar("T")


class OutputError(DogoError):
    """An output that cannot be written, or may not be: one line naming the path."""

    def __init__(self, message: str, *, path: Path | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.path, self.reason = path, reason


def render(data: Data) -> bytes:
    """The bytes of ``data``: as given, UTF-8 text, or what a writer function writes to a ``BytesIO``."""
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    buffer = io.BytesIO()
    data(buffer)
    return buffer.getvalue()


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte of ``data`` is written."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # pragma: no cover - os.write raises rather than return 0 on a full disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def reserve(fd: int, wanted: int) -> None:
    """Allocate the first ``wanted`` bytes of the file open as ``fd`` now (where the system can), so that
    writing them later cannot find the disk full."""
    if wanted > 0 and hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, 0, wanted)


def _free_bytes(path: Path) -> int | None:
    for folder in (path.parent, *path.parent.parents):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


#: The system's ways of saying an output does not fit: a full disk, a quota, the process's file size limit.
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

_FIX = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some of your quota or write elsewhere",
    errno.EFBIG: "the file size limit of this process (ulimit -f) is below it; raise it or write a smaller file",
    errno.EROFS: "choose a writable place",
    errno.EACCES: "choose a place you may write to",
    errno.EPERM: "choose a place you may write to",
}


def failed(path: Path, wanted: int | None, exc: OSError, kept: bool) -> OutputError:
    """The one line for a write of ``wanted`` bytes to ``path`` that the system refused with ``exc``."""
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    free = _free_bytes(path)
    room = f"; {size(free)} free there" if free is not None and exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    amount = f" {size(wanted)}" if wanted is not None else ""
    fix = _FIX.get(exc.errno or 0, "check the folder and try again")
    state = "the previous file is kept" if kept else "nothing was written"
    return OutputError(f"{path}: cannot write{amount} ({reason}{room}); {state}; {fix}", path=path, reason=reason)


class Appender:
    """A file that grows a line at a time (a run's ``metrics.jsonl``): each :meth:`write` lands whole or not at all.

    Written unbuffered (``O_APPEND``), so that what :meth:`write` returned for is in the file. A full disk,
    a quota or a file-size limit while appending is one line (:class:`OutputError`) naming the path, the
    bytes wanted and the space free there, and the file is cut back to where it was: it never ends in half
    a line.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self.fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        except OSError as exc:
            raise failed(self.path, None, exc, kept=True) from None

    def write(self, text: str) -> None:
        data = text.encode()
        assert self.fd is not None, f"{self.path}: written after close"
        start = os.lseek(self.fd, 0, os.SEEK_END)
        try:
            write_all(self.fd, data)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, start)  # no half line left at the end
            raise failed(self.path, len(data), exc, kept=True) from None

    def cut(self, length: int) -> None:
        """Cut the file back to ``length`` bytes (a line written that must not stay: what it records failed)."""
        assert self.fd is not None, f"{self.path}: cut after close"
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, length)

    def tell(self) -> int:
        """The file's length."""
        return os.lseek(self.fd, 0, os.SEEK_END) if self.fd is not None else 0

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_target(path: str | os.PathLike, *, own: bool = False, folder: str | None = None) -> Path:
    """Refuse an output at ``path`` that would replace what the user had (see the module doc); returns it.

    ``folder``: the output is a dogo folder of this kind that replaces what is at ``path`` (``"store"``):
    refused where another kind of dogo folder is.
    Call it at the door, before the work, so that a refused output costs nothing; :meth:`Outputs.write`
    calls it again.
    """
    from dogo.guards.inputs import input_replaced_by
    from dogo.guards.markers import kind_of, owner_of

    path = Path(path)
    if own:
        return path
    if path.is_symlink():
        raise OutputError(
            f"{path}: not written: it is {what_is(path)}; dogo writes regular files and does not "
            "replace links; give the link's target or another name",
            path=path,
        )
    if not folder and path.is_dir():
        raise OutputError(f"{path}: not written: it is a folder; name a file", path=path)
    owner = owner_of(path.parent if folder else path)
    if owner is not None and (not folder or owner[0] != path):
        where, kind = owner
        raise OutputError(
            f"{path}: not written: it is one of the files of the dogo {kind} folder {where} "
            f"({what_is(path)}), which dogo keeps; choose another name or folder",
            path=path,
        )
    if folder and kind_of(path) not in (None, folder):
        raise OutputError(
            f"{path}: not written: it is a dogo {kind_of(path)} folder, not a {folder}; choose another place", path=path
        )
    replaced = input_replaced_by(path, folder=folder is not None)
    if replaced is not None:
        which = "it is" if os.path.realpath(path) == replaced else f"it would replace {replaced}, which is"
        raise OutputError(
            f"{path}: not written: {which} an input of this command; choose another name or folder", path=path
        )
    return path


class Outputs:
    """Files written together: each written to its temporary file by :meth:`write`, all renamed over their
    targets when the ``with`` block ends without an error, all discarded otherwise::

        with Outputs() as out:
            out.write("model.onnx", lambda f: torch.onnx.export(model, x, f))
            out.write("model.onnx.json", json.dumps(sidecar))
    """

    def __init__(self, *, own: bool = False) -> None:
        self.own = own
        self.pending: list[tuple[Path, Path, Callable[[Path], None] | None]] = []

    def _open(
        self, path: Path, wanted: int | None, parents: bool, before_replace: Callable[[Path], None] | None = None
    ) -> int:
        """Create ``path``'s temporary file (``parents``: its missing folders first) and note it as pending."""
        tmp = temp_path(path)
        try:
            if parents:
                path.parent.mkdir(parents=True, exist_ok=True)
            tmp.unlink(missing_ok=True)  # left by an earlier process that had this pid
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            raise failed(path, wanted, exc, os.path.lexists(path)) from None
        self.pending.append((tmp, path, before_replace))
        return fd

    def write(
        self,
        path: str | os.PathLike,
        data: Data,
        *,
        before_replace: Callable[[Path], None] | None = None,
        writer: Callable[[int, bytes], None] | None = None,
        parents: bool = False,
    ) -> Path:
        """Render ``data`` and write it to ``path``'s temporary file; ``before_replace(path)`` runs just
        before the rename (a checkpoint keeps its predecessor there). ``parents``: create missing folders."""
        path = check_target(path, own=self.own)
        payload = render(data)
        fd = self._open(path, len(payload), parents, before_replace)
        try:
            try:
                (writer or write_all)(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self.discard()
            raise failed(path, len(payload), exc, os.path.lexists(path)) from None
        return path

    @contextlib.contextmanager
    def stream(self, path: str | os.PathLike, *, wanted: int | None = None, parents: bool = False) -> Iterator[Stream]:
        """Write ``path`` in pieces (``Stream.write``) to its temporary file, renamed with the others at the end::

            with Outputs() as out, out.stream(target, wanted=length) as f:
                for chunk in chunks:
                    f.write(chunk)

        ``wanted``: the bytes it will have, when known (a download's ``Content-Length``): reserved up front,
        so that a full disk is refused before the first piece. A failure to write (full disk, quota) is the
        one line of :func:`failed`; any error (one of the caller's too: a network that fails, a checksum
        that does not match) removes the temporary files and leaves the old output as it was.
        """
        path = check_target(path, own=self.own)
        fd = self._open(path, wanted, parents)
        stream = Stream(path, fd, wanted)
        try:
            try:
                if wanted:
                    stream.system(reserve, wanted)
                yield stream
                if wanted:
                    stream.system(os.ftruncate, stream.written)  # fewer bytes came than reserved: no zeros after them
                stream.system(os.fsync)
            finally:
                os.close(fd)
        except BaseException:
            self.discard()
            raise

    def commit(self) -> list[Path]:
        """Rename every temporary file over its target (then fsync the folders); returns the targets."""
        done: list[Path] = []
        try:
            for tmp, path, hook in self.pending:
                if hook is not None:
                    hook(path)
                os.replace(tmp, path)
                done.append(path)
        except OSError as exc:
            self.pending = [p for p in self.pending if p[1] not in done]
            self.discard()
            raise failed(path, None, exc, True) from None
        for folder in {path.parent for path in done}:
            _fsync_dir(folder)
        self.pending = []
        return done

    def discard(self) -> None:
        """Remove the temporary files not yet renamed."""
        for tmp, _, _ in self.pending:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        self.pending = []

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


class Stream:
    """The temporary file of an output written in pieces (:meth:`Outputs.stream`)."""

    def __init__(self, path: Path, fd: int, wanted: int | None) -> None:
        self.path, self.fd, self.wanted, self.written = path, fd, wanted, 0

    def system(self, action: Callable[..., Any], *args: Any, more: int = 0) -> None:
        """``action(fd, *args)``; the system refusing it (``more`` bytes on top of those written) is the one
        line naming the target and the bytes wanted: all of them when known, else what it came to so far."""
        try:
            action(self.fd, *args)
        except OSError as exc:
            wanted = self.wanted if self.wanted is not None else self.written + more
            raise failed(self.path, wanted, exc, os.path.lexists(self.path)) from None

    def write(self, data: bytes) -> None:
        """Append ``data``, whole."""
        self.system(write_all, data, more=len(data))
        self.written += len(data)


def allocate(path: str | os.PathLike, make: Callable[[Path], T], *, wanted: int) -> T:
    """``make(path)`` creates a file at its full length (``numpy.lib.format.open_memmap``), then every block of
    it is reserved; returns what ``make`` returned.

    For an output filled in place through a memory map, inside a work folder of dogo's that is renamed into
    place when whole (it is that folder which stands in for the temporary file). A memory map cannot report a
    full disk: a page that finds no free block ends the process (SIGBUS). Reserved here, a full disk or a quota
    is instead the one line of :func:`failed`, with ``wanted`` bytes, and the file is removed.
    """
    path = Path(path)
    try:
        made = make(path)
        fd = os.open(path, os.O_RDWR)
        try:
            reserve(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        raise failed(path, wanted, exc, kept=False) from None
    return made


def write_output(
    path: str | os.PathLike,
    data: Data,
    *,
    own: bool = False,
    before_replace: Callable[[Path], None] | None = None,
    writer: Callable[[int, bytes], None] | None = None,
    parents: bool = False,
) -> Path:
    """Write one file through :class:`Outputs`; ``own``: dogo writing one of its own folder's files."""
    with Outputs(own=own) as out:
        out.write(path, data, before_replace=before_replace, writer=writer, parents=parents)
    return Path(path)
