"""Strict weight files: read the release's layout and ours, write both, never guess.

A file either fits the model exactly or loading fails with every missing, unexpected
and wrongly shaped key listed: a silent fall-back to random initialisation was a reported
bug of the original release. Files are read with ``torch.load(weights_only=True)``, which
refuses pickled Python objects, so a weights file can never run code.

Readable layouts:

- the release's ``{"epoch", "state_dict", "optimizer_state_dict"}`` with ``module.``-prefixed
  keys (saved from ``nn.DataParallel``), and our ``{"epoch", "state_dict"}`` files;
- a plain state dict, with or without the ``module.`` prefix;
- ``.safetensors`` (plain keys; the epoch, if any, in the metadata).

``save_weights`` writes ``stem.pt``, ``stem.safetensors`` and ``stem.json`` as one set
(``genesis.atomic.atomic_set``): the old sidecar is removed first and the new one, with
both files' sha256, renamed last, so a sidecar never lies beside weights it does not
describe. ``read_weights`` checks a file against the sidecar beside it when that sidecar
records it. The same tensors give the same bytes: ``torch.save`` is given an open file,
so the zip records are named ``archive/...`` rather than after the (random) temporary
file name, and safetensors files have no timestamps.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from genesis.atomic import atomic_set
from genesis.errors import InputError, WeightsError
from genesis.models.unet import ENCODER_LEVELS, HEAD
from genesis.provenance import file_sha256

logger = logging.getLogger(__name__)

#: Key prefix of checkpoints saved from ``nn.DataParallel`` (the release's layout).
RELEASE_PREFIX = "module."
#: Keys of the encoder, the part shared by the U-Net and the classifier.
ENCODER_PREFIXES: tuple[str, ...] = tuple(f"{name}." for name in ENCODER_LEVELS)
#: Keys of the U-Net's output head, the one part a new task replaces.
HEAD_PREFIX = f"{HEAD}."
#: The files ``save_weights`` writes, by suffix.
WEIGHT_SUFFIXES: tuple[str, ...] = (".pt", ".safetensors", ".json")
#: What each written file holds, recorded in the JSON sidecar.
FILE_FORMATS: dict[str, str] = {
    ".pt": "torch.save of {'epoch', 'state_dict'}, keys prefixed 'module.' (release layout)",
    ".safetensors": "safetensors, plain keys, metadata 'epoch'",
}
_FIRST_BLOCK = "down_tr64.ops.0.conv1.weight"


@dataclass(frozen=True)
class WeightsFile:
    """The tensors of a weights file and how they were stored."""

    path: Path
    state_dict: dict[str, Tensor]
    format: str  # "pt-checkpoint", "pt-state-dict" or "safetensors"
    epoch: int | None
    prefix_stripped: bool


@dataclass(frozen=True)
class LoadReport:
    """What ``load_weights`` did: which keys it loaded, ignored and left untouched."""

    path: Path
    format: str
    loaded: tuple[str, ...]  # model keys set from the file
    skipped: tuple[str, ...]  # file keys deliberately not loaded (encoder_only)
    kept: tuple[str, ...]  # model keys left as they were (e.g. a classifier's head)
    encoder_only: bool
    epoch: int | None
    prefix_stripped: bool

    def summary(self) -> str:
        """One line with counts per top-level module, for logs."""
        source = self.format + (", 'module.' prefix stripped" if self.prefix_stripped else "")
        if self.epoch is not None:
            source += f", epoch {self.epoch}"
        return (
            f"loaded {len(self.loaded)} tensors from {self.path} ({source}): "
            f"{_by_prefix(self.loaded)}; skipped {len(self.skipped)} file tensors: "
            f"{_by_prefix(self.skipped)}; kept {len(self.kept)} model tensors as they "
            f"were: {_by_prefix(self.kept)}"
        )


def _by_prefix(keys: Iterable[str]) -> str:
    counts = Counter(key.split(".", 1)[0] for key in keys)
    return ", ".join(f"{prefix} ({n})" for prefix, n in counts.items()) or "none"


def _unwrap(model: nn.Module) -> nn.Module:
    """The module whose keys are the release's: strip DataParallel/DDP and torch.compile."""
    while True:
        if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return re.sub(r"\x1b\[[0-9;]*m", "", lines[0]) if lines else type(error).__name__


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if refused:
            raise InputError(
                path,
                f"refused: the file holds the Python object "
                f"{refused.group(1)}, and weights are only read with "
                "torch.load(weights_only=True), which never runs code from a "
                "file",
            ) from error
        detail = text.split("WeightsUnpickler error:", 1)[-1]
        raise InputError(
            path,
            "not a readable PyTorch weights file (torch.load with "
            f"weights_only=True failed: {_first_line(ValueError(detail))})",
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise InputError(
            path, f"not a readable PyTorch weights file: {_first_line(error)}"
        ) from error


def _safetensors_load(path: Path) -> tuple[dict[str, Tensor], int | None]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(path, f"not a readable safetensors file: {_first_line(error)}") from error
    epoch = metadata.get("epoch", "")
    return tensors, int(epoch) if epoch.isdigit() else None


def _unpack(path: Path, obj: Any) -> tuple[Mapping[Any, Any], str, int | None]:
    """Find the state dict inside what ``torch.load`` returned."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        epoch = obj.get("epoch")
        valid_epoch = isinstance(epoch, int) and not isinstance(epoch, bool)
        return obj["state_dict"], "pt-checkpoint", epoch if valid_epoch else None
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        return obj, "pt-state-dict", None
    found = (
        f"a dict with keys {sorted(map(str, obj))[:10]}"
        if isinstance(obj, Mapping)
        else f"a {type(obj).__name__}"
    )
    raise InputError(
        path, f"expected a state dict or a checkpoint with a 'state_dict' entry, found {found}"
    )


def read_weights(path: str | Path) -> WeightsFile:
    """Read a weights file in any supported layout, on the CPU, without running code.

    Raises:
        InputError: the file is missing, unreadable, or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            path, "weights file not found" if not path.exists() else "weights path is not a file"
        )
    check_sidecar(path)
    if path.suffix == ".safetensors":
        state, epoch = _safetensors_load(path)
        fmt = "safetensors"
    else:
        state, fmt, epoch = _unpack(path, _torch_load(path))
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise InputError(path, f"state dict entries that are not named tensors: {bad}")
    if not state:
        raise InputError(path, "the state dict holds no tensors")
    stripped = all(key.startswith(RELEASE_PREFIX) for key in state)
    if stripped:
        state = {key.removeprefix(RELEASE_PREFIX): value for key, value in state.items()}
    return WeightsFile(path, dict(state), fmt, epoch, stripped)


def sidecar_sha256(path: Path) -> str | None:
    """The sha256 the JSON sidecar beside ``path`` records for it, if it records one."""
    sidecar = path.with_suffix(".json")
    if path.suffix == ".json" or not sidecar.is_file():
        return None
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        entry = record["weights"]["files"][path.name]
        digest = entry["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not our sidecar, or it does not list this file
    return digest if isinstance(digest, str) else None


def check_sidecar(path: Path) -> None:
    """Refuse a weights file whose hash disagrees with the sidecar that lists it."""
    expected = sidecar_sha256(path)
    if expected is None:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise InputError(
            path,
            f"sha256 {actual[:12]}... differs from {expected[:12]}... "
            f"recorded in {path.with_suffix('.json').name}: the files are not "
            "from the same save (mixed copies or an interrupted save); export "
            "them again or remove the sidecar",
        )


def _shape(tensor: Tensor) -> str:
    return str(tuple(tensor.shape))


def _mismatch_message(
    path: Path,
    model: nn.Module,
    expected: Mapping[str, Tensor],
    found: Mapping[str, Tensor],
    encoder_only: bool,
    mode: str = "all",
) -> str | None:
    """Every way ``found`` fails to fit ``expected``, in one line; None when it fits."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [k for k in expected if k in found and found[k].shape != expected[k].shape]
    if not (missing or unexpected or wrong):
        return None
    groups = []
    if missing:
        groups.append(
            f"{len(missing)} missing: " + ", ".join(f"{k} {_shape(expected[k])}" for k in missing)
        )
    if unexpected:
        groups.append(
            f"{len(unexpected)} unexpected: "
            + ", ".join(f"{k} {_shape(found[k])}" for k in unexpected)
        )
    if wrong:
        groups.append(
            f"{len(wrong)} with the wrong shape: "
            + ", ".join(
                f"{k} file {_shape(found[k])} vs model {_shape(expected[k])}" for k in wrong
            )
        )
    hints = []
    if _FIRST_BLOCK in wrong:
        hints.append(
            f"the file's first block has {found[_FIRST_BLOCK].shape[0]} channels, "
            f"the model's {expected[_FIRST_BLOCK].shape[0]}: set the width to match"
        )
    body_keys = [k for k in expected if not k.startswith(HEAD_PREFIX)]
    head_only = all(k.startswith(HEAD_PREFIX) for k in [*missing, *unexpected, *wrong])
    if not encoder_only and mode == "all" and body_keys and head_only:
        hints.append(
            f"all but the head ({HEAD}) fits: pass except_head=True to transfer "
            "every other layer and start a new head (a task with other classes)"
        )
    encoder_keys = [k for k in expected if k.startswith(ENCODER_PREFIXES)]
    if (
        not encoder_only
        and encoder_keys
        and all(k in found and found[k].shape == expected[k].shape for k in encoder_keys)
    ):
        hints.append("the encoder fits: pass encoder_only=True to load only down_tr*")
    part = {"encoder": " (encoder only)", "except_head": " (all but the head)"}.get(mode, "")
    return (
        f"{path}: weights do not fit {type(model).__name__}{part}; "
        + "; ".join(groups)
        + "".join(f"; hint: {h}" for h in hints)
    )


def load_weights(
    model: nn.Module, path: str | Path, *, encoder_only: bool = False, except_head: bool = False
) -> LoadReport:
    """Load a weights file into ``model`` strictly, in place, and report what was loaded.

    With ``encoder_only`` only the encoder (``down_tr*``) is loaded: all of its keys must be
    in the file with the right shapes; the file's decoder and head are skipped and the
    model's other parameters (a classifier's head, a U-Net's decoder) are kept.

    With ``except_head`` every U-Net key but the output head (``out_tr.*``) is loaded,
    strictly, and the model's head is kept: the paper's transfer for segmentation, where
    encoder and decoder are pretrained and only the 1x1x1 output layer is new (a task
    with three classes needs three output channels, the restoration head has one).

    Raises:
        InputError: the file is missing or unreadable.
        WeightsError: a key is missing, unexpected or of the wrong shape (all are listed).
    """
    target = _unwrap(model)
    weights = read_weights(path)
    expected = target.state_dict()
    found = weights.state_dict
    if encoder_only and except_head:
        raise ValueError("encoder_only and except_head exclude each other")
    mode = "encoder" if encoder_only else "except_head" if except_head else "all"
    if except_head:
        expected = {k: v for k, v in expected.items() if not k.startswith(HEAD_PREFIX)}
        found = {k: v for k, v in found.items() if not k.startswith(HEAD_PREFIX)}
    if encoder_only:
        expected = {k: v for k, v in expected.items() if k.startswith(ENCODER_PREFIXES)}
        if not expected:
            raise WeightsError(
                f"{type(target).__name__} has no encoder (down_tr*) parameters to load"
            )
        found = {k: v for k, v in found.items() if k.startswith(ENCODER_PREFIXES)}
    problem = _mismatch_message(weights.path, target, expected, found, encoder_only, mode)
    if problem:
        raise WeightsError(problem)
    target.load_state_dict(found, strict=mode == "all")
    report = LoadReport(
        path=weights.path,
        format=weights.format,
        loaded=tuple(k for k in expected if k in found),
        skipped=tuple(k for k in weights.state_dict if k not in found),
        kept=tuple(k for k in target.state_dict() if k not in found),
        encoder_only=encoder_only,
        epoch=weights.epoch,
        prefix_stripped=weights.prefix_stripped,
    )
    logger.info(report.summary())
    return report


def weight_paths(stem: str | Path) -> dict[str, Path]:
    """The three files of a weights stem, by suffix; a given suffix is dropped first."""
    stem = Path(stem)
    if stem.suffix in WEIGHT_SUFFIXES:
        stem = stem.with_suffix("")
    return {suffix: stem.with_name(stem.name + suffix) for suffix in WEIGHT_SUFFIXES}


def save_weights(
    model: nn.Module, stem: str | Path, *, provenance: Mapping[str, Any], epoch: int = 0
) -> list[Path]:
    """Write ``stem.pt`` (release layout), ``stem.safetensors`` and ``stem.json`` as a set.

    The JSON sidecar holds ``provenance`` plus a ``weights`` entry: epoch, model class and
    constructor arguments, and each file's format and sha256. It is removed before the
    weight files are replaced and written after them, so its presence means both weight
    files are complete and are the ones it describes. The same tensors and epoch give
    byte-identical weight files.
    """
    if "weights" in provenance:
        raise ValueError("provenance must not have a 'weights' key: save_weights adds it")
    target = _unwrap(model)
    state = {k: v.detach().to("cpu").contiguous() for k, v in target.state_dict().items()}
    paths = weight_paths(stem)
    order = [paths[".pt"], paths[".safetensors"], paths[".json"]]
    with atomic_set(order) as (pt_tmp, st_tmp, json_tmp):
        with pt_tmp.open("wb") as handle:  # a file object: records named archive/...
            torch.save(
                {
                    "epoch": int(epoch),
                    "state_dict": {RELEASE_PREFIX + k: v for k, v in state.items()},
                },
                handle,
            )
        save_file(state, str(st_tmp), metadata={"epoch": str(int(epoch))})
        files = {
            paths[s].name: {
                "format": FILE_FORMATS[s],
                "sha256": file_sha256(tmp),
                "bytes": tmp.stat().st_size,
            }
            for s, tmp in ((".pt", pt_tmp), (".safetensors", st_tmp))
        }
        record = dict(provenance)
        record["weights"] = {
            "epoch": int(epoch),
            "model": type(target).__name__,
            "model_config": getattr(target, "config", None),
            "n_parameters": sum(p.numel() for p in target.parameters()),
            "n_tensors": len(state),
            "files": files,
        }
        json_tmp.write_text(
            json.dumps(record, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
        )
    return order
