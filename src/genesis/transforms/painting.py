"""In-painting and out-painting: hide part of the cube behind uniform noise (facts §2).

In-painting fills up to ``max_holes`` boxes with noise, so the model must infer a region
from its surroundings; out-painting keeps only a few windows of the image inside a noise
cube, so it must extrapolate the surroundings. Boxes become voxel masks by comparing
coordinate ranges against each sample's boxes, never by looping over voxels.

Overlapping holes draw fresh noise in the release; here one noise cube per sample fills
every hole. Uniform noise over the union of holes has the same distribution either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genesis.transforms._random import continuing, randint, selected, sub_generator, sub_seed
from genesis.transforms._shape import check_boxes_fit, put, spatial_shape, take


@dataclass(frozen=True)
class PaintParams:
    """Boxes of a batch: samples (S,), corners and sizes (S, H, 3) along x, y, z, active
    (S, H) bool for the boxes that exist, and seed for the noise cube."""

    samples: torch.Tensor
    corners: torch.Tensor
    sizes: torch.Tensor
    active: torch.Tensor
    seed: int


def inpaint_sizes(shape: tuple[int, int, int]) -> tuple[list[int], list[int]]:
    """Hole edge range per axis, bounds inclusive: [n // 6, n // 3]."""
    return [n // 6 for n in shape], [n // 3 for n in shape]


def outpaint_sizes(shape: tuple[int, int, int]) -> tuple[list[int], list[int]]:
    """Window edge range per axis, bounds inclusive: n - randint(3n // 7, 4n // 7)."""
    return [n - 4 * n // 7 for n in shape], [n - 3 * n // 7 for n in shape]


def sample_boxes(n: int, shape: tuple[int, int, int], generator: torch.Generator, *,
                 apply: torch.Tensor | None, sizes: tuple[list[int], list[int]], count: int,
                 continue_rate: float, first_drawn: bool, margin: int,
                 transform: str) -> PaintParams:
    """Up to ``count`` boxes per applied sample, each edge uniform in the ``sizes`` range
    and the corner uniform such that the box keeps ``margin`` voxels from every face.

    Box k exists while every continuation draw up to k is below ``continue_rate``; with
    ``first_drawn`` False the first box always exists.
    """
    low, high = sizes
    check_boxes_fit(shape, low, high, margin, transform)
    device = generator.device
    samples = selected(apply, n, device)
    picked = samples.numel()
    first = None if first_drawn else torch.ones(picked, dtype=torch.bool)
    active = continuing(generator, picked, count, continue_rate, first)  # (S, H)
    full = (picked, count, 3)
    edge = randint(generator, torch.tensor(low, device=device).expand(full),
                   torch.tensor(high, device=device).expand(full))
    dims = torch.tensor(shape, device=device)
    corners = randint(generator, torch.full(full, margin, device=device),
                      dims - edge - margin)
    return PaintParams(samples=samples, corners=corners, sizes=edge, active=active,
                       seed=sub_seed(generator))


def box_mask(params: PaintParams, shape: tuple[int, int, int],
             device: torch.device) -> torch.Tensor:
    """(S, 1, X, Y, Z) bool: the union of each sample's active boxes."""
    corners, sizes = params.corners.to(device), params.sizes.to(device)
    active = params.active.to(device)
    inside = []
    for axis, length in enumerate(shape):  # per axis: (S, H, n) coordinate-in-range tests
        coord = torch.arange(length, device=device)
        low = corners[..., axis, None]
        inside.append((coord >= low) & (coord < low + sizes[..., axis, None]))
    ix, iy, iz = inside
    ix &= active[..., None]  # an inactive box covers nothing
    mask = torch.zeros((ix.shape[0], 1, *shape), dtype=torch.bool, device=device)
    for box in range(ix.shape[1]):  # at most a handful of boxes; each one batched
        mask |= (ix[:, box, None, :, None, None] & iy[:, box, None, None, :, None]
                 & iz[:, box, None, None, None, :])
    return mask


def _noise(params: PaintParams, shape: tuple[int, int, int], like: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) noise cubes for the painted samples, replayable from ``params.seed``."""
    device = params.corners.device
    noise = torch.rand((params.samples.numel(), 1, *shape), device=device,
                       generator=sub_generator(params.seed, device))
    noise = noise.to(like.device, like.dtype)
    if like.dtype != torch.float32:  # rounding to a coarser type could reach 1.0
        below_one = torch.nextafter(torch.ones((), dtype=like.dtype),
                                    torch.zeros((), dtype=like.dtype))
        noise.clamp_(max=below_one.item())
    return noise


def apply_inpaint(cubes: torch.Tensor, params: PaintParams) -> torch.Tensor:
    """Fill the holes of the selected samples with noise; returns a new tensor."""
    return _paint(cubes, params, keep_inside=False)


def apply_outpaint(cubes: torch.Tensor, params: PaintParams) -> torch.Tensor:
    """Replace all but the windows of the selected samples with noise; returns a new tensor."""
    return _paint(cubes, params, keep_inside=True)


def _paint(cubes: torch.Tensor, params: PaintParams, keep_inside: bool) -> torch.Tensor:
    shape = spatial_shape(cubes)
    if params.samples.numel() == 0:
        return cubes.clone()
    samples = params.samples.to(cubes.device)
    mask = box_mask(params, shape, cubes.device)
    image, noise = take(cubes, samples), _noise(params, shape, cubes)
    painted = torch.where(mask, image, noise) if keep_inside else torch.where(mask, noise, image)
    return put(cubes, samples, painted)


def sample_inpaint(n: int, shape: tuple[int, int, int], generator: torch.Generator, *,
                   apply: torch.Tensor | None = None, max_holes: int = 5,
                   continue_rate: float = 0.95, margin: int = 3) -> PaintParams:
    """Holes: hole k exists while k + 1 draws are all below ``continue_rate`` (so, as in the
    release, no hole at all with probability 1 - continue_rate); edges in [n//6, n//3]."""
    return sample_boxes(n, shape, generator, apply=apply, sizes=inpaint_sizes(shape),
                        count=max_holes, continue_rate=continue_rate, first_drawn=True,
                        margin=margin, transform="inpainting")


def sample_outpaint(n: int, shape: tuple[int, int, int], generator: torch.Generator, *,
                    apply: torch.Tensor | None = None, max_windows: int = 5,
                    continue_rate: float = 0.95, margin: int = 3) -> PaintParams:
    """Windows: the first always, then more while rand < ``continue_rate``, at most
    ``max_windows``; edges n - randint(3n//7, 4n//7)."""
    return sample_boxes(n, shape, generator, apply=apply, sizes=outpaint_sizes(shape),
                        count=max_windows, continue_rate=continue_rate, first_drawn=False,
                        margin=margin, transform="outpainting")


def inpaint(cubes: torch.Tensor, generator: torch.Generator, *,
            apply: torch.Tensor | None = None, max_holes: int = 5,
            continue_rate: float = 0.95, margin: int = 3) -> torch.Tensor:
    """In-paint each applied sample; see ``sample_inpaint`` for the distribution."""
    params = sample_inpaint(cubes.shape[0], spatial_shape(cubes), generator, apply=apply,
                            max_holes=max_holes, continue_rate=continue_rate, margin=margin)
    return apply_inpaint(cubes, params)


def outpaint(cubes: torch.Tensor, generator: torch.Generator, *,
             apply: torch.Tensor | None = None, max_windows: int = 5,
             continue_rate: float = 0.95, margin: int = 3) -> torch.Tensor:
    """Out-paint each applied sample; see ``sample_outpaint`` for the distribution."""
    params = sample_outpaint(cubes.shape[0], spatial_shape(cubes), generator, apply=apply,
                             max_windows=max_windows, continue_rate=continue_rate,
                             margin=margin)
    return apply_outpaint(cubes, params)
