"""Resumable training state: atomic checkpoints and the RNG states that go into them.

A checkpoint is written to a temporary sibling, flushed to disk with ``fsync`` and renamed
over the target, so a job killed at any moment leaves either the old or the new checkpoint
as the latest, never a truncated one. The previous checkpoint is kept as ``<name>.prev``
(a hard link, so the latest is never missing), and ``load_checkpoint`` falls back to it if
the latest cannot be read (e.g. a disk that lied about ``fsync``). When a run has
finished, ``finish_checkpoint`` removes ``.prev``: the checkpoint itself stays (a rerun
finds the run complete), the spare copy is no longer needed. Temporaries are named by
``genesis.atomic`` (pid and host), so ``remove_stale_temporaries`` can clean those of a
killed run.

Checkpoints are loaded with ``weights_only=True``: they must hold only tensors, numbers,
strings, ``None`` and lists/tuples/dicts of those. ``rng_state`` is planned for that: NumPy
states are stored as tensors and plain ints, never as NumPy arrays or pickled objects.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genesis.atomic import make_temporary
from genesis.errors import InputError

log = logging.getLogger(__name__)

#: Random number generators a caller can hand to ``rng_state`` / ``restore_rng_state``.
Generator = torch.Generator | np.random.Generator


def previous_path(path: str | Path) -> Path:
    """Where the previous checkpoint is kept: ``checkpoint.pt`` -> ``checkpoint.pt.prev``."""
    path = Path(path)
    return path.with_name(path.name + ".prev")


def save_checkpoint(path: str | Path, state: Mapping[str, Any], keep_previous: bool = True) -> None:
    """Atomically write ``state`` to ``path``; keep the old file as ``.prev`` if asked.

    Order of operations: (1) write and fsync a temporary sibling, (2) hard-link the current
    checkpoint to ``.prev``, (3) rename the temporary file over ``path``, (4) fsync the
    directory so the renames survive a crash. At every instant ``path`` is a complete file
    (or absent on the very first save).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temporary(path)
    try:
        with tmp.open("wb") as handle:
            torch.save(dict(state), handle)
            handle.flush()
            os.fsync(handle.fileno())
        if keep_previous and path.exists():
            _link_previous(path)
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def finish_checkpoint(path: str | Path) -> None:
    """A run has finished: drop the spare ``.prev`` copy (and a stale staging link).

    ``path`` itself is kept: a rerun of a finished run resumes from it and stops at once.
    """
    prev = previous_path(path)
    for spare in (prev, prev.with_name(prev.name + ".tmp")):
        if spare.exists():
            spare.unlink()
            log.debug("removed %s", spare)


def _link_previous(path: Path) -> None:
    """Make ``.prev`` the current checkpoint without ever removing ``path``."""
    prev = previous_path(path)
    staging = prev.with_name(prev.name + ".tmp")
    staging.unlink(missing_ok=True)
    try:
        os.link(path, staging)
    except OSError:
        # File systems without hard links: a copy is slower but keeps the same guarantee.
        import shutil

        shutil.copyfile(path, staging)
    os.replace(staging, prev)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform / file system
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """Load the checkpoint at ``path``; ``None`` when there is none.

    A latest file that cannot be read falls back to ``.prev`` with a warning; if neither can
    be read, ``InputError`` names the file and the reason.
    """
    path = Path(path)
    prev = previous_path(path)
    if not path.exists():
        if not prev.exists():
            return None
        log.warning("%s is missing; resuming from the previous checkpoint %s", path, prev)
        return _read(prev)
    try:
        return _read(path)
    except InputError as error:
        if not prev.exists():
            raise
        log.warning("%s; falling back to the previous checkpoint %s", error, prev)
        return _read(prev)


def _read(path: Path) -> dict[str, Any]:
    if not zipfile.is_zipfile(path):
        raise InputError(
            path, "not a torch checkpoint (truncated or corrupt); delete it to start over"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        raise InputError(
            path,
            f"cannot read checkpoint ({type(error).__name__}: {first_line}); "
            "delete it to start over",
        ) from None
    if not isinstance(state, dict):
        raise InputError(path, f"checkpoint holds a {type(state).__name__}, expected a dict")
    return state


def rng_state(generators: Mapping[str, Generator] | None = None) -> dict[str, Any]:
    """Snapshot the global RNGs (Python, NumPy, torch CPU, CUDA) and the given generators.

    The engine draws its randomness from explicit generators; the global ones are saved too
    so that any library code that uses them continues the same stream after a resume.
    CUDA: only the current device's generator, and only once CUDA is initialised, so that
    saving never creates a context on GPUs leased by other jobs.
    """
    state: dict[str, Any] = {
        "python": _python_state(),
        "numpy": _numpy_legacy_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,
        "generators": {},
    }
    for name, generator in (generators or {}).items():
        if isinstance(generator, torch.Generator):
            state["generators"][name] = {"kind": "torch", "state": generator.get_state()}
        elif isinstance(generator, np.random.Generator):
            state["generators"][name] = {"kind": "numpy", "state": generator.bit_generator.state}
        else:
            raise TypeError(
                f"generator {name!r} is a {type(generator).__name__}, "
                "expected torch.Generator or numpy.random.Generator"
            )
    return state


def restore_rng_state(
    state: Mapping[str, Any], generators: Mapping[str, Generator] | None = None
) -> None:
    """Restore what ``rng_state`` saved; generators are matched by name and must all exist."""
    random.setstate(_tuple_tree(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda_state = state.get("cuda")
    if isinstance(cuda_state, torch.Tensor) and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda_state)  # the current device, as saved
    saved = state.get("generators", {})
    for name, generator in (generators or {}).items():
        if name not in saved:
            raise KeyError(f"no saved state for generator {name!r}; saved: {sorted(saved)}")
        entry = saved[name]
        if isinstance(generator, torch.Generator):
            generator.set_state(entry["state"])
        else:
            generator.bit_generator.state = entry["state"]


def _python_state() -> tuple[Any, ...]:
    return random.getstate()


def _tuple_tree(value: Any) -> Any:
    """Pickle round trips keep tuples, but be lenient with lists from other writers."""
    if isinstance(value, list | tuple):
        return tuple(_tuple_tree(item) for item in value)
    return value


def _numpy_legacy_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    # uint32 keys stored as int64 tensor: weights_only loading refuses NumPy arrays.
    return {
        "kind": str(kind),
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }
