"""Shape checks shared by the batched transforms: every size derives from the cube shape."""

from __future__ import annotations

import torch

from genesis.errors import ConfigError

AXES = ("x", "y", "z")
#: Most painting boxes per sample: the box masks hold one bit per box in at most 64 bits.
MAX_BOXES = 63


def spatial_shape(cubes: torch.Tensor) -> tuple[int, int, int]:
    """(X, Y, Z) of a (N, 1, X, Y, Z) floating batch; anything else is a caller's bug."""
    if cubes.ndim != 5 or cubes.shape[1] != 1:
        raise ValueError(f"cubes must have shape (N, 1, X, Y, Z), got {tuple(cubes.shape)}")
    if not cubes.is_floating_point():
        raise ValueError(f"cubes must be a floating tensor in [0, 1], got {cubes.dtype}")
    x, y, z = cubes.shape[2:]
    return int(x), int(y), int(z)


def check_boxes_fit(
    shape: tuple[int, int, int], low: list[int], high: list[int], margin: int, transform: str
) -> None:
    """Raise ConfigError unless boxes of sizes ``low..high`` fit inside ``margin``.

    Cube sizes come from the config, so a cube too small for a transform's size rules is a
    settings problem the user can fix; the message names the axis, its length and the rule.
    """
    for axis, length, smallest, largest in zip(AXES, shape, low, high, strict=True):
        if smallest < 1 or largest < smallest or largest + 2 * margin > length:
            raise ConfigError(
                f"cube axis {axis} has {length} voxels, too few for {transform}: its boxes "
                f"are {smallest}..{largest} voxels long with a {margin}-voxel margin on "
                f"each side; use a larger cube_size or disable {transform}"
            )


def as_bool_mask(apply: torch.Tensor, n: int) -> torch.Tensor:
    """Validate a per-sample apply mask: bool, shape (n,)."""
    if apply.shape != (n,) or apply.dtype != torch.bool:
        raise ValueError(
            f"apply must be a bool tensor of shape ({n},), got {apply.dtype} {tuple(apply.shape)}"
        )
    return apply


def distinct(samples: torch.Tensor) -> list[int]:
    """The sample indices of a parameter set as a list; each may appear once. The in-place
    CPU paths visit samples one by one and would transform a repeated one twice."""
    indices = samples.tolist()
    if len(set(indices)) != len(indices):
        raise ValueError(f"the samples of a transform's parameters must be distinct, got {indices}")
    return indices


def numpy_ready(cubes: torch.Tensor) -> bool:
    """Whether the CPU fast paths may work on ``cubes`` through NumPy views: a floating
    CPU tensor of a type NumPy has (not bfloat16) that does not require grad. Writes through
    such views bypass torch, so the paths bump the tensor's autograd version afterwards."""
    return (
        cubes.device.type == "cpu"
        and not cubes.requires_grad
        and cubes.dtype in (torch.float16, torch.float32, torch.float64)
    )


def take(cubes: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """The selected samples of a batch (the batch itself when all are selected in order)."""
    if _everything(cubes, samples):
        return cubes
    return cubes.index_select(0, samples)


def _everything(cubes: torch.Tensor, samples: torch.Tensor) -> bool:
    n = cubes.shape[0]
    return samples.numel() == n and torch.equal(samples, torch.arange(n, device=samples.device))
