"""Refusing an allocation the machine cannot hold, before it is tried.

An option such as ``image_size: 100000`` asks a reader for ``N x 3 x S x S`` bytes, terabytes
here; numpy would either fail with an unhelpful MemoryError or, with overcommit, succeed and
let the kernel kill the process later. :func:`check_fits` compares the request with the memory
the system reports available and raises a one-line :class:`~dogo.core.errors.DataError` naming what
asked for it.
"""

from __future__ import annotations

import os

from dogo.core.errors import DataError


def available_bytes() -> int | None:
    """Memory available to a new allocation (``MemAvailable``, else free pages), or None if unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_fits(nbytes: int, what: str, fix: str, *, available: int | None = None, where: str | None = None) -> None:
    """Raise DataError when ``nbytes`` exceed the memory available now (the system's, or ``available`` bytes
    of ``where``, such as a GPU's)."""
    if available is None:
        available = available_bytes()
    if available is not None and nbytes > available:
        place = f" {where}" if where else ""
        raise DataError(
            f"{what} needs {_size(nbytes)} of memory, more than the {_size(available)}{place} available; {fix}"
        )
