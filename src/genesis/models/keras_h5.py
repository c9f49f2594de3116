"""Keras 2's legacy HDF5 weight files, read and written with h5py (no TensorFlow).

The Keras release (``Genesis_Chest_CT.h5``) stores ``genesis.models.keras_unet``'s weights
in the layout Keras 2's ``save_weights(path.h5)`` writes (``model.save`` writes the same
under a ``model_weights`` group, also read here):

- the root attribute ``layer_names`` lists every layer in build order, weightless ones
  (input, ReLU, pooling, up-sampling, concatenation, activation) included;
- each layer is a group whose ``weight_names`` attribute lists its datasets by their path
  inside the group, e.g. ``depth_0_conv/kernel:0`` (so tf-keras's files nest them one
  level deeper); weightless layers have an empty list;
- a Conv3D kernel is (kd, kh, kw, in, out) whatever the data format, where torch wants
  (out, in, kd, kh, kw); biases and the batch-norm ``gamma``, ``beta``, ``moving_mean``,
  ``moving_variance`` are per-channel vectors, the same in both.

Loading is strict, like ``genesis.models.weights``: every model layer must be in the file,
by name, with every weight and the right shapes, and nothing else may be, or loading
stops with one line naming the file and the first layer that disagrees. The head has no
fixed name (Keras names it ``conv3d_1`` in Keras 2.2, ``conv3d`` in tf-keras), so it is
recognised as the one Conv3D layer that is not a ``depth_{k}_conv``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from genesis.atomic import atomic_path
from genesis.errors import InputError, WeightsError
from genesis.models.keras_unet import (
    DEPTH,
    ENCODER_BLOCKS,
    HEAD,
    N_BLOCKS,
    KerasClassifier,
    KerasEncoder,
    KerasUNet3D,
)
from genesis.models.weights import LoadReport, _unwrap

logger = logging.getLogger(__name__)

#: ``LoadReport.format`` of these files.
KERAS_FORMAT = "keras-h5"
#: The head's name in written files: what tf-keras names a first unnamed Conv3D.
SAVED_HEAD = "conv3d"
#: The ``backend`` attribute written: Keras flips conv kernels read from Theano files only.
BACKEND = "tensorflow"
#: The ``keras_version`` attribute written: the tf-keras this layout was checked against.
#: Keras reads it only to convert Keras 1 files; any 2.x means no conversion.
KERAS_VERSION = "2.21.0"
#: Keras weight names per layer kind, in Keras's order, and their torch names.
CONV_WEIGHTS: dict[str, str] = {"kernel": "weight", "bias": "bias"}
BN_WEIGHTS: dict[str, str] = {
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
_DEPTH_LAYER = re.compile(r"depth_\d+_(conv|bn|relu)")
_AUTO_CONV = re.compile(r"conv3d(_\d+)?")
_KERNEL_TO_TORCH = (4, 3, 0, 1, 2)  # (kd, kh, kw, in, out) -> (out, in, kd, kh, kw)
_KERNEL_TO_KERAS = (2, 3, 4, 1, 0)  # the inverse


@dataclass(frozen=True)
class _Layer:
    """One Keras layer with weights and the torch module holding them."""

    keras: str  # the Keras name; HEAD for the head, whose file name varies
    module: str  # the torch module's name, e.g. "blocks.3.bn"
    weights: dict[str, str]  # Keras weight name -> torch parameter or buffer name


def _layers(model: KerasEncoder, n_blocks: int, head: bool) -> list[_Layer]:
    """The Keras layers with weights of blocks 0..n_blocks-1 (and the head), in build order."""
    layers = []
    for k in range(n_blocks):
        layers.append(_Layer(f"depth_{k}_conv", f"blocks.{k}.conv", CONV_WEIGHTS))
        layers.append(_Layer(f"depth_{k}_bn", f"blocks.{k}.bn", BN_WEIGHTS))
    if head:
        layers.append(_Layer(HEAD, HEAD, CONV_WEIGHTS))
    return layers


def _one_line(error: BaseException) -> str:
    # str() of a KeyError quotes its message; h5py reports bad object headers as KeyError.
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _names(path: Path, group: h5py.Group, attr: str) -> list[str]:
    """A list-of-names attribute; Keras splits long ones into ``attr0``, ``attr1``, ..."""
    if attr in group.attrs:
        values = list(np.atleast_1d(group.attrs[attr]))
    elif f"{attr}0" in group.attrs:
        values, chunk = [], 0
        while f"{attr}{chunk}" in group.attrs:
            values.extend(np.atleast_1d(group.attrs[f"{attr}{chunk}"]))
            chunk += 1
    else:
        where = "the file" if group.name == "/" else f"layer {group.name.lstrip('/')}"
        raise InputError(
            path,
            f"{where} has no '{attr}' attribute: not a Keras 2 HDF5 "
            "weights file (Keras's save_weights(path.h5) writes one)",
        )
    names = []
    for value in values:
        if isinstance(value, bytes | np.bytes_):
            value = value.decode("utf-8")
        if not isinstance(value, str):
            raise InputError(path, f"'{attr}' of {group.name} holds {value!r}, not a name")
        names.append(value)
    return names


def _member(group: h5py.Group, name: str) -> h5py.Group | h5py.Dataset | None:
    """``group[name]`` or None if absent; ``group.get`` would also say None if corrupt."""
    if name not in group:
        return None
    return group[name]


def _weights_root(path: Path, handle: h5py.File) -> h5py.Group:
    """The group holding ``layer_names``: the root, or ``model_weights`` of a full save."""
    if "layer_names" not in handle.attrs and "layer_names0" not in handle.attrs:
        nested = handle.get("model_weights")
        if isinstance(nested, h5py.Group):
            return nested
    return handle


def read_keras_h5(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Every layer of a Keras HDF5 weights file: name -> short weight name -> array.

    Layers come in the file's order, weightless ones with an empty dict; short weight
    names drop the layer path and the ``:0`` suffix (``kernel``, ``moving_mean``).

    Raises:
        InputError: the file is missing, not HDF5, truncated or corrupt, or not in Keras's
            layout; the message names the layer being read, if any.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            path,
            "Keras weights file not found"
            if not path.exists()
            else "Keras weights path is not a file",
        )
    layers: dict[str, dict[str, np.ndarray]] = {}
    current = ""
    try:
        with h5py.File(path, "r") as handle:
            root = _weights_root(path, handle)
            for current in _names(path, root, "layer_names"):
                if current in layers:
                    raise InputError(path, f"layer {current} is listed twice in layer_names")
                group = _member(root, current)
                if not isinstance(group, h5py.Group):
                    raise InputError(
                        path, f"layer {current} is listed in layer_names but not stored"
                    )
                weights: dict[str, np.ndarray] = {}
                for name in _names(path, group, "weight_names"):
                    short = name.rsplit("/", 1)[-1].split(":", 1)[0]
                    data = _member(group, name)
                    if not isinstance(data, h5py.Dataset):
                        raise InputError(
                            path,
                            f"layer {current}: weight {name} is listed in "
                            "weight_names but not stored",
                        )
                    if short in weights:
                        raise InputError(path, f"layer {current}: two weights named {short}")
                    weights[short] = np.asarray(data[()])
                layers[current] = weights
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as error:
        where = f" (reading layer {current})" if current else ""
        raise InputError(
            path, f"not a readable Keras HDF5 weights file{where}: {_one_line(error)}"
        ) from error
    if not any(layers.values()):
        raise InputError(path, "the Keras weights file holds no weights")
    return layers


def _find_head(weighted: Mapping[str, Mapping[str, np.ndarray]]) -> str | None:
    """The one Conv3D-like layer (5-D kernel and bias) not named ``depth_{k}_conv``.

    With several, an automatically named one (``conv3d``, ``conv3d_1``) wins if it is the
    only such name, so that a renamed ``depth_{k}_conv`` is reported as what it is.
    """
    candidates = [
        name
        for name, weights in weighted.items()
        if not _DEPTH_LAYER.fullmatch(name)
        and set(weights) == set(CONV_WEIGHTS)
        and weights["kernel"].ndim == 5
    ]
    if len(candidates) > 1:
        candidates = [name for name in candidates if _AUTO_CONV.fullmatch(name)]
    return candidates[0] if len(candidates) == 1 else None


def _expected_shapes(module: nn.Module, layer: _Layer) -> dict[str, tuple[int, ...]]:
    """The shapes the file must hold for ``layer``, in Keras's layout."""
    shapes = {}
    for keras_name, torch_name in layer.weights.items():
        shape = tuple(getattr(module, torch_name).shape)
        shapes[keras_name] = (
            tuple(shape[i] for i in _KERNEL_TO_KERAS) if keras_name == "kernel" else shape
        )
    return shapes


