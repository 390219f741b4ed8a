"""Extracting a downloaded tarball without letting it write outside its folder.

Every member is checked before anything is written: absolute paths, ``..`` components, symbolic
or hard links that point outside the destination, and device files or FIFOs are refused with a
:class:`~dogo.core.errors.DataError` naming the member. Extraction then also runs under tarfile's
``"data"`` filter (Python >= 3.11.4) as a second line of defence, into a temporary folder that
is renamed into place only when every member came out. A folder of the archive replaces a folder of
the same name only when dogo extracted that one too (its ``.dogo`` marker says ``download``): a
folder the user made, or one an older dogo left unmarked, is left as it is and the extraction is
refused in one line naming it. A file or a link, which carries no marker, is replaced only when it is
what the archive holds anyway (the same bytes, or a link to the same place); anything else there is
refused the same way.
"""

from __future__ import annotations

import filecmp
import gzip
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from dogo.core.errors import DataError
from dogo.data.base import one_line
from dogo.guards.markers import MARKER, marker
from dogo.guards.messages import REPLACE_FILE, what_is
from dogo.guards.outputs import NO_ROOM, failed
from dogo.guards.ownership import mark, remove_owned


def _inside(path: Path, dest: Path) -> bool:
    return path == dest or dest in path.parents


def check_member(member: tarfile.TarInfo, dest: Path) -> str | None:
    """Why ``member`` may not be extracted into the resolved folder ``dest``, or None."""
    name = member.name
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        return "absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "path contains '..'"
    target = (dest / name).resolve()
    if not _inside(target, dest):
        return "path leaves the destination"
    if member.issym() or member.islnk():
        link = member.linkname
        if link.startswith(("/", "\\")) or PureWindowsPath(link).drive:
            return f"link to absolute path {link!r}"
        # a symlink is relative to its own folder, a hard link to the archive's root
        base = (dest / name).parent if member.issym() else dest
        if not _inside(Path(os.path.normpath(base / link)).resolve(), dest):
            return f"link to {link!r} points outside the destination"
    elif member.isdev():
        return "device file or FIFO"
    elif not (member.isfile() or member.isdir()):
        return "special member type"
    return None


def _same(entry: Path, target: Path) -> bool:
    """Whether ``target`` (a file or a link) is what the archive's ``entry`` is: a link to the same place, or a
    regular file of the same bytes (an earlier extraction of this archive, which nothing is lost by replacing)."""
    if entry.is_symlink() or target.is_symlink():
        return entry.is_symlink() and target.is_symlink() and os.readlink(entry) == os.readlink(target)
    return entry.is_file() and target.is_file() and filecmp.cmp(entry, target, shallow=False)


def safe_extract(tar_path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Extract ``tar_path`` (any compression tarfile reads) into ``dest``; return the file paths.

    Nothing is written to ``dest`` unless every member passed: members are checked first, then
    extracted into a temporary folder inside ``dest`` and renamed into place only when the whole
    archive came out (a refused member, a damaged archive or a full disk half-way leaves
    ``dest`` as it was). A top-level entry of the archive replaces one of the same name, a folder only
    when dogo extracted it (:mod:`dogo.guards.ownership`), a file or a link only when it is the archive's
    own (the same bytes, the same link); each extracted folder is marked so.
    DataError names the archive, the member (or the folder left) and the reason.
    """
    tar_path = Path(tar_path)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    members: list[tarfile.TarInfo] = []
    try:
        try:
            with tarfile.open(tar_path) as tar:
                members = tar.getmembers()
                for member in members:
                    reason = check_member(member, dest)
                    if reason is not None:
                        raise DataError(f"{tar_path}: refused member {member.name!r}: {reason}")
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, members=members, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    tar.extractall(staging, members=members)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise DataError(f"{tar_path}: damaged tar archive ({one_line(error)}); {REPLACE_FILE}") from None
        except OSError as error:
            if error.errno in NO_ROOM:  # the one line of every output, with the bytes
                wanted = sum(m.size for m in members if m.isfile())
                raise DataError(f"{tar_path}: not extracted: {failed(dest, wanted, error, kept=False)}") from None
            raise DataError(
                f"{tar_path}: cannot extract into {dest} ({error.strerror or one_line(error)}); nothing was extracted"
            ) from None
        entries = sorted(staging.iterdir())
        for entry in entries:  # everything it would replace is checked before anything is replaced
            target = dest / entry.name
            if target.is_dir() and not target.is_symlink() and (marker(target) or {}).get("kind") != "download":
                raise DataError(
                    f"{target}: left as it is: {what_is(target)}, which dogo did not extract (no "
                    f"{MARKER} marker); {tar_path} was not extracted over it; move it away (or remove "
                    "it yourself if it is not needed) and try again"
                )
            if (
                os.path.lexists(target)
                and not (target.is_dir() and not target.is_symlink())
                and not _same(entry, target)
            ):
                # a file or a link carries no marker: replaced only when it is what the archive holds anyway
                raise DataError(
                    f"{target}: left as it is: {what_is(target)}, which differs from {entry.name} in {tar_path} "
                    f"(dogo did not extract it); {tar_path} was not extracted over it; move it away (or remove it "
                    "yourself if it is not needed) and try again"
                )
        for entry in entries:
            target = dest / entry.name
            if entry.is_dir() and not entry.is_symlink():
                mark(entry, "download")  # what a later extraction may replace
            if target.is_dir() and not target.is_symlink():
                remove_owned(target, why=f"replaced by {entry.name} of {tar_path.name}")
            elif os.path.lexists(target):
                target.unlink()  # the same file or link as the archive's (checked above)
            os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [dest / m.name for m in members if m.isfile()]
