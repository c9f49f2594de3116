"""Atomic file writes: write to a temporary sibling, then rename over the target.

A killed job therefore never leaves a half-written file that Snakemake (or a resumed run)
would take as complete.

Temporary names say whose they are: ``.<target name>.tmp.<pid>.<host>.<random><suffixes>``
(``host``: 8 hex digits of the host name's SHA-1), e.g.
``.train.npy.tmp.4242.1a2b3c4d.k3j_x9q2.npy``. A run killed with SIGKILL (or by the OOM
killer, or a power cut) cannot remove its temporaries, so a command calls
``remove_stale_temporaries`` with the outputs it is about to write when it starts: a
temporary of one of those outputs is removed when it was made on this host by a process
that no longer exists. Temporaries of live processes (another run writing the same
output right now), of other hosts (on a shared file system their pids mean nothing
here) and of other files are left alone. A reused pid only keeps a stale file longer.

``atomic_set`` writes several files as one set: the last one (a manifest or sidecar that
describes the others) is removed before the others are replaced and written after them,
so whenever it exists it belongs to the files beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Marks a temporary name: ``.<name>`` + TMP_MARK + ``<pid>.<host>.<random><suffixes>``.
TMP_MARK = ".tmp."


def host_tag() -> str:
    """8 hex digits naming this host in temporary names."""
    return hashlib.sha1(socket.gethostname().encode("utf-8")).hexdigest()[:8]


def make_temporary(target: str | Path) -> Path:
    """Create an empty temporary file beside ``target``, named as the module docs say.

    The name keeps the target's suffixes so that libraries which pick a format from the
    file name (nibabel, SimpleITK, numpy) behave as for the real target.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)
    fd, name = tempfile.mkstemp(
        prefix=f".{target.name}{TMP_MARK}{os.getpid()}.{host_tag()}.",
        suffix=suffix,
        dir=target.parent,
    )
    os.close(fd)
    return Path(name)


def _temporary_pattern(target: Path) -> re.Pattern[str]:
    suffix = "".join(target.suffixes)
    return re.compile(
        re.escape(f".{target.name}{TMP_MARK}") + r"(\d+)\.([0-9a-f]{8})\."
        r"[a-z0-9_]+" + re.escape(suffix)
    )


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (True when that cannot be told)."""
    if os.name == "nt" or pid <= 0:  # os.kill(pid, 0) would terminate a process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by someone else
        return True
    return True


def stale_temporaries(targets: Iterable[str | Path]) -> list[Path]:
    """Temporaries of ``targets`` made on this host by processes that are gone."""
    by_folder: dict[Path, list[Path]] = {}
    for target in map(Path, targets):
        by_folder.setdefault(target.parent, []).append(target)
    me, host = os.getpid(), host_tag()
    stale = []
    for folder, folder_targets in by_folder.items():
        try:
            names = sorted(
                entry.name
                for entry in os.scandir(folder)
                if entry.name.startswith(".") and TMP_MARK in entry.name
            )
        except OSError:  # the folder does not exist yet
            continue
        patterns = [_temporary_pattern(target) for target in folder_targets]
        for name in names:
            for pattern in patterns:
                match = pattern.fullmatch(name)
                if match is None:
                    continue
                pid = int(match.group(1))
                if match.group(2) == host and pid != me and not pid_alive(pid):
                    stale.append(folder / name)
                break
    return stale


def remove_stale_temporaries(targets: Iterable[str | Path]) -> list[Path]:
    """Remove what ``stale_temporaries`` finds (left by killed runs); return the paths."""
    removed = []
    for path in stale_temporaries(targets):
        try:
            path.unlink()
        except FileNotFoundError:
            continue  # another run cleaned it first
        log.info("removed %s, left by a killed run", path)
        removed.append(path)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publishable(tmp: Path) -> None:
    # mkstemp creates 0600; give the result the permissions a plain open() would.
    tmp.chmod(0o666 & ~_umask())


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success."""
    with atomic_set([target]) as (tmp,):
        yield tmp


@contextmanager
def atomic_set(targets: Sequence[str | Path]) -> Iterator[list[Path]]:
    """Yield one temporary per target; on success replace the targets as a set.

    Order of the commit: remove the last target (the seal, e.g. a manifest or a sidecar
    with the others' hashes), rename the others over their targets, rename the seal.
    A kill between two renames therefore leaves the seal absent, never beside files it
    does not describe. On failure no target is touched and the temporaries are removed.
    """
    paths = [Path(target) for target in targets]
    if not paths:
        raise ValueError("atomic_set needs at least one target")
    tmps: list[Path] = []
    try:
        for path in paths:
            tmps.append(make_temporary(path))
        yield list(tmps)
        for tmp in tmps:
            _publishable(tmp)
        if len(paths) > 1:
            paths[-1].unlink(missing_ok=True)
        for tmp, path in zip(tmps, paths, strict=True):
            os.replace(tmp, path)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


def write_text(target: str | Path, text: str) -> None:
    """Atomically write a text file."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | Path, obj: Any) -> None:
    """Atomically write JSON, indented and with sorted keys so diffs stay readable."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