def _fmt(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def _check_layer(
    path: Path, target: nn.Module, layer: _Layer, name: str, stored: Mapping[str, np.ndarray]
) -> None:
    where = f"{path}: layer {name} ({layer.module})"
    expected = _expected_shapes(target.get_submodule(layer.module), layer)
    missing = [w for w in expected if w not in stored]
    if missing:
        raise WeightsError(f"{where} lacks {', '.join(missing)} in the file")
    unexpected = [w for w in stored if w not in expected]
    if unexpected:
        raise WeightsError(f"{where} has unexpected weights in the file: {', '.join(unexpected)}")
    for weight, shape in expected.items():
        array = stored[weight]
        if array.dtype.kind != "f":
            raise InputError(
                path, f"layer {name}: {weight} holds {array.dtype} values, not floating point"
            )
        if array.shape != shape:
            hint = ""
            if weight == "kernel" and name == "depth_0_conv" and array.ndim == 5:
                hint = (
                    f"; hint: the file's first block has {array.shape[-1]} filters, "
                    f"the model's {shape[-1]}: set width to match"
                )
            raise WeightsError(
                f"{where}: {weight} is {_fmt(array.shape)} in the file but "
                f"{_fmt(shape)} in the model{hint}"
            )


def load_keras_weights(
    model: nn.Module, path: str | Path, *, encoder_only: bool = False
) -> LoadReport:
    """Load a Keras HDF5 weights file into a Keras U-Net or classifier, strictly, in place.

    With ``encoder_only`` only blocks 0..7 (``depth_0`` .. ``depth_7``) are loaded and
    the file's decoder and head are skipped: the way to start a ``KerasClassifier``, or a
    ``KerasUNet3D`` with another head, from the release. Batch-norm step counters
    (``num_batches_tracked``), which Keras does not have, are kept as they are.

    Raises:
        InputError: the file is missing, unreadable, or not in Keras's layout.
        WeightsError: a layer or weight is missing, unexpected or of the wrong shape; the
            message names the file and the first layer that disagrees.
    """
    path = Path(path)
    target = _unwrap(model)
    if not isinstance(target, KerasEncoder):
        raise WeightsError(
            f"{path}: Keras weights load into KerasUNet3D or KerasClassifier, "
            f"not {type(target).__name__} (the torch release's U-Net reads "
            ".pt or .safetensors files with load_weights)"
        )
    if not encoder_only and not isinstance(target, KerasUNet3D):
        problem = (
            "has nothing for KerasClassifier's fc1 and fc2"
            if isinstance(target, KerasClassifier)
            else f"holds a decoder and head that {type(target).__name__} lacks"
        )
        raise WeightsError(f"{path}: a Keras U-Net file {problem}: load it with encoder_only=True")
    n_blocks = ENCODER_BLOCKS if encoder_only else len(target.blocks)
    layers = _layers(target, n_blocks, head=not encoder_only)
    weighted = {name: w for name, w in read_keras_h5(path).items() if w}

    matched: dict[str, _Layer] = {}
    for layer in layers:
        name = layer.keras
        if name == HEAD:
            found = _find_head({n: w for n, w in weighted.items() if n not in matched})
            if found is None:
                raise WeightsError(
                    f"{path}: layer {HEAD} (the 1x1x1 output Conv3D, named "
                    "conv3d_1 by Keras 2.2 and conv3d by tf-keras) is not in "
                    "the file as exactly one Conv3D not named depth_{k}_conv"
                )
            name = found
        if name not in weighted:
            known = {la.keras for la in _layers(target, N_BLOCKS, head=False)}
            known.add(_find_head(weighted) or "")
            others = [n for n in weighted if n not in known]
            hint = f"; the file has layers the model lacks: {', '.join(others)}" if others else ""
            raise WeightsError(
                f"{path}: layer {name} ({layer.module}) is missing from the file{hint}"
            )
        _check_layer(path, target, layer, name, weighted[name])
        matched[name] = layer
    if not encoder_only:
        for name in weighted:
            if name not in matched:
                raise WeightsError(
                    f"{path}: unexpected layer {name} in the file, which "
                    f"{type(target).__name__} (width {target.width}) lacks"
                )

    state = {}
    for name, layer in matched.items():
        for keras_name, torch_name in layer.weights.items():
            array = weighted[name][keras_name]
            if keras_name == "kernel":
                array = array.transpose(_KERNEL_TO_TORCH)
            state[f"{layer.module}.{torch_name}"] = torch.from_numpy(np.ascontiguousarray(array))
    result = target.load_state_dict(state, strict=False)
    if result.unexpected_keys:  # a bug in the layer map, not in the file
        raise RuntimeError(f"Keras layer map gave unknown keys {result.unexpected_keys}")
    report = LoadReport(
        path=path,
        format=KERAS_FORMAT,
        loaded=tuple(state),
        skipped=tuple(f"{n}/{w}" for n, ws in weighted.items() if n not in matched for w in ws),
        kept=tuple(k for k in target.state_dict() if k not in state),
        encoder_only=encoder_only,
        epoch=None,
        prefix_stripped=False,
    )
    logger.info(report.summary())
    return report


def _auto(base: str, index: int) -> str:
    """Keras's automatic layer names: ``base``, ``base_1``, ``base_2``, ..."""
    return base if index == 0 else f"{base}_{index}"


def _all_layer_names(model: KerasUNet3D) -> list[str]:
    """Every layer name, weightless ones too, in the order tf-keras lists them."""
    names = ["input_1"]
    k = 0
    for depth in range(DEPTH):
        for _ in range(2):
            names += [f"depth_{k}_conv", f"depth_{k}_bn", f"depth_{k}_relu"]
            k += 1
        if depth < DEPTH - 1:
            names.append(_auto("max_pooling3d", depth))
    for level in range(DEPTH - 1):
        names += [_auto("up_sampling3d", level), _auto("concatenate", level)]
        for _ in range(2):
            names += [f"depth_{k}_conv", f"depth_{k}_bn", f"depth_{k}_relu"]
            k += 1
    names.append(SAVED_HEAD)
    if model.final_activation is not None:
        names.append("activation")
    return names


def save_keras_weights(model: nn.Module, path: str | Path) -> Path:
    """Write a ``KerasUNet3D`` in Keras 2's legacy HDF5 layout, atomically.

    The file lists the same layers, weight names and shapes as tf-keras's
    ``save_weights(path.h5)`` of the same network, with the head named ``conv3d``, so Keras
    users can ``load_weights`` it into the release's builder (checked with tf-keras by
    ``tools/make_keras_fixture.py --check-load``). Names are written as bytes, which every
    Keras 2 and h5py version reads. Weights are written as float32, Keras's default.
    """
    target = _unwrap(model)
    if not isinstance(target, KerasUNet3D):
        raise TypeError(f"save_keras_weights writes a KerasUNet3D, got {type(target).__name__}")
    by_name = {layer.keras: layer for layer in _layers(target, len(target.blocks), head=True)}
    by_name[SAVED_HEAD] = by_name.pop(HEAD)
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        names = _all_layer_names(target)
        handle.attrs["backend"] = np.bytes_(BACKEND.encode("utf-8"))
        handle.attrs["keras_version"] = np.bytes_(KERAS_VERSION.encode("utf-8"))
        handle.attrs["layer_names"] = np.array([n.encode("utf-8") for n in names])
        for name in names:
            group = handle.create_group(name)
            layer = by_name.get(name)
            if layer is None:
                # Keras writes an empty float array for a weightless layer's names.
                group.attrs["weight_names"] = np.array([], dtype=np.float64)
                continue
            module = target.get_submodule(layer.module)
            weight_names = []
            for keras_name, torch_name in layer.weights.items():
                array = getattr(module, torch_name).detach().to("cpu", torch.float32).numpy()
                if keras_name == "kernel":
                    array = array.transpose(_KERNEL_TO_KERAS)
                weight_name = f"{name}/{keras_name}:0"
                group.create_dataset(weight_name, data=np.ascontiguousarray(array))
                weight_names.append(weight_name.encode("utf-8"))
            group.attrs["weight_names"] = np.array(weight_names)
    return path
