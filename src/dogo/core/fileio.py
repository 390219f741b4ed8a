"""Writing files so that readers never see half of one.

:func:`atomic_path` yields a temporary path beside the target; when the block succeeds the
temporary file replaces the target in one ``os.replace``. Checkpoints use their own writer
(:func:`dogo.runs.checkpoint.atomic_write_bytes`), which adds fsync and keeps the previous file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    Readers never see a half-written file: a crash leaves the old file (or none) and at most a
    stray ``.tmp`` file, which is removed when the writer raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
