"""Safe, restartable archive extraction.

Archives from the internet are untrusted: an entry named ``../x`` or ``/etc/x``, or a
symbolic link followed by a file written "through" it, could write outside the data folder.
Every entry is therefore checked before anything is written, links and device files are
refused, and the whole archive is rejected with an ``InputError`` naming the entry.

Extraction is restartable: it goes into a temporary sibling folder that is renamed onto
the target, and a completion marker ``<target>.complete.json`` is written last. A target
without a valid marker is treated as an interrupted extraction and redone. The marker
lists every extracted file with its size (cheap to re-check with ``stat``) plus the
archive's checksum; it does not hash every extracted file, because the archive's checksum
already vouches for their content and re-hashing 27 GB of NIfTI on every rerun would be
slow.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from genesis.atomic import write_json
from genesis.errors import InputError

log = logging.getLogger(__name__)

MARKER_SUFFIX = ".complete.json"


def marker_path(target: Path) -> Path:
    """Where the completion marker of ``target`` lives: a sibling, never inside it, so that
    a symlinked local copy of the user's data is never written to."""
    return target.with_name(target.name + MARKER_SUFFIX)


def is_junk(name: str) -> bool:
    """macOS metadata that tar/zip tools on a Mac add (``._x``, ``__MACOSX/``).

    MSD tarballs contain ``._*.nii.gz`` files that are not images; they are skipped.
    """
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return "__MACOSX" in parts or (bool(parts) and parts[-1].startswith("._"))


def extract_archive(archive: Path, destination: Path) -> None:
    """Extract a tar (any compression) or zip archive into the folder ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, destination)
    elif tarfile.is_tarfile(archive):
        _extract_tar(archive, destination)
    else:
        raise InputError(archive, "is neither a tar nor a zip archive (corrupt download?)")


def _checked_target(archive: Path, name: str, destination: Path) -> Path:
    """The resolved path of entry ``name``; refuses absolute names and ``..`` escapes."""
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        raise InputError(archive, f"refusing entry {name!r}: absolute path")
    root = destination.resolve()
    target = (root / name).resolve()
    if target != root and not target.is_relative_to(root):
        raise InputError(
            archive, f"refusing entry {name!r}: it would be written outside the extraction folder"
        )
    return target


def _extract_zip(archive: Path, destination: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as bundle:
            infos = bundle.infolist()
            # Check every entry before writing anything.
            for info in infos:
                _checked_target(archive, info.filename, destination)
                # Unix zip tools keep st_mode in the high 16 bits; others leave the type 0.
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind == stat.S_IFLNK:
                    raise InputError(archive, f"refusing entry {info.filename!r}: symbolic link")
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise InputError(
                        archive, f"refusing entry {info.filename!r}: not a regular file or folder"
                    )
            for info in infos:
                if is_junk(info.filename):
                    continue
                target = _checked_target(archive, info.filename, destination)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(info) as source, target.open("wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise InputError(archive, f"corrupt zip archive ({error})") from None


def _extract_tar(archive: Path, destination: Path) -> None:
    def check(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        _checked_target(archive, member.name, destination)
        if member.issym() or member.islnk():
            raise InputError(
                archive, f"refusing entry {member.name!r}: link to {member.linkname!r}"
            )
        if not (member.isfile() or member.isdir()):
            raise InputError(
                archive, f"refusing entry {member.name!r}: not a regular file or folder"
            )
        if is_junk(member.name):
            return None
        # The stdlib "data" filter on top: clears setuid bits and odd permissions.
        return tarfile.data_filter(member, path)

    try:
        with tarfile.open(archive) as bundle:
            bundle.extractall(destination, filter=check)
    except (tarfile.TarError, zlib.error, EOFError) as error:
        raise InputError(archive, f"corrupt or unsafe tar archive ({error})") from None


def file_listing(root: Path) -> dict[str, int]:
    """Relative path -> size of every file under ``root`` (a folder or a single file)."""
    if root.is_file():
        return {root.name: root.stat().st_size}
    listing = {}
    for folder, _, names in os.walk(root, followlinks=True):
        for name in names:
            path = Path(folder, name)
            listing[path.relative_to(root).as_posix()] = path.stat().st_size
    return dict(sorted(listing.items()))


def write_marker(target: Path, info: dict[str, Any]) -> None:
    """Record that ``target`` is complete; called last, after the target is in place."""
    write_json(marker_path(target), {**info, "files": file_listing(target)})


def is_complete(target: Path) -> bool:
    """True if ``target`` has a valid marker and every file it lists has the listed size."""
    marker = marker_path(target)
    if not (target.exists() and marker.is_file()):
        return False
    try:
        files = json.loads(marker.read_text(encoding="utf-8"))["files"]
        return all((target / rel).stat().st_size == size for rel, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def remove_target(target: Path) -> None:
    """Remove an incomplete ``target`` (a symlink is unlinked, never followed)."""
    marker_path(target).unlink(missing_ok=True)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    for stale in target.parent.glob(f".{target.name}.extracting-*"):
        shutil.rmtree(stale, ignore_errors=True)


def install_archive(
    archive: Path, target: Path, member: str | None, is_dir: bool, info: dict[str, Any]
) -> None:
    """Extract ``archive`` so that its ``member`` ends up at ``target``.

    Folders get a marker (see module docstring); a single file is renamed into place,
    which is atomic, so its existence means it is complete.
    """
    remove_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.extracting-", dir=target.parent))
    try:
        extract_archive(archive, work)
        picked = _pick(archive, work, member, is_dir)
        os.replace(picked, target)
        if is_dir:
            write_marker(target, info)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _pick(archive: Path, work: Path, member: str | None, is_dir: bool) -> Path:
    """The extracted path that becomes the target; tolerant of mirrors with other layouts."""
    if member is None:
        return work
    candidate = work / member
    if is_dir:
        if candidate.is_dir():
            return candidate
        log.info("%s has no folder %s; using its whole content", archive.name, member)
        return work
    if candidate.is_file():
        return candidate
    matches = sorted(p for p in work.rglob(PurePosixPath(member).name) if p.is_file())
    if len(matches) == 1:
        return matches[0]
    raise InputError(
        archive,
        f"archive holds {len(matches)} files named "
        f"{PurePosixPath(member).name}, expected exactly one",
    )
