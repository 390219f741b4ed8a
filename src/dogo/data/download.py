"""Downloading the datasets that have a public URL, verified against published checksums.

:data:`RESOURCES` maps a dataset to its files: URLs (mirrors tried in order), the published
MD5 (or SHA-256), and whether the file is a tarball to extract. A file is streamed with urllib
into its temporary file next to its target (:meth:`dogo.guards.outputs.Outputs.stream`, the
writer of every output: the size the server announces reserved up front, a full disk one line
naming the file and the bytes), hashed on the way, and renamed into place only when the
checksum matches; otherwise the partial file is removed and a DataError says what was
expected. Tarballs marked ``extract`` are unpacked with :func:`~dogo.data.safetar.safe_extract`.

The table is a plain dict so that tests (and mirrors) can replace entries; :func:`download`
also takes a ``table`` argument.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dogo.core.errors import ConfigError, DataError
from dogo.data.base import one_line
from dogo.data.safetar import safe_extract
from dogo.guards.outputs import Outputs

log = logging.getLogger(__name__)

CHUNK = 1 << 20


@dataclass(frozen=True)
class Resource:
    """One downloadable file: its name on disk, mirror URLs and published checksum."""

    filename: str
    urls: tuple[str, ...]
    md5: str | None = None
    sha256: str | None = None
    extract: bool = False  # a tarball to unpack (safely) next to itself after verification

    def expected(self) -> tuple[str, str]:
        """``(algorithm, hex digest)`` to verify against."""
        if self.sha256:
            return "sha256", self.sha256.lower()
        if self.md5:
            return "md5", self.md5.lower()
        raise ValueError(f"resource {self.filename} has no checksum")


def _idx(base_urls: Sequence[str], md5s: Mapping[str, str]) -> tuple[Resource, ...]:
    return tuple(Resource(name, tuple(base + name for base in base_urls), md5=md5) for name, md5 in md5s.items())


# Published checksums (torchvision's tables for the IDX files; the dataset pages for the rest).
RESOURCES: dict[str, tuple[Resource, ...]] = {
    "fashion-mnist": _idx(
        ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "mnist": _idx(
        ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "cifar10": (
        Resource(
            "cifar-10-python.tar.gz",
            ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            md5="c58f30108f718f92721af3b95e74349a",
        ),
    ),
    "cifar100": (
        Resource(
            "cifar-100-python.tar.gz",
            ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
            md5="eb9058c3a382ffc7106e4002c42a8d85",
        ),
    ),
    "stl10": (
        Resource(
            "stl10_binary.tar.gz",
            ("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",),
            md5="91f7769df0f17e558f3565bffb0c7dfb",
            extract=True,
        ),
    ),
}


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_from(url: str, target: Path, resource: Resource, timeout: float) -> None:
    """Stream ``url`` into a temp file beside ``target``; rename it into place if it verifies.

    A failure to write (full disk) is :class:`~dogo.guards.outputs.OutputError`, not an ``OSError``: the
    caller tries the next mirror on a network error only."""
    algorithm, expected = resource.expected()
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=timeout) as response, Outputs() as out:
        length = response.headers.get("Content-Length", "")
        with out.stream(target, wanted=int(length) if length.isdigit() else None) as stream:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                digest.update(chunk)
                stream.write(chunk)
        got = digest.hexdigest()
        if got != expected:  # raised inside the block: the temporary file is removed, the old file kept
            raise DataError(
                f"{url}: checksum mismatch ({algorithm} {got}, expected {expected}); the partial download was removed"
            )


def fetch(resource: Resource, dest: Path, timeout: float = 60.0) -> Path:
    """Download ``resource`` into folder ``dest`` (kept if already there and verified).

    Mirrors are tried in order; DataError when none gives a file with the right checksum.
    """
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / resource.filename
    algorithm, expected = resource.expected()
    if target.is_file() and file_digest(target, algorithm) == expected:
        return target
    failures = []
    for url in resource.urls:
        log.info("downloading %s -> %s", url, target)
        try:
            _fetch_from(url, target, resource, timeout)
            return target
        except DataError as error:
            failures.append(str(error))
        except OSError as error:  # URLError, HTTPError, timeouts, refused connections
            failures.append(f"{url}: {one_line(error)}")
    raise DataError(f"could not download {resource.filename}: " + "; ".join(failures))


def download(
    name: str,
    dest: str | os.PathLike[str],
    table: Mapping[str, Sequence[Resource]] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch (and, for tarballs marked ``extract``, safely unpack) dataset ``name`` into ``dest``.

    Returns ``dest``. ``table`` defaults to :data:`RESOURCES`.
    """
    table = RESOURCES if table is None else table
    if name not in table:
        raise ConfigError(f"{name}: no public download; known: {', '.join(sorted(table))}")
    dest = Path(dest).expanduser()
    for resource in table[name]:
        try:
            path = fetch(resource, dest, timeout)
        except DataError as error:
            raise DataError(f"{name}: {error}") from None
        if resource.extract:
            safe_extract(path, dest)
    return dest
