"""genesis fetch released: the authors' models from a fake Hugging Face hub on loopback."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from genesis.cli import main
from genesis.data.fetch import FetchSettings, fetch_dataset
from genesis.data.released import RELEASED_FILES, released_file
from genesis.errors import ConfigError, InputError

PT, H5, NNUNET = RELEASED_FILES["pt"], RELEASED_FILES["h5"], RELEASED_FILES["nnunet"]
CONTENT = {
    PT: bytes(range(256)) * 2048,  # 512 KiB: several download chunks
    H5: b"\x89HDF\r\n\x1a\n" + bytes(1000),
    NNUNET: b"pickled trainer plan",
}
RESOLVE = "/MrGiovanni/ModelsGenesis/resolve/main"
TREE = "/api/models/MrGiovanni/ModelsGenesis/tree/main"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Hub:
    """A fake hub: files, the tree API, redirects; records the requests (path, Range)."""

    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    truncate_once: set[str] = field(default_factory=set)
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def serve_release(self, listing: list[dict] | None = None, cdn: bool = False) -> None:
        """The three files under the resolve path (optionally redirected to a CDN path),
        and the tree API listing their LFS sha256 (or ``listing``)."""
        for name, data in CONTENT.items():
            if cdn:
                self.redirects[f"{RESOLVE}/{name}"] = f"/cdn/{name}"
                self.files[f"/cdn/{name}"] = data
            else:
                self.files[f"{RESOLVE}/{name}"] = data
        if listing is None:
            listing = [{"type": "directory", "path": "docs", "oid": "0" * 40, "size": 0}]
            listing += [
                {
                    "type": "file",
                    "path": name,
                    "size": len(data),
                    "oid": hashlib.sha1(data).hexdigest(),  # git's blob id: not the file hash
                    "lfs": {
                        "oid": hashlib.sha256(data).hexdigest(),
                        "size": len(data),
                        "pointerSize": 134,
                    },
                }
                for name, data in CONTENT.items()
            ]
        self.files[TREE] = json.dumps(listing).encode()

    def asked(self, prefix: str) -> list[str]:
        return [path for path, _ in self.requests if path.startswith(prefix)]


@pytest.fixture
def hub() -> Iterator[Hub]:
    state = Hub(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            wanted = self.headers.get("Range")
            state.requests.append((path, wanted))
            if path in state.redirects:
                self.send_response(302)
                self.send_header("Location", state.redirects[path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if path not in state.files:
                self.send_error(404)
                return
            body = state.files[path]
            start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted else 0
            if start >= len(body) > 0:
                self.send_error(416)
                return
            self.send_response(206 if wanted else 200)
            if wanted:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
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


def settings(hub: Hub, **overrides: object) -> FetchSettings:
    """The fake hub stands in for huggingface.co: its resolve path and its API."""
    values: dict = {
        "base_url": hub.url + RESOLVE,
        "hub_api": hub.url + "/api/models",
        "retries": 0,
        "timeout_s": 5.0,
        "progressbar": False,
    }
    values.update(overrides)
    return FetchSettings(**values)


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_default_fetch_checks_the_hub_sha256_and_skips_nnunet(
    hub: Hub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub.serve_release()
    with caplog.at_level(logging.INFO, logger="genesis.data.fetch"):
        targets = fetch_dataset("released", tmp_path, settings(hub))
    assert targets == [tmp_path / "released" / PT, tmp_path / "released" / H5]
    assert all(t.read_bytes() == CONTENT[t.name] for t in targets)
    assert files_under(tmp_path) == [f"released/{H5}", f"released/{PT}"]  # no nnunet, no .part
    assert hub.asked("/api") == [TREE]  # one listing for both files
    for name in (PT, H5):
        assert f"no pinned checksum for {name}: using the {sha256(CONTENT[name])}" in caplog.text
    assert "Hugging Face repo MrGiovanni/ModelsGenesis" in caplog.text
    hub.requests.clear()
    fetch_dataset("released", tmp_path, settings(hub))
    assert hub.requests == []  # complete: the rerun asks for nothing


def test_nnunet_model_only_on_request(hub: Hub, tmp_path: Path) -> None:
    hub.serve_release()
    path = released_file("nnunet", tmp_path, settings(hub))
    assert path == tmp_path / "released" / NNUNET
    assert path.read_bytes() == CONTENT[NNUNET]
    assert files_under(tmp_path) == [f"released/{NNUNET}"]
    [h5] = fetch_dataset("released", tmp_path / "other", settings(hub, files=(H5,)))
    assert files_under(tmp_path / "other") == [f"released/{H5}"] and h5.name == H5


def test_pinned_mismatch_fails_in_one_line_and_leaves_nothing(hub: Hub, tmp_path: Path) -> None:
    hub.serve_release()
    wrong = "sha256:" + "0" * 64
    with pytest.raises(InputError) as caught:
        released_file("pt", tmp_path, settings(hub, checksums={PT: wrong}))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{hub.url}{RESOLVE}/{PT}: checksum mismatch for {PT}")
    assert f"expected {wrong}, got {sha256(CONTENT[PT])}" in message
    assert hub.asked("/api") == []  # a pin is never looked up
    assert files_under(tmp_path) == []


def test_redirected_transfer_resumes_from_the_part_file(hub: Hub, tmp_path: Path) -> None:
    hub.serve_release(cdn=True)  # huggingface.co answers resolve/ with a redirect
    hub.truncate_once.add(f"/cdn/{PT}")
    config = settings(hub, checksums={PT: sha256(CONTENT[PT])})
    with pytest.raises(InputError, match=rf"{PT}: download failed after 1 tries"):
        released_file("pt", tmp_path, config)
    part = tmp_path / "released" / f".{PT}.part"
    kept = part.stat().st_size
    assert 0 < kept <= len(CONTENT[PT]) // 2
    assert not (tmp_path / "released" / PT).exists()
    path = released_file("pt", tmp_path, config)
    assert hub.requests[-2:] == [
        (f"{RESOLVE}/{PT}", f"bytes={kept}-"),
        (f"/cdn/{PT}", f"bytes={kept}-"),
    ]
    assert path.read_bytes() == CONTENT[PT] and not part.exists()


def test_base_url_mirror(hub: Hub, tmp_path: Path) -> None:
    hub.files[f"/mirror/{PT}"] = CONTENT[PT]
    path = released_file(
        "pt",
        tmp_path,
        settings(hub, base_url=hub.url + "/mirror/", checksums={PT: sha256(CONTENT[PT])}),
    )
    assert hub.requests == [(f"/mirror/{PT}", None)]
    assert path.read_bytes() == CONTENT[PT]


def test_local_file_and_folder_are_used_without_network(hub: Hub, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in (PT, H5):
        (mine / name).write_bytes(CONTENT[name])
    path = released_file(
        "pt",
        tmp_path / "a",
        settings(hub, local_path=str(mine / PT), checksums={PT: sha256(CONTENT[PT])}),
    )
    assert path.read_bytes() == CONTENT[PT] and not path.is_symlink()
    targets = fetch_dataset("released", tmp_path / "b", settings(hub, local_path=str(mine)))
    assert [t.read_bytes() for t in targets] == [CONTENT[PT], CONTENT[H5]]
    assert hub.requests == []
    assert files_under(mine) == [H5, PT]  # the user's copies stay
    with pytest.raises(InputError, match=rf"mine/{PT}: checksum mismatch for local copy"):
        released_file(
            "pt",
            tmp_path / "c",
            settings(hub, local_path=str(mine), checksums={PT: "sha256:" + "1" * 64}),
        )
    assert not (tmp_path / "c" / "released" / PT).exists()


@pytest.mark.parametrize(
    ("listing", "problem"),
    [
        (None, r"the Hugging Face API \S+/tree/main gave no usable answer \(404"),
        ([], "Hugging Face repo MrGiovanni/ModelsGenesis lists no Genesis_Chest_CT.pt"),
        (
            [{"type": "file", "path": PT, "oid": "ab" * 20, "size": 3}],
            "stores Genesis_Chest_CT.pt outside LFS",
        ),
        ([{"type": "file", "path": PT, "lfs": {"oid": "xyz"}}], r"lfs\.oid 'xyz' is no sha256"),
        ({"error": "Repository not found"}, "gave no usable answer"),
    ],
)
def test_hub_api_problems_name_the_file_or_url(
    hub: Hub, tmp_path: Path, listing: object, problem: str
) -> None:
    hub.serve_release([] if listing is None else listing)  # type: ignore[arg-type]
    if listing is None:
        del hub.files[TREE]
    with pytest.raises(ConfigError, match=problem):
        released_file("pt", tmp_path, settings(hub))
    assert files_under(tmp_path) == []


def test_bad_kind_and_unknown_pins_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kind must be one of pt, h5, nnunet"):
        released_file("keras", tmp_path, FetchSettings())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"released has no file 'Genesis_Chest_CT\.pth'"):
        fetch_dataset("released", tmp_path, FetchSettings(files=("Genesis_Chest_CT.pth",)))
    with pytest.raises(ConfigError, match=r"fetch\.checksums: released has no file"):
        fetch_dataset("released", tmp_path, FetchSettings(checksums={"x.pt": "sha256:00"}))


def test_cli_fetches_released_end_to_end(
    hub: Hub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.serve_release()
    config = {
        "base_url": hub.url + RESOLVE,
        "hub_api": hub.url + "/api/models",
        "retries": 0,
        "progressbar": False,
    }
    code = main(
        [
            "fetch",
            "released",
            "--output",
            str(tmp_path / "data"),
            "--files",
            PT,
            NNUNET,
            "--settings",
            json.dumps(config),
        ]
    )
    out = capsys.readouterr().out.split()
    assert code == 0
    assert out == [str(tmp_path / "data" / "released" / n) for n in (PT, NNUNET)]
    assert files_under(tmp_path / "data") == [f"released/{PT}", f"released/{NNUNET}"]
    config["checksums"] = {H5: "sha256:" + "2" * 64}
    code = main(
        ["fetch", "released", "--output", str(tmp_path / "data"), "--settings", json.dumps(config)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and f"checksum mismatch for {H5}" in err[0]
    assert not (tmp_path / "data" / "released" / H5).exists()
