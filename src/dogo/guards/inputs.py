"""What the running command reads, so that no output is written over it (part of class 1).

Readers register what they open (:func:`reading`): a config file, a checkpoint, a dataset's folder,
the image files of ``dogo embed --data``. :func:`dogo.guards.outputs.check_target` then refuses an
output that would replace one of them: a file that is an input, an existing file inside an input
folder, or a folder (an image store) that is, or holds, an input. The CLI clears the list when a
command ends.
"""

from __future__ import annotations

import os

__all__ = ["clear", "input_replaced_by", "reading"]

_READING: dict[str, bool] = {}  # real path -> is a folder


def _real(path: str | os.PathLike) -> str:
    return os.path.realpath(os.path.abspath(path))


def reading(*paths: str | os.PathLike | None) -> None:
    """Note that this command reads ``paths`` (files or folders; None is skipped)."""
    for path in paths:
        if path is not None:
            _READING[_real(path)] = os.path.isdir(path)


def clear() -> None:
    _READING.clear()


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def input_replaced_by(target: str | os.PathLike, *, folder: bool = False) -> str | None:
    """The input that writing ``target`` (a file, or with ``folder`` a folder that replaces what is there)
    would replace, or None."""
    real = _real(target)
    for path, is_folder in _READING.items():
        if folder and (_inside(path, real) or real == path):
            return path
        if not folder and (real == path or (is_folder and _inside(real, path) and os.path.lexists(target))):
            return path
    return None
