"""Safe extraction: escaping entries, links and junk; completion markers."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import pytest
from fixture_archives import tar_bytes

from genesis.data.archive import (
    extract_archive,
    install_archive,
    is_complete,
    marker_path,
    remove_target,
)
from genesis.errors import InputError


def write_zip(path: Path, entries: dict[str, bytes], modes: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            if modes and name in modes:
                info.external_attr = modes[name] << 16
            bundle.writestr(info, data)
    return path


def write_tar(
    path: Path,
    entries: dict[str, bytes],
    links: dict[str, tuple[bytes, str]] | None = None,
    mode: str = "w",
) -> Path:
    path.write_bytes(tar_bytes(entries, links, mode))
    return path


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_tar_and_zip_extract(tmp_path: Path, mode: str) -> None:
    entries = {"top/a.txt": b"a", "top/sub/b.txt": b"bb"}
    extract_archive(write_tar(tmp_path / "x.tar", entries, mode=mode), tmp_path / "t")
    extract_archive(write_zip(tmp_path / "x.zip", entries), tmp_path / "z")
    for root in (tmp_path / "t", tmp_path / "z"):
        assert (root / "top" / "sub" / "b.txt").read_bytes() == b"bb"


@pytest.mark.parametrize(
    "name", ["../escape.txt", "/abs.txt", "a/../../escape.txt", "C:/windows.txt"]
)
def test_escaping_names_are_refused_before_writing(tmp_path: Path, name: str) -> None:
    entries = {"first.txt": b"ok", name: b"evil"}
    for archive in (write_zip(tmp_path / "x.zip", entries), write_tar(tmp_path / "x.tar", entries)):
        destination = tmp_path / f"out_{archive.suffix[1:]}"
        with pytest.raises(InputError, match=f"refusing entry {name!r}"):
            extract_archive(archive, destination)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "abs.txt").exists()
    assert not (tmp_path / "out_zip" / "first.txt").exists()  # zip: checked before writing


def test_links_and_devices_are_refused(tmp_path: Path) -> None:
    cases = [
        write_tar(tmp_path / "sym.tar", {}, {"d/link": (tarfile.SYMTYPE, "/etc/passwd")}),
        write_tar(tmp_path / "inner.tar", {"a": b"a"}, {"d/link": (tarfile.SYMTYPE, "../a")}),
        write_tar(tmp_path / "hard.tar", {"a": b"a"}, {"d/link": (tarfile.LNKTYPE, "a")}),
        write_zip(tmp_path / "sym.zip", {"d/link": b"/etc/passwd"}, {"d/link": 0o120777}),
    ]
    for archive in cases:
        with pytest.raises(InputError, match=r"refusing entry 'd/link'.*link"):
            extract_archive(archive, tmp_path / f"out_{archive.stem}_{archive.suffix[1:]}")
    fifo = write_tar(tmp_path / "fifo.tar", {}, {"d/pipe": (tarfile.FIFOTYPE, "")})
    with pytest.raises(InputError, match="not a regular file"):
        extract_archive(fifo, tmp_path / "out_fifo")
    assert not (tmp_path / "out_sym_zip" / "d").exists()


def test_macos_junk_is_skipped(tmp_path: Path) -> None:
    entries = {
        "T/imagesTr/x.nii.gz": b"x",
        "T/imagesTr/._x.nii.gz": b"apple",
        "__MACOSX/T/._x": b"apple",
    }
    extract_archive(write_zip(tmp_path / "j.zip", entries), tmp_path / "z")
    extract_archive(write_tar(tmp_path / "j.tar", entries), tmp_path / "t")
    for root in (tmp_path / "z", tmp_path / "t"):
        assert sorted(p.name for p in root.rglob("*") if p.is_file()) == ["x.nii.gz"]


def test_not_an_archive(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"definitely not an archive" * 10)
    with pytest.raises(InputError, match="neither a tar nor a zip"):
        extract_archive(bad, tmp_path / "out")
    truncated = tmp_path / "cut.tar.gz"
    whole = write_tar(tmp_path / "whole.tar.gz", {"a": bytes(range(256)) * 400}, mode="w:gz")
    truncated.write_bytes(whole.read_bytes()[:-200])
    with pytest.raises(InputError, match=r"cut\.tar\.gz"):
        extract_archive(truncated, tmp_path / "out2")


def test_install_marker_and_incomplete_detection(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "subset1.zip", {"subset1/a.mhd": b"h", "subset1/a.raw": b"rr"})
    target = tmp_path / "data" / "subset1"
    assert not is_complete(target)
    install_archive(archive, target, "subset1", True, {"archive": "subset1.zip"})
    assert is_complete(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["subset1", "subset1.complete.json"]
    (target / "a.raw").write_bytes(b"r")  # a file with the wrong size
    assert not is_complete(target)
    remove_target(target)
    assert not target.exists() and not marker_path(target).exists()


def test_install_failure_leaves_no_target(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "s.zip", {"s/a": b"a", "../evil": b"e"})
    target = tmp_path / "data" / "s"
    with pytest.raises(InputError):
        install_archive(archive, target, "s", True, {})
    assert list((tmp_path / "data").iterdir()) == []
