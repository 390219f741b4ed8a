"""The names of files being written: :func:`temp_path` and :data:`TEMP_MARK`.

Every file dogo writes goes through :mod:`dogo.guards.outputs` (whole or not at all, a full disk
in one line, the umask deciding the mode; checkpoints too, through
:func:`dogo.runs.checkpoint.atomic_write_bytes`), which writes to :func:`temp_path` beside the
target and renames it into place. What a crash leaves behind carries :data:`TEMP_MARK` in its
name, and cleaners find it by that.
"""

from __future__ import annotations

import os
from pathlib import Path

#: in the name of a file being written (``.NAME.tmp-PID``): what a crash may leave behind, and whose
#: writer's pid it names
TEMP_MARK = ".tmp-"


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary file that becomes ``path``: ``.NAME.tmp-PID`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
