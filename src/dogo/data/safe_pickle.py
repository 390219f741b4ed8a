"""Loading the CIFAR python-version pickles without running code from the file.

A pickle can name any importable callable (``os.system``) and call it while loading. CIFAR
batches were written by Python 2's cPickle (protocol 2) and hold only dicts, lists, byte strings,
ints and numpy arrays; the arrays need exactly three globals (``_reconstruct``, ``ndarray``,
``dtype``). A batch re-saved by Python 3 at protocol 2 (``pickle.dump(batch, f, protocol=2)``)
has no opcode for bytes and writes each one as ``_codecs.encode(text, "latin1")``, the one
further global PyTorch's weights-only loader also allows; here it is granted only in that form
(a ``str`` and the latin-1 codec, so no other codec can be reached through it).
:class:`RestrictedUnpickler` grants these and refuses every other global, so a malicious file
fails with a :class:`~dogo.core.errors.DataError` instead of running.

Python 2 ``str`` objects come back as ``bytes`` (``encoding="bytes"``), hence the ``b"data"``
keys.
"""

from __future__ import annotations

import pickle
import struct
from typing import IO, Any

import numpy as np

from dogo.core.errors import DataError
from dogo.data.base import one_line
from dogo.guards.messages import REPLACE_FILE

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]  # the same function, older path


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside :data:`ALLOWED_GLOBALS`, or called one outside its allowed form."""


LATIN1 = ("latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1")


def latin1_bytes(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as Python 3 pickles bytes at protocols 0-2: ``text`` to latin-1 bytes.

    Any other codec or argument type is refused, so a pickle cannot use this to run a codec.
    """
    if not isinstance(text, str) or not isinstance(encoding, str) or encoding.lower() not in LATIN1:
        raise RefusedGlobal(
            f"_codecs.encode as encode({type(text).__name__}, {encoding!r}); only encode(str, 'latin1') is allowed"
        )
    return text.encode("latin1")


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): latin1_bytes,  # bytes written by Python 3 at protocol <= 2
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy 1.x
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy 2.x
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` grants only numpy's array-reconstruction names and latin-1 bytes."""

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
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        struct.error,
        OverflowError,
        MemoryError,
    ) as error:
        raise DataError(f"{source}: damaged pickle ({one_line(error)}); {REPLACE_FILE}") from None
