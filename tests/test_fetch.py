"""genesis fetch against a local HTTP server: never the internet."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fixture_archives import tar_bytes

from genesis.cli import main
from genesis.data.archive import marker_path
from genesis.data.fetch import FetchSettings, fetch_dataset
from genesis.errors import ConfigError, InputError


@dataclass
class Server:
    """What the fixture server serves and what it was asked."""

    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    truncate_once: set[str] = field(default_factory=set)
    ranges: bool = True
    requests: list[tuple[str, str | None]] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            state.requests.append((path, self.headers.get("Range")))
            if path not in state.files:
                self.send_error(404)
                return
            body = state.files[path]
            start = 0
            wanted = self.headers.get("Range")
            if wanted and state.ranges:
                start = int(wanted.removeprefix("bytes=").rstrip("-"))
                if start >= len(body):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            if path in state.truncate_once:
                state.truncate_once.discard(path)
                self.wfile.write(body[start : start + (len(body) - start) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body[start:])

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def make_zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in entries.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


make_tar = tar_bytes


RAW = bytes(range(256)) * 4096  # 1 MiB: several download chunks
SUBSET = make_zip({"subset0/scan.mhd": b"header", "subset0/scan.raw": RAW})


def settings(server: Server, **overrides: object) -> FetchSettings:
    values: dict = {"base_url": server.url, "retries": 0, "timeout_s": 5.0, "progressbar": False}
    values.update(overrides)
    return FetchSettings(**values)


def test_good_zip_is_fetched_extracted_and_then_skipped(server: Server, tmp_path: Path) -> None:
    server.files["/subset0.zip"] = SUBSET
    pins = {"subset0.zip": md5(SUBSET)}
    [target] = fetch_dataset("luna16", tmp_path, settings(server, checksums=pins), ["subset0.zip"])
    assert target == tmp_path / "luna16" / "subset0"
    assert (target / "scan.raw").read_bytes() == RAW
    marker = json.loads(marker_path(target).read_text())
    assert marker["checksum"] == pins["subset0.zip"]
    assert marker["files"] == {"scan.mhd": 6, "scan.raw": len(RAW)}
    assert not list((tmp_path / ".downloads").iterdir())  # archive removed, no leftovers
    fetch_dataset("luna16", tmp_path, settings(server, checksums=pins), ["subset0.zip"])
    assert len(server.requests) == 1  # complete: the rerun asked for nothing


def test_candidates_csv_moves_out_of_its_folder(server: Server, tmp_path: Path) -> None:
    archive = make_zip({"candidates_V2/candidates_V2.csv": b"seriesuid,class\n"})
    server.files["/candidates_V2.zip"] = archive
    server.files["/annotations.csv"] = b"seriesuid,coordX\n"
    pins = {"candidates_V2.zip": md5(archive), "annotations.csv": md5(b"seriesuid,coordX\n")}
    fetch_dataset(
        "luna16",
        tmp_path,
        settings(server, checksums=pins),
        ["candidates_V2.zip", "annotations.csv"],
    )
    assert (tmp_path / "luna16" / "candidates_V2.csv").read_bytes() == b"seriesuid,class\n"
    assert (tmp_path / "luna16" / "annotations.csv").read_bytes() == b"seriesuid,coordX\n"
    assert not (tmp_path / "luna16" / "candidates_V2").exists()


def test_tar_with_macos_junk(server: Server, tmp_path: Path) -> None:
    archive = make_tar(
        {
            "Task03_Liver/dataset.json": b"{}",
            "Task03_Liver/imagesTr/liver_0.nii.gz": b"x",
            "Task03_Liver/imagesTr/._liver_0.nii.gz": b"apple",
        }
    )
    server.files["/Task03_Liver.tar"] = archive
    fetch_dataset("liver", tmp_path, settings(server, checksums={"Task03_Liver.tar": md5(archive)}))
    task = tmp_path / "Task03_Liver"
    assert sorted(p.name for p in (task / "imagesTr").iterdir()) == ["liver_0.nii.gz"]
    assert marker_path(task).is_file()


def test_wrong_checksum_leaves_nothing(server: Server, tmp_path: Path) -> None:
    server.files["/subset0.zip"] = SUBSET
    wrong = "md5:" + "0" * 32
    with pytest.raises(InputError, match=rf"subset0\.zip: expected {wrong}, got {md5(SUBSET)}"):
        fetch_dataset(
            "luna16", tmp_path, settings(server, checksums={"subset0.zip": wrong}), ["subset0.zip"]
        )
    assert not (tmp_path / "luna16" / "subset0").exists()
    assert not marker_path(tmp_path / "luna16" / "subset0").exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_wrong_checksum_cli_prints_one_line(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.files["/Task01_BrainTumour.tar"] = make_tar({"Task01_BrainTumour/dataset.json": b"{}"})
    code = main(
        [
            "fetch",
            "brain",
            "--output",
            str(tmp_path),
            "--settings",
            json.dumps({"base_url": server.url, "retries": 0, "progressbar": False}),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "expected md5:240a19d752f0d9e9101544901065d872" in err[0]


def test_interrupted_transfer_resumes_on_rerun(server: Server, tmp_path: Path) -> None:
    server.files["/subset0.zip"] = SUBSET
    server.truncate_once.add("/subset0.zip")
    config = settings(server, checksums={"subset0.zip": md5(SUBSET)})
    with pytest.raises(InputError, match="download failed after 1 tries"):
        fetch_dataset("luna16", tmp_path, config, ["subset0.zip"])
    assert not (tmp_path / "luna16" / "subset0").exists()
    part = tmp_path / ".downloads" / ".subset0.zip.part"
    kept = part.stat().st_size
    assert 0 < kept <= len(SUBSET) // 2
    fetch_dataset("luna16", tmp_path, config, ["subset0.zip"])
    assert server.requests[-1] == ("/subset0.zip", f"bytes={kept}-")
    assert not part.exists()
    assert (tmp_path / "luna16" / "subset0" / "scan.raw").stat().st_size == len(RAW)


def test_interrupted_transfer_recovered_by_retry(server: Server, tmp_path: Path) -> None:
    server.files["/subset0.zip"] = SUBSET
    server.truncate_once.add("/subset0.zip")
    server.ranges = False  # the server restarts from byte 0: still recovered
    fetch_dataset(
        "luna16",
        tmp_path,
        settings(server, retries=1, checksums={"subset0.zip": md5(SUBSET)}),
        ["subset0.zip"],
    )
    assert len(server.requests) == 2
    assert marker_path(tmp_path / "luna16" / "subset0").is_file()


def test_unpinned_luna16_checksum_comes_from_zenodo_api(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.files["/subset8.zip"] = make_zip({"subset8/a.mhd": b"a"})
    listing = {"files": [{"key": "subset8.zip", "checksum": md5(server.files["/subset8.zip"])}]}
    server.files["/api/records/4121926"] = json.dumps(listing).encode()
    with caplog.at_level(logging.INFO, logger="genesis.data.fetch"):
        fetch_dataset(
            "luna16",
            tmp_path,
            settings(server, zenodo_api=f"{server.url}/api/records"),
            ["subset8.zip"],
        )
    assert "no pinned checksum for subset8.zip" in caplog.text
    assert (tmp_path / "luna16" / "subset8" / "a.mhd").is_file()


def test_interrupted_extraction_is_redone(server: Server, tmp_path: Path) -> None:
    server.files["/subset0.zip"] = SUBSET
    config = settings(server, checksums={"subset0.zip": md5(SUBSET)})
    fetch_dataset("luna16", tmp_path, config, ["subset0.zip"])
    target = tmp_path / "luna16" / "subset0"
    marker_path(target).unlink()  # as if killed between rename and marker
    (target / "scan.raw").write_bytes(b"half")
    fetch_dataset("luna16", tmp_path, config, ["subset0.zip"])
    assert (target / "scan.raw").stat().st_size == len(RAW)


@pytest.mark.parametrize("kind", ["zip", "tar"])
@pytest.mark.parametrize("entry", ["../escape.txt", "/abs/escape.txt", "subset0/../../x.txt"])
def test_escaping_entries_are_refused(
    server: Server, tmp_path: Path, kind: str, entry: str
) -> None:
    data = {"subset0/ok.txt": b"ok", entry: b"evil"}
    archive = make_zip(data) if kind == "zip" else make_tar(data)
    server.files["/subset0.zip"] = archive
    output = tmp_path / "data"
    with pytest.raises(InputError, match="refusing entry"):
        fetch_dataset(
            "luna16",
            output,
            settings(server, checksums={"subset0.zip": md5(archive)}),
            ["subset0.zip"],
        )
    assert not (output / "luna16" / "subset0").exists()
    assert not marker_path(output / "luna16" / "subset0").exists()
    assert not list(tmp_path.rglob("escape.txt")) and not list(tmp_path.rglob("x.txt"))


def test_local_archive_skips_download(server: Server, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "subset0.zip").write_bytes(SUBSET)
    fetch_dataset(
        "luna16",
        tmp_path / "data",
        settings(server, local_path=str(mirror), checksums={"subset0.zip": md5(SUBSET)}),
        ["subset0.zip"],
    )
    assert server.requests == []
    assert (tmp_path / "data" / "luna16" / "subset0" / "scan.mhd").is_file()
    assert (mirror / "subset0.zip").is_file()  # the user's copy is never removed
    with pytest.raises(InputError, match="checksum mismatch for local copy"):
        fetch_dataset(
            "luna16",
            tmp_path / "other",
            settings(server, local_path=str(mirror), checksums={"subset0.zip": "md5:" + "1" * 32}),
            ["subset0.zip"],
        )


def test_local_extracted_folder_is_linked(server: Server, tmp_path: Path) -> None:
    local = tmp_path / "mine" / "Task03_Liver"
    (local / "imagesTr").mkdir(parents=True)
    (local / "dataset.json").write_text("{}")
    fetch_dataset("liver", tmp_path / "data", settings(server, local_path=str(local)))
    target = tmp_path / "data" / "Task03_Liver"
    assert server.requests == []
    assert target.is_symlink() and (target / "dataset.json").is_file()
    assert marker_path(target).is_file() and not (local / ".complete.json").exists()


def test_registration_data_needs_local_path(server: Server, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs registration"):
        fetch_dataset("lits", tmp_path, settings(server))
    lits = tmp_path / "LiTS-download"
    lits.mkdir()
    with pytest.raises(InputError, match="does not look like LiTS"):
        fetch_dataset("lits", tmp_path / "data", settings(server, local_path=str(lits)))
    (lits / "volume-0.nii").write_bytes(b"")
    [target] = fetch_dataset("lits", tmp_path / "data", settings(server, local_path=str(lits)))
    assert target.resolve() == lits.resolve()


def test_bad_settings_name_the_key() -> None:
    from genesis.settings import from_mapping

    with pytest.raises(ConfigError, match=r"fetch\.checksums\.subset0\.zip"):
        from_mapping(FetchSettings, {"checksums": {"subset0.zip": "abc"}}, "fetch")
    with pytest.raises(ConfigError, match=r"has no file .subset12\.zip."):
        fetch_dataset("luna16", Path("unused"), FetchSettings(), ["subset12.zip"])
