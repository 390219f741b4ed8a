"""Writing files so that readers never see half of one.

:func:`atomic_path` yields a temporary path beside the target; when the block succeeds the
temporary file replaces the target in one ``os.replace``. Checkpoints use their own writer
(:func:`dogo.runs.checkpoint.atomic_write_bytes`), which adds fsync and keeps the previous file.

Files are created as ``open()`` would create them: mode 0666 less the process's umask (0644 under
the usual umask 022), not the 0600 of :func:`tempfile.mkstemp`, so an export, a result or a
``config.yaml`` can be read by whoever may read the folder it is in.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    Readers never see a half-written file: a crash leaves the old file (or none) and at most a
    stray ``.tmp`` file, which is removed when the writer raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_file(path)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _new_file(path: Path) -> Path:
    """A new empty file beside ``path`` (``.NAME.XXXXXXXX.tmp``), its mode 0666 less the umask.

    ``O_EXCL`` with a random name, as :func:`tempfile.mkstemp` does, but with the mode a plain
    ``open()`` gives; the kernel applies the umask, so no umask is read or changed here.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name}")
