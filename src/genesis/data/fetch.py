"""Checksummed, resumable downloads of the public datasets, and use of local copies.

Built on pooch: ``Pooch.fetch`` downloads into a temporary file in the download folder,
checks its hash against the pinned checksum and only then moves it to its final name
(pooch ``stream_download``); on a mismatch the temporary file is deleted. Pooch retries
a failed transfer or a hash mismatch ``retries`` times, with a growing pause.

Pooch itself does not resume: its ``HTTPDownloader`` always starts from byte 0. The
``ResumingDownloader`` below is a pooch downloader that keeps the bytes received so far
in ``.<name>.part`` and asks the server for the rest with an HTTP ``Range`` request. A
server that ignores ``Range`` (answers 200 instead of 206) gets the whole file again.
Pooch's hash check still runs on the assembled file, so a bad resume can never pass.

Checksums: MSD md5 sums are pinned in ``genesis.data.sources``; for LUNA16 the settings
key ``checksums`` pins them (file name -> ``"md5:..."``). A LUNA16 file without a pin is
checked against the md5 that Zenodo's record API lists, and the value is logged so it can
be pinned. The authors' released models (``released``, see ``genesis.data.released``) work
the same way with sha256 sums: a pin from ``checksums``, or else the LFS sha256 that the
Hugging Face hub's tree API (``hub_api``) lists for the file, logged.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genesis.atomic import atomic_path
from genesis.data.archive import install_archive, is_complete, remove_target, write_marker
from genesis.data.sources import RELEASED_REVISION, RemoteFile, Source, get_source
from genesis.errors import ConfigError, GenesisError, InputError
from genesis.settings import check_bounds, setting

log = logging.getLogger(__name__)

_CHECKSUM = re.compile(r"^(md5|sha1|sha256):[0-9a-fA-F]+$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_MISMATCH = re.compile(r"expected (\S+) but got (\S+?)\.?(?:\s|$)")
DOWNLOADS = ".downloads"


@dataclass(frozen=True)
class FetchSettings:
    """Settings of ``genesis fetch`` (config section ``fetch``, one entry per dataset).

    The same settings serve the datasets (``data.real.<dataset>``) and the released
    models (``data.released``), so each description says where a key applies.
    """

    base_url: str | None = setting(
        None,
        "Mirror to download from instead of the official URL (for the released models "
        "`https://huggingface.co/MrGiovanni/ModelsGenesis/resolve/main`); a file is fetched "
        "from `<base_url>/<file name>`.",
    )
    checksums: dict[str, str] = setting(
        doc='Pinned checksums, file name → `"md5:<hex>"` (or sha1/sha256); they override '
        "the built-in ones. MSD md5 sums are built in; a LUNA16 file without a pin is checked "
        "against the md5 that Zenodo's record API lists, a released model against the LFS "
        "sha256 that the hub's API lists (both logged, so they can be pinned).",
        factory=dict,
    )
    local_path: str | None = setting(
        None,
        "A copy you already have, used instead of downloading: for a dataset the archive, a "
        "folder of archives, or the extracted folder (symlinked, not copied); for the released "
        "models one file, or a folder holding them under their released names (copied).",
    )
    files: tuple[str, ...] | None = setting(
        None,
        "Which files to fetch (null: all of a dataset; for the released models "
        "`Genesis_Chest_CT.pt` and `Genesis_Chest_CT.h5`). In the workflow each job passes "
        "its own files (one LUNA16 `subset{k}.zip`, the CSVs, one released file), which "
        "overrides this key, and each MSD task is a single archive, so leave it null.",
    )
    zenodo_api: str = setting(
        "https://zenodo.org/api/records",
        "Zenodo record API used to look up unpinned LUNA16 checksums (unused otherwise).",
    )
    hub_api: str = setting(
        "https://huggingface.co/api/models",
        "Hugging Face model API that lists the released models' LFS sha256 "
        "(`<hub_api>/MrGiovanni/ModelsGenesis/tree/main`), asked only for files without a "
        "pin (unused by the datasets).",
    )
    retries: int = setting(
        3,
        "Extra attempts after a failed transfer or a checksum mismatch.",
        bounds="[0, inf)",
    )
    timeout_s: float = setting(
        60.0,
        "Seconds to wait for the server before an attempt counts as failed.",
        bounds="(0, inf)",
    )
    keep_archives: bool = setting(
        False,
        "Keep downloaded archives after extraction (doubles the disk use; the released models "
        "are not archives).",
    )
    verify_local: bool = setting(
        True,
        "Check a local copy (`local_path`) against its pinned checksum before use (a released "
        "file without a pin is used as it is).",
    )
    progressbar: bool = setting(
        True,
        "Show a download progress bar (in the job's log).",
    )

    def __post_init__(self) -> None:
        for name, value in self.checksums.items():
            if not isinstance(value, str) or not _CHECKSUM.match(value):
                raise ConfigError(
                    f"fetch.checksums.{name} must look like 'md5:<hex>', got {value!r}"
                )
        check_bounds(self, "fetch")


class ResumingDownloader:
    """A pooch downloader that resumes from ``.<name>.part`` with an HTTP Range request.

    Called by pooch as ``downloader(url, output_file, pooch)``; on success the part file
    is renamed onto pooch's temporary ``output_file``. On a failure it stays, so the next
    try (pooch's retry or a rerun) continues where this one stopped.
    """

    def __init__(self, part: Path, timeout_s: float, progressbar: bool) -> None:
        self.part = part
        self.timeout_s = timeout_s
        self.progressbar = progressbar

    def __call__(
        self, url: str, output_file: str, pooch: Any, check_only: bool = False
    ) -> bool | None:
        import requests

        if check_only:
            response = requests.head(url, timeout=self.timeout_s, allow_redirects=True)
            return response.status_code == 200
        offset = self.part.stat().st_size if self.part.exists() else 0
        # identity: byte offsets must refer to the file, not a compressed transfer.
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout_s) as response:
            if response.status_code == 416:  # nothing left to send: stale part, start over
                self.part.unlink()
                raise requests.exceptions.RequestException(f"{url}: range not satisfiable")
            response.raise_for_status()
            if offset and response.status_code != 206:
                log.info("%s: server does not resume; downloading from the start", url)
                offset = 0
            elif offset:
                log.info("%s: resuming at byte %d", url, offset)
            length = response.headers.get("Content-Length")
            expected = None if length is None else offset + int(length)
            self._stream(response, offset, expected)
        size = self.part.stat().st_size
        if expected is not None and size != expected:
            raise requests.exceptions.ConnectionError(
                f"{url}: transfer stopped at byte {size} of {expected}"
            )
        os.replace(self.part, output_file)
        return None

    def _stream(self, response: Any, offset: int, expected: int | None) -> None:
        from tqdm import tqdm

        self.part.parent.mkdir(parents=True, exist_ok=True)
        mode = "ab" if offset else "wb"
        with (
            self.part.open(mode) as sink,
            tqdm(
                total=expected,
                initial=offset,
                unit="B",
                unit_scale=True,
                desc=self.part.name[1:-5],
                disable=not self.progressbar,
                leave=False,
            ) as progress,
        ):
            # A chunk cut short by a dropped connection is lost (requests raises before
            # yielding it), so chunks are kept small: a resume repeats at most 256 KiB.
            for chunk in response.iter_content(chunk_size=1 << 18):
                sink.write(chunk)
                progress.update(len(chunk))


def fetch_dataset(
    name: str, output: Path, settings: FetchSettings, files: Sequence[str] | None = None
) -> list[Path]:
    """Fetch dataset ``name`` into ``output`` (the data folder); return the targets.

    Already complete targets are skipped; a local copy in ``settings.local_path`` is used
    instead of the network.
    """
    source = get_source(name)
    if source.registration:
        return [_use_registered_copy(source, output, settings)]
    chosen = files or settings.files or source.default_files or tuple(f.name for f in source.files)
    remotes = [source.file(n) for n in chosen]
    unknown = sorted(set(settings.checksums) - {f.name for f in source.files})
    if unknown:
        raise ConfigError(f"fetch.checksums: {name} has no file(s) {', '.join(unknown)}")
    fetcher = _Fetcher(output, settings)
    return [fetcher.get(remote) for remote in remotes]


class _Fetcher:
    def __init__(self, output: Path, settings: FetchSettings) -> None:
        self.output = output
        self.settings = settings
        self._zenodo_cache: dict[str, dict[str, str]] = {}
        self._hub_cache: dict[str, dict[str, str | None]] = {}

    def get(self, remote: RemoteFile) -> Path:
        target = self.output / remote.target
        if is_complete(target) if remote.is_dir else target.is_file():
            log.info("%s is complete; skipping", target)
            return target
        local = self._local_copy(remote)
        if local is not None and not _is_archive_of(local, remote):
            _link_local(local, target, remote.is_dir)
            return target
        if local is not None:
            checksum = self._pinned(remote)  # never ask the network about a local copy
            if self.settings.verify_local and checksum:
                _verify(local, checksum)
            archive, origin = local, str(local)
        else:
            checksum = self.checksum(remote)
            archive, origin = self._download(remote, checksum), self.url(remote)
        if remote.kind == "file":
            if archive != target:
                with atomic_path(target) as tmp:
                    shutil.copyfile(archive, tmp)
            return target
        log.info("extracting %s into %s", archive.name, target)
        install_archive(
            archive,
            target,
            remote.member,
            remote.is_dir,
            {"archive": remote.name, "checksum": checksum, "source": origin},
        )
        if local is None and not self.settings.keep_archives:
            archive.unlink()
        return target

    # --- where from -----------------------------------------------------------------

    def url(self, remote: RemoteFile) -> str:
        if self.settings.base_url:
            return f"{self.settings.base_url.rstrip('/')}/{remote.name}"
        return remote.url

    def _pinned(self, remote: RemoteFile) -> str | None:
        if remote.name in self.settings.checksums:
            return self.settings.checksums[remote.name]
        return None if remote.md5 is None else f"md5:{remote.md5}"

    def checksum(self, remote: RemoteFile) -> str:
        pinned = self._pinned(remote)
        if pinned:
            return pinned
        if remote.record is not None:
            where = f"Zenodo record {remote.record}"
            listed = self._zenodo_checksums(remote.record).get(remote.name)
        elif remote.hub is not None:
            where = f"Hugging Face repo {remote.hub}"
            hub = self._hub_checksums(remote.hub)
            if remote.name in hub and hub[remote.name] is None:
                raise ConfigError(
                    f"fetch.checksums: {where} stores {remote.name} outside "
                    "LFS, so its API lists no sha256; pin its checksum"
                )
            listed = hub.get(remote.name)
        else:
            raise ConfigError(f"fetch.checksums: no checksum pinned for {remote.name}")
        if listed is None:
            raise ConfigError(f"fetch.checksums: {where} lists no {remote.name}; pin its checksum")
        log.info(
            "no pinned checksum for %s: using the %s listed by %s (pin it in "
            "fetch.checksums to skip this lookup)",
            remote.name,
            listed,
            where,
        )
        return listed

    def _zenodo_checksums(self, record: str) -> dict[str, str]:
        import requests

        if record not in self._zenodo_cache:
            url = f"{self.settings.zenodo_api.rstrip('/')}/{record}"
            try:
                response = requests.get(url, timeout=self.settings.timeout_s)
                response.raise_for_status()
                listed = {f["key"]: f["checksum"] for f in response.json()["files"]}
            except (requests.exceptions.RequestException, ValueError, KeyError, TypeError) as error:
                raise ConfigError(
                    f"fetch.checksums: no checksum pinned and Zenodo's API "
                    f"{url} did not answer ({error}); pin the checksums "
                    "or set fetch.local_path"
                ) from None
            self._zenodo_cache[record] = listed
        return self._zenodo_cache[record]

    def _hub_checksums(self, repo: str) -> dict[str, str | None]:
        """File path -> ``"sha256:<hex>"`` (its LFS oid), or None for a file outside LFS.

        The hub's tree API answers a JSON list of entries ``{"type", "path", "size",
        "oid", "lfs": {"oid", "size", "pointerSize"}}``; ``lfs.oid`` is the sha256 of the
        file's content (``oid`` is git's blob id, not a plain file hash). Long listings
        are paged with a ``Link: <...>; rel="next"`` header.
        """
        import requests

        if repo not in self._hub_cache:
            url = f"{self.settings.hub_api.rstrip('/')}/{repo}/tree/{RELEASED_REVISION}"
            listed: dict[str, str | None] = {}
            page: str | None = url
            try:
                while page:
                    response = requests.get(page, timeout=self.settings.timeout_s)
                    response.raise_for_status()
                    for entry in response.json():
                        if entry.get("type", "file") != "file":
                            continue
                        oid = (entry.get("lfs") or {}).get("oid")
                        if oid is None:
                            listed[entry["path"]] = None
                        elif _SHA256.match(str(oid)):
                            listed[entry["path"]] = f"sha256:{str(oid).lower()}"
                        else:
                            raise ValueError(f"{entry['path']}: lfs.oid {oid!r} is no sha256")
                    page = response.links.get("next", {}).get("url")
            except (
                requests.exceptions.RequestException,
                ValueError,
                KeyError,
                TypeError,
                AttributeError,
            ) as error:
                raise ConfigError(
                    f"fetch.checksums: no checksum pinned and the Hugging Face "
                    f"API {url} gave no usable answer ({error}); pin the "
                    "checksums or set fetch.local_path"
                ) from None
            self._hub_cache[repo] = listed
        return self._hub_cache[repo]

    def _local_copy(self, remote: RemoteFile) -> Path | None:
        """The user's copy of ``remote``: the archive itself or its extracted content."""
        if not self.settings.local_path:
            return None
        root = Path(self.settings.local_path).expanduser()
        if not root.exists():
            raise ConfigError(f"fetch.local_path {root} does not exist")
        target_name = Path(remote.target).name
        # Extracted forms first (nothing to do), then the archive itself.
        candidates = [root, root / target_name]
        if remote.member:
            candidates.append(root / remote.member)
        candidates.append(root / remote.name)
        for candidate in candidates:
            if candidate.is_file() and candidate.name == remote.name:
                log.info("using the local archive %s", candidate)
                return candidate
            if (
                candidate.name == target_name
                and candidate.exists()
                and candidate.is_dir() == remote.is_dir
            ):
                log.info("using the local copy %s", candidate)
                return candidate
        log.info("no local copy of %s under %s; downloading", remote.name, root)
        return None

    def _download(self, remote: RemoteFile, checksum: str) -> Path:
        import pooch
        import requests

        settings = self.settings
        if remote.kind == "file":  # plain files go straight to their final place
            folder, name = (self.output / remote.target).parent, Path(remote.target).name
        else:
            folder, name = self.output / DOWNLOADS, remote.name
        url = self.url(remote)
        store = pooch.create(
            path=folder,
            base_url="",
            registry={name: checksum},
            urls={name: url},
            retry_if_failed=settings.retries,
        )
        downloader = ResumingDownloader(
            folder / f".{name}.part", settings.timeout_s, settings.progressbar
        )
        try:
            return Path(store.fetch(name, downloader=downloader))
        except ValueError as error:
            raise _mismatch_error(name, url, checksum, error) from None
        except requests.exceptions.RequestException as error:
            raise _url_error(
                url,
                f"download failed after {1 + settings.retries} tries ({error}); rerun to resume",
            ) from None


