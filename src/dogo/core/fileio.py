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
from collections.abc import Iterator
from pathlib import Path

#: in the name of a file being written (``.NAME.tmp-PID``): what a crash may leave behind, and whose
#: writer's pid it names
TEMP_MARK = ".tmp-"


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary file that becomes ``path``: ``.NAME.tmp-PID`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    Readers never see a half-written file: a crash leaves the old file (or none) and at most a
    stray ``.tmp`` file, which is removed when the writer raises. New code writes through
    :mod:`dogo.guards.outputs`, which also turns a full disk into one line.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)  # created with mode 0o666 less the umask, as every file dogo writes
    tmp.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
