"""Loading the CIFAR python-version pickles without running code from the file.

A pickle can name any importable callable (``os.system``) and call it while loading. CIFAR
batches were written by Python 2's cPickle (protocol 2) and hold only dicts, lists, byte strings,
ints and numpy arrays; the arrays need exactly three globals (``_reconstruct``, ``ndarray``,
``dtype``). :class:`RestrictedUnpickler` grants those and refuses every other global, so a
malicious file fails with a :class:`~dogo.errors.DataError` instead of running.

Python 2 ``str`` objects come back as ``bytes`` (``encoding="bytes"``), hence the ``b"data"``
keys.
"""

from __future__ import annotations

import pickle
import struct
from typing import IO, Any

import numpy as np

from dogo.data.base import one_line
from dogo.errors import DataError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy 1.x
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy 2.x
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside :data:`ALLOWED_GLOBALS`."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` grants only numpy's array-reconstruction names."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None


def safe_load(stream: IO[bytes], source: str) -> Any:
    """Unpickle ``stream`` with :class:`RestrictedUnpickler` (``encoding="bytes"``).

    Raises DataError naming ``source`` when the pickle asks for any other global or is damaged.
    """
    try:
        return RestrictedUnpickler(stream, encoding="bytes").load()
    except RefusedGlobal as error:
        raise DataError(
            f"{source}: refused to unpickle global {error} (a CIFAR pickle holds only dicts, "
            "lists and numpy arrays; this file is not one)"
        ) from None
    except (
        pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
        AttributeError, struct.error, OverflowError, MemoryError,
    ) as error:
        raise DataError(f"{source}: damaged pickle ({one_line(error)})") from None