def _mismatch_error(name: str, url: str, expected: str, error: ValueError) -> GenesisError:
    match = _MISMATCH.search(str(error))
    got = match.group(2) if match else "?"
    algorithm = expected.split(":")[0]
    return _url_error(
        url,
        f"checksum mismatch for {name}: expected {expected}, got "
        f"{algorithm}:{got}; the download was deleted (stale pin or corrupt "
        "transfer)",
    )


def _url_error(url: str, problem: str) -> InputError:
    """An ``InputError`` that names a URL as it is (a ``Path`` would fold its ``//``)."""
    return InputError(None, f"{url}: {problem}")


def _verify(path: Path, checksum: str) -> None:
    import pooch

    algorithm, expected = checksum.split(":")
    got = pooch.file_hash(str(path), alg=algorithm)
    if got.lower() != expected.lower():
        raise InputError(
            path, f"checksum mismatch for local copy: expected {checksum}, got {algorithm}:{got}"
        )


def _is_archive_of(path: Path, remote: RemoteFile) -> bool:
    return path.is_file() and path.name == remote.name


def _link_local(local: Path, target: Path, is_dir: bool) -> None:
    """Point ``target`` at the user's extracted copy (a symlink: no copy of 100 GB)."""
    remove_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(local.resolve(), target_is_directory=is_dir)
    if is_dir:
        write_marker(target, {"local_path": str(local.resolve())})


def _use_registered_copy(source: Source, output: Path, settings: FetchSettings) -> Path:
    """LiTS / BraTS 2018 need registration: link the user's copy, check its layout."""
    if not settings.local_path:
        raise ConfigError(
            f"{source.name}: {source.description} needs registration and "
            "cannot be downloaded; download it yourself and set "
            "fetch.local_path to its folder"
        )
    local = Path(settings.local_path).expanduser()
    if not local.is_dir():
        raise ConfigError(f"fetch.local_path {local} is not a folder")
    patterns = {"lits": ["volume-*.nii*"], "brats2018": ["HGG/*", "LGG/*"]}[source.name]
    if not any(next(local.glob(p), None) for p in patterns):
        raise InputError(
            local, f"does not look like {source.description}: no {' or '.join(patterns)}"
        )
    target = output / source.target
    if is_complete(target):
        return target
    _link_local(local, target, is_dir=True)
    return target
