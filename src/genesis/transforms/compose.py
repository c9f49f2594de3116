"""The Models Genesis transformation of a batch: flip, shuffle, non-linear, paint (facts §2).

``GenesisTransform.sample`` draws every random choice of a batch into ``GenesisParams``;
``apply`` is a pure function of the cubes and those parameters, so any (input, target) pair
can be regenerated, recorded or replayed in a test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genesis.errors import ConfigError
from genesis.transforms._random import on_device, uniform_numpy
from genesis.transforms._shape import spatial_shape
from genesis.transforms.flip import FlipParams, apply_flip, sample_flip
from genesis.transforms.local_shuffle import (
    ShuffleParams,
    apply_local_shuffle_,
    sample_local_shuffle,
)
from genesis.transforms.nonlinear import NonlinearParams, apply_nonlinear_, sample_nonlinear
from genesis.transforms.painting import (
    PaintParams,
    apply_inpaint_,
    apply_outpaint_,
    sample_inpaint,
    sample_outpaint,
)
from genesis.transforms.settings import TransformSettings, validate

# Transformations that change the input only; flip changes input and target alike.
DISTORTIONS = ("local_shuffle", "nonlinear", "inpainting", "outpainting")


@dataclass(frozen=True)
class GenesisParams:
    """Everything random about one batch. ``applied`` maps each transformation name to its
    (N,) bool mask; a transformation switched off has mask all False and params None."""

    applied: dict[str, torch.Tensor]
    flip: FlipParams | None
    local_shuffle: ShuffleParams | None
    nonlinear: NonlinearParams | None
    inpainting: PaintParams | None
    outpainting: PaintParams | None

    @property
    def distorted(self) -> torch.Tensor:
        """(N,) bool: samples whose input differs from the target by design (flip aside).

        An in-painted sample with no hole (probability 0.05, as in the release) counts as
        undistorted, so ``~distorted`` marks exactly the pure autoencoding samples.
        """
        applied = dict(self.applied)
        if self.inpainting is not None:
            holes = torch.zeros_like(applied["inpainting"])
            holes[self.inpainting.samples] = self.inpainting.active.any(dim=1)
            applied["inpainting"] = holes
        return torch.stack([applied[name] for name in DISTORTIONS]).any(dim=0)


class GenesisTransform:
    """Turn a batch of cubes into (input, target) pairs for restoration pretraining.

    Per sample, in order: flip input and target together (probability ``flip_rate``, then
    further flips while rand < ``flip_rate``, at most ``max_flips``); local pixel shuffling
    (``local_shuffle_rate``); the Bezier intensity map (``nonlinear_rate``); painting
    (``paint_rate``), in-painting for a share ``inpaint_rate`` of painted samples and
    out-painting for the rest. With release rates about 0.5% of samples stay undistorted.

    Randomness comes only from the generator passed to ``__call__``: parameters are drawn on
    its device and moved to the cubes' device. A CPU generator therefore works with CUDA
    cubes and gives the same pairs as on CPU (the Bezier lookup up to float rounding); a
    generator on the cubes' device keeps the large draws (shuffling keys, painting noise) on
    the GPU and is the fast choice there.
    """

    def __init__(self, settings: TransformSettings) -> None:
        if not isinstance(settings, TransformSettings):
            raise ConfigError(
                f"transforms: expected TransformSettings, got {type(settings).__name__}"
            )
        validate(settings)
        self.settings = settings

    def __call__(
        self, cubes: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) for cubes (N, 1, X, Y, Z) in [0, 1]; ``cubes`` is not modified."""
        spatial_shape(cubes)
        return self.apply(cubes, self.sample(cubes.shape, generator))

    def decide(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Per-sample (N,) bool masks of which transformations apply, on the generator's device.

        Drawn for every transformation in a fixed layout, even for those switched off, so
        switching one off does not change the choices of the others.
        """
        s, on = self.settings, self.settings.enabled
        u = uniform_numpy(generator, (n, 5))  # compared in float32, as torch would
        painted = u[:, 3] < np.float32(s.paint_rate)
        both = "inpainting" in on and "outpainting" in on
        share = s.inpaint_rate if both else float("inpainting" in on)
        inpainted = painted & (u[:, 4] < np.float32(share))
        applied = {
            "flip": u[:, 0] < np.float32(s.flip_rate),
            "local_shuffle": u[:, 1] < np.float32(s.local_shuffle_rate),
            "nonlinear": u[:, 2] < np.float32(s.nonlinear_rate),
            "inpainting": inpainted,
            "outpainting": painted & ~inpainted,
        }
        return {name: on_device(mask & (name in on), generator) for name, mask in applied.items()}

    def sample(
        self, shape: torch.Size | tuple[int, ...], generator: torch.Generator
    ) -> GenesisParams:
        """Draw every random parameter for a batch of the given (N, 1, X, Y, Z) shape."""
        if len(shape) != 5 or shape[1] != 1:
            raise ValueError(f"cubes must have shape (N, 1, X, Y, Z), got {tuple(shape)}")
        s = self.settings
        n, spatial = int(shape[0]), (int(shape[2]), int(shape[3]), int(shape[4]))
        applied = self.decide(n, generator)
        on = s.enabled
        return GenesisParams(
            applied=applied,
            flip=sample_flip(
                n, generator, apply=applied["flip"], rate=s.flip_rate, max_flips=s.max_flips
            )
            if "flip" in on
            else None,
            local_shuffle=sample_local_shuffle(
                n, spatial, generator, apply=applied["local_shuffle"], blocks=s.local_shuffle_blocks
            )
            if "local_shuffle" in on
            else None,
            nonlinear=sample_nonlinear(
                n, generator, apply=applied["nonlinear"], invert_rate=s.invert_rate
            )
            if "nonlinear" in on
            else None,
            inpainting=sample_inpaint(
                n,
                spatial,
                generator,
                apply=applied["inpainting"],
                max_holes=s.inpaint_max_holes,
                continue_rate=s.inpaint_continue_rate,
                margin=s.paint_margin,
            )
            if "inpainting" in on
            else None,
            outpainting=sample_outpaint(
                n,
                spatial,
                generator,
                apply=applied["outpainting"],
                max_windows=s.outpaint_max_windows,
                continue_rate=s.outpaint_continue_rate,
                margin=s.paint_margin,
            )
            if "outpainting" in on
            else None,
        )

    def apply(
        self, cubes: torch.Tensor, params: GenesisParams
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) from cubes and parameters drawn by ``sample``; pure."""
        spatial_shape(cubes)
        targets = cubes.clone() if params.flip is None else apply_flip(cubes, params.flip)
        # One working copy that every distortion overwrites in place: no copy per step.
        inputs = targets.clone(memory_format=torch.contiguous_format)
        if params.local_shuffle is not None:
            apply_local_shuffle_(inputs, params.local_shuffle)
        if params.nonlinear is not None:
            apply_nonlinear_(inputs, params.nonlinear, points=self.settings.bezier_points)
        if params.inpainting is not None:
            apply_inpaint_(inputs, params.inpainting)
        if params.outpainting is not None:
            apply_outpaint_(inputs, params.outpainting)
        return inputs, targets
