"""Flip: mirror input and target together along random spatial axes (facts §2).

Flipping is augmentation, not a distortion: the target flips with the input, so the model
still restores the cube it was given. Unlike the release, which never flips depth, all
three spatial axes are candidates, as the facts say was intended.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genesis.transforms._random import continuing, on_device, randint_numpy
from genesis.transforms._shape import as_bool_mask, numpy_ready, spatial_shape


@dataclass(frozen=True)
class FlipParams:
    """Net flips of a batch: ``axes`` (N, 3) bool, True where x, y or z ends up mirrored.

    Flips commute and two flips along one axis cancel, so the parity per axis is all that
    the up-to-``max_flips`` sequence leaves behind.
    """

    axes: torch.Tensor


def sample_flip(
    n: int,
    generator: torch.Generator,
    *,
    apply: torch.Tensor | None = None,
    rate: float = 0.4,
    max_flips: int = 3,
) -> FlipParams:
    """Draw the flips of ``n`` samples.

    Distribution, per sample where ``apply`` is True (all samples when None): one flip,
    then another while rand < ``rate``, at most ``max_flips`` in all; each along an axis
    uniform in {x, y, z}. With ``apply = rand < rate`` this is the release's "up to 3 times
    while rand < 0.4" loop.
    """
    first = np.ones(n, dtype=bool) if apply is None else as_bool_mask(apply, n).cpu().numpy()
    happens = continuing(generator, n, max_flips, rate, first=first)  # (N, max_flips)
    axis = randint_numpy(generator, np.zeros((n, max_flips), dtype=np.int64), 2)  # {0, 1, 2}
    hits = (axis[..., None] == np.arange(3)) & happens[..., None]
    return FlipParams(axes=on_device(hits.sum(axis=1) % 2 == 1, generator))


def apply_flip(cubes: torch.Tensor, params: FlipParams) -> torch.Tensor:
    """Mirror each (N, 1, X, Y, Z) sample along its axes; returns a new tensor."""
    spatial_shape(cubes)
    if params.axes.shape != (cubes.shape[0], 3):
        raise ValueError(
            f"flip axes must have shape ({cubes.shape[0]}, 3) for this batch, "
            f"got {tuple(params.axes.shape)}"
        )
    axes = params.axes.to(cubes.device)
    if numpy_ready(cubes):  # one strided copy per sample: no temporaries
        out = torch.empty_like(cubes, memory_format=torch.contiguous_format)
        source, target = cubes.numpy(), out.numpy()
        for sample, mirrored in enumerate(axes.tolist()):
            target[sample] = source[sample][
                (
                    slice(None),
                    *(slice(None, None, -1) if flipped else slice(None) for flipped in mirrored),
                )
            ]
        return out
    return _flip_grouped(cubes, axes)


def _flip_grouped(cubes: torch.Tensor, axes: torch.Tensor) -> torch.Tensor:
    """The accelerator path: one batched ``flip`` per combination of axes."""
    code = axes[:, 0].long() + 2 * axes[:, 1].long() + 4 * axes[:, 2].long()
    out = cubes.clone()
    for value in range(1, 8):  # the 7 non-empty axis combinations, each one batched
        index = torch.nonzero(code == value, as_tuple=False).flatten()
        if index.numel():
            dims = [2 + axis for axis in range(3) if value >> axis & 1]
            out[index] = cubes[index].flip(dims)
    return out


def flip(
    cubes: torch.Tensor,
    targets: torch.Tensor,
    generator: torch.Generator,
    *,
    apply: torch.Tensor | None = None,
    rate: float = 0.4,
    max_flips: int = 3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip inputs and targets identically; see ``sample_flip`` for the distribution."""
    if spatial_shape(cubes) != spatial_shape(targets) or cubes.shape[0] != targets.shape[0]:
        raise ValueError(
            f"cubes {tuple(cubes.shape)} and targets {tuple(targets.shape)} "
            "must have the same shape"
        )
    params = sample_flip(cubes.shape[0], generator, apply=apply, rate=rate, max_flips=max_flips)
    return apply_flip(cubes, params), apply_flip(targets, params)
