"""dogo.data.download and dogo.data.safetar: checksummed downloads from a local HTTP server,
and tarballs crafted to escape their folder."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import re
import struct
import tarfile
import threading

import numpy as np
import pytest

from dogo.core.errors import DataError
from dogo.data import DATASETS, load_dataset
from dogo.data import download as dl
from dogo.data.base import locate
from dogo.data.safetar import safe_extract


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """(folder served, base URL) of an HTTP server on 127.0.0.1 for this test only."""
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "*")
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def idx_gz(array: np.ndarray) -> bytes:
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def tar_gz(entries: list[tarfile.TarInfo], payloads: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info in entries:
            data = (payloads or {}).get(info.name)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


# ---------------------------------------------------------------------------------------------
# downloads


def test_fetch_verifies_and_writes_atomically(server, tmp_path):
    served, base = server
    (served / "blob.bin").write_bytes(b"hello dogo" * 100)
    resource = dl.Resource("blob.bin", (base + "missing.bin", base + "blob.bin"), md5=md5(b"hello dogo" * 100))
    dest = tmp_path / "dest"
    path = dl.fetch(resource, dest)  # the first mirror 404s, the second works
    assert path.read_bytes() == b"hello dogo" * 100
    assert sorted(p.name for p in dest.iterdir()) == ["blob.bin"]  # no partial files left
    (served / "blob.bin").unlink()
    assert dl.fetch(resource, dest) == path  # already there and verified: no request made


def test_bad_checksum_removes_partial_file(server, tmp_path):
    served, base = server
    (served / "blob.bin").write_bytes(b"tampered")
    resource = dl.Resource("blob.bin", (base + "blob.bin",), sha256="0" * 64)
    dest = tmp_path / "dest"
    with pytest.raises(
        DataError,
        match=r"checksum mismatch \(sha256 [0-9a-f]{64}, expected "
        r"0{64}\); the partial download was removed",
    ) as error:
        dl.download("thing", dest, table={"thing": (resource,)})
    assert "\n" not in str(error.value) and str(error.value).startswith("thing: ")
    assert list(dest.iterdir()) == []


def test_unreachable_server_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    resource = dl.Resource("x.bin", ("http://127.0.0.1:9/x.bin",), md5="0" * 32)
    with pytest.raises(DataError, match=re.escape("could not download x.bin: http://127.0.0.1:9/x.bin")):
        dl.fetch(resource, tmp_path, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_load_dataset_downloads_mnist(server, tmp_path, monkeypatch):
    monkeypatch.delenv("DOGO_DATA", raising=False)
    if locate(DATASETS.get("mnist"), None) is not None:
        pytest.skip("a system copy of MNIST would be found before downloading")
    served, base = server
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte.gz": idx_gz(rng.integers(0, 256, (5, 28, 28))),
        "train-labels-idx1-ubyte.gz": idx_gz(rng.integers(0, 10, 5)),
    }
    for name, data in files.items():
        (served / name).write_bytes(data)
    table = tuple(dl.Resource(n, (base + n,), md5=md5(d)) for n, d in files.items())
    monkeypatch.setitem(dl.RESOURCES, "mnist", table)
    monkeypatch.setenv("DOGO_DATA", str(tmp_path / "data"))
    ds = load_dataset("mnist", download=True)
    assert ds.images.shape == (5, 1, 28, 28)
    assert (tmp_path / "data" / "mnist" / "train-labels-idx1-ubyte.gz").is_file()


def test_download_extracts_stl10_tarball(server, tmp_path, monkeypatch):
    served, base = server
    payloads = {"stl10_binary/unlabeled_X.bin": bytes(range(256)) * 108}  # one image
    tarball = tar_gz([member(n) for n in payloads], payloads)
    (served / "stl10_binary.tar.gz").write_bytes(tarball)
    resource = dl.Resource("stl10_binary.tar.gz", (base + "stl10_binary.tar.gz",), md5=md5(tarball), extract=True)
    monkeypatch.setitem(dl.RESOURCES, "stl10", (resource,))
    ds = load_dataset("stl10", root=tmp_path / "stl", split="unlabeled", download=True)
    assert ds.images.shape == (1, 3, 96, 96)
    assert (tmp_path / "stl" / "stl10_binary" / "unlabeled_X.bin").is_file()


def test_published_checksums_are_registered():
    assert dl.RESOURCES["cifar10"][0].md5 == "c58f30108f718f92721af3b95e74349a"
    assert dl.RESOURCES["cifar100"][0].md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    assert dl.RESOURCES["stl10"][0].md5 == "91f7769df0f17e558f3565bffb0c7dfb"
    assert {r.filename for r in dl.RESOURCES["fashion-mnist"]} == {
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    }
    for name, resources in dl.RESOURCES.items():
        assert DATASETS.get(name).download_key == name
        for resource in resources:
            algorithm, digest = resource.expected()
            assert len(digest) == {"md5": 32, "sha256": 64}[algorithm]


# ---------------------------------------------------------------------------------------------
# safe tar extraction


def test_safe_extract_good_archive(tmp_path):
    archive = tmp_path / "ok.tar.gz"
    archive.write_bytes(
        tar_gz(
            [
                member("d", tarfile.DIRTYPE),
                member("d/a.txt"),
                member("d/link", tarfile.SYMTYPE, "a.txt"),
                member("d/hard", tarfile.LNKTYPE, "d/a.txt"),
            ],
            {"d/a.txt": b"payload"},
        )
    )
    files = safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "d" / "a.txt").read_bytes() == b"payload"
    assert (tmp_path / "out" / "d" / "link").read_bytes() == b"payload"
    assert (tmp_path / "out" / "d" / "a.txt").resolve() in files


@pytest.mark.parametrize(
    "evil, reason",
    [
        (member("/tmp/evil.txt"), "absolute path"),
        (member("../evil.txt"), r"path contains '\.\.'"),
        (member("d/../../evil.txt"), r"path contains '\.\.'"),
        (member("up", tarfile.SYMTYPE, "../../etc"), "link to '../../etc' points outside"),
        (member("abs", tarfile.SYMTYPE, "/etc/passwd"), "link to absolute path"),
        (member("hard", tarfile.LNKTYPE, "../outside.txt"), "link to '../outside.txt' points outside"),
        (member("dev", tarfile.CHRTYPE), "device file or FIFO"),
        (member("fifo", tarfile.FIFOTYPE), "device file or FIFO"),
    ],
)
def test_safe_extract_refuses(tmp_path, evil, reason):
    archive = tmp_path / "evil.tar.gz"
    payloads = {"fine.txt": b"x", **({evil.name: b"y"} if evil.isfile() else {})}
    archive.write_bytes(tar_gz([member("fine.txt"), evil], payloads))
    out = tmp_path / "out"
    with pytest.raises(DataError, match=rf"evil.tar.gz: refused member {evil.name!r}: {reason}"):
        safe_extract(archive, out)
    assert list(out.iterdir()) == []  # nothing written, not even the harmless member


def test_safe_extract_replaces_a_file_only_when_it_is_the_archives_own(tmp_path):
    """A top-level file carries no marker: an earlier extraction (the same bytes) is replaced; anything else by
    that name (another file, a link) is left, in one line naming it, and nothing is extracted."""
    archive = tmp_path / "top.tar.gz"
    archive.write_bytes(tar_gz([member("a.bin"), member("b.bin")], {"a.bin": b"payload", "b.bin": b"more"}))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.bin").write_bytes(b"payload")  # extracted before
    safe_extract(archive, out)
    assert (out / "a.bin").read_bytes() == b"payload" and (out / "b.bin").read_bytes() == b"more"

    (out / "b.bin").write_bytes(b"the user's own")
    with pytest.raises(DataError) as error:
        safe_extract(archive, out)
    assert str(error.value).startswith(f"{out / 'b.bin'}: left as it is: a file of 14 bytes, which differs")
    assert "remove it yourself" in str(error.value) and "\n" not in str(error.value)
    assert (out / "b.bin").read_bytes() == b"the user's own"

    (out / "b.bin").write_bytes(b"more")
    (out / "a.bin").unlink()
    (out / "a.bin").symlink_to("b.bin")  # (a link out of the folder is refused before: "path leaves the destination")
    with pytest.raises(DataError, match=re.escape(f"{out / 'a.bin'}: left as it is: a symbolic link to b.bin")):
        safe_extract(archive, out)
    assert (out / "a.bin").is_symlink() and sorted(p.name for p in out.iterdir()) == ["a.bin", "b.bin"]


def test_safe_extract_damaged_archive(tmp_path):
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(tar_gz([member("a.bin")], {"a.bin": bytes(50000)})[:100])
    with pytest.raises(DataError, match=re.escape("cut.tar.gz: damaged tar archive")):
        safe_extract(archive, tmp_path / "out")
