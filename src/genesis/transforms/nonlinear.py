"""Non-linear intensity transform: a random monotone Bezier map of the intensities (facts §2).

The map y = f(x) is the cubic Bezier curve through control points (0, 0), P1, P2, (1, 1),
increasing, or decreasing with probability ``invert_rate`` (an intensity inversion with
f(0) = 1, f(1) = 0). The model must learn absolute intensities (tissue types) to undo it.

The release samples 100,000 curve points per cube and interpolates with ``np.interp``. Here
each sample's curve gets ``points`` (default 4,096) points, evaluated for the whole batch at
once, and every voxel reads the interpolated map from a small uniform table (see
``lookup``). Against a 100,000-point curve the largest deviation is about 1e-5 (tests check
< 1e-4), well below float16 storage resolution (2.4e-4) and 0.05 HU in the CT window.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from genesis.transforms._random import selected, uniform
from genesis.transforms._shape import numpy_ready, spatial_shape, take
from genesis.transforms._workspace import scratch

DEFAULT_POINTS = 4096
# The lookup table: cells per map, and the chord error above which a cell is searched.
CELLS = 4096
CHORD_TOLERANCE = 2.0**-20
_UNSURE = 2.0**100  # rise of a cell that needs the exact search; finite in float32


@dataclass(frozen=True)
class NonlinearParams:
    """samples: (S,) transformed samples; controls: (S, 2, 2) P1 and P2 as (x, y) rows;
    invert: (S,) bool, True for a decreasing map."""

    samples: torch.Tensor
    controls: torch.Tensor
    invert: torch.Tensor


def sample_nonlinear(n: int, generator: torch.Generator, *, apply: torch.Tensor | None = None,
                     invert_rate: float = 0.5) -> NonlinearParams:
    """P1, P2 uniform in the unit square; inverted with probability ``invert_rate``."""
    samples = selected(apply, n, generator.device)
    count = samples.numel()
    controls = uniform(generator, (count, 2, 2))
    invert = uniform(generator, (count,)) < invert_rate
    return NonlinearParams(samples=samples, controls=controls, invert=invert)


def bezier_curves(controls: torch.Tensor, invert: torch.Tensor,
                  points: int = DEFAULT_POINTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled maps (xs, ys), each (S, points): xs increasing from 0 to 1, ys = f(xs).

    With control points in the unit square, x(t) and y(t) are non-decreasing in t, so
    sorting the sampled values (as the release does) keeps t order up to rounding; reading
    y in reverse t order gives the decreasing map. Float64, so the end points are exact.
    """
    b1, b2, b3 = _bernstein(points, controls.device)
    c = controls.double()
    xs = c[:, 0, 0, None] * b1 + c[:, 1, 0, None] * b2 + b3
    ys = c[:, 0, 1, None] * b1 + c[:, 1, 1, None] * b2 + b3
    # Where the curve is flat, rounding could undo the order: restore it (the sort).
    xs, ys = xs.cummax(dim=1).values, ys.cummax(dim=1).values
    ys = torch.where(invert[:, None], ys.flip(1), ys)
    return xs, ys


@functools.lru_cache(maxsize=4)
def _bernstein(points: int, device: torch.device) -> torch.Tensor:
    """(3, points) float64 weights of P1, P2 and P3 = (1, 1) at evenly spaced t in [0, 1]."""
    t = torch.linspace(0.0, 1.0, points, dtype=torch.float64, device=device)
    return torch.stack([3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3])


def lookup(values: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """Piecewise-linear f(values) through the points (xs, ys) of each row, like ``np.interp``.

    values (S, V) are clamped to [0, 1]; xs (S, K) is non-decreasing from 0 to 1 and ys = f(xs).
    Each voxel reads f from a uniform table of ``CELLS`` cells per row: the values at the
    cell's two edges, interpolated linearly. That is exact wherever f is straight across a
    cell, and every other cell is checked: where the chord departs from f by more than
    ``CHORD_TOLERANCE`` (steep, strongly bent parts of a curve), the few voxels inside it
    fall back to an exact binary search. So the result equals ``np.interp`` through (xs, ys)
    to within 1e-6 everywhere, 0 and 1 map exactly onto the end points, and the common case
    is one read from a table small enough for the L2 cache. ``out`` (S * V,) float32 on CPU
    receives the result instead of a new tensor.
    """
    rows, count = values.shape
    table = _Table.build(xs, ys)
    if values.device.type == "cpu":
        out = torch.empty(rows * count) if out is None else out
        _read_numpy(values.float().contiguous().numpy(), range(rows), table, xs, ys,
                    out.numpy().reshape(rows, count))
        return out.view(rows, count)
    out = _read_torch(values.float(), table)
    if out.max() > 2.0:  # _UNSURE marks the voxels of cells the chord does not fit
        unsure = (out > 2.0).nonzero().squeeze(1)
        out[unsure] = _search(values.reshape(-1)[unsure], unsure // count, xs, ys).float()
    return out.view(rows, count)


def _read_torch(values: torch.Tensor, table: _Table) -> torch.Tensor:
    """(S * V,) start + fraction * rise of each value's cell; _UNSURE cells give > 2."""
    scaled = values.clamp(0.0, 1.0).mul_(CELLS)
    cell = scaled.long()
    within = scaled.sub_(cell)  # fraction of the cell, exact in float32
    cell += torch.arange(values.shape[0], device=cell.device)[:, None] * (CELLS + 1)
    cell = cell.view(-1)
    return table.start.index_select(0, cell).addcmul_(within.view(-1),
                                                       table.rise.index_select(0, cell))


# Voxels per NumPy pass on CPU: the pass's work arrays (about 40 bytes a voxel) stay in L2.
_CHUNK = 131_072


def _read_numpy(values: np.ndarray, rows: Sequence[int], table: _Table, xs: torch.Tensor,
                ys: torch.Tensor, out: np.ndarray) -> None:
    """The CPU read: out[rows[i]] = f_i(values[rows[i]]) for table row i, exact everywhere.

    values and out are float32 (N, V) and may be the same array (in place). The work runs
    in chunks of ``_CHUNK`` voxels, so each of its NumPy passes reads and writes the L2
    cache, not memory; start and rise sit side by side in one complex64 table, so a voxel
    costs one gather (``take`` with int64 cells and mode "wrap": no index conversion, no
    bounds checks). Voxels of bent cells come out > 2 and get the exact search, from the
    original values kept aside before they are overwritten.
    """
    width = CELLS + 1
    pairs = torch.stack([table.start, table.rise], dim=1).numpy().view(np.complex64).ravel()
    bent_rows = (table.rise.view(-1, width) > 2.0).any(dim=1).tolist()
    chunk = min(values.shape[1], _CHUNK)
    scaled, whole = (scratch(name, chunk, torch.float32).numpy() for name in ("scaled", "whole"))
    cell = scratch("cell", chunk, torch.int64).numpy()
    narrow = scratch("narrow cell", chunk, torch.int32).numpy()
    found = scratch("found", chunk, torch.complex64).numpy()
    result = scratch("result", chunk, torch.float32).numpy()
    pending: list[tuple[int, int, np.ndarray, np.ndarray]] = []
    for index, row in enumerate(rows):
        row_pairs = pairs[index * width:(index + 1) * width]
        for first in range(0, values.shape[1], chunk):
            source = values[row, first:first + chunk]
            n = source.size
            fraction, part, at, got = scaled[:n], whole[:n], cell[:n], found[:n]
            at32 = narrow[:n]
            np.multiply(source, np.float32(CELLS), out=fraction)
            np.clip(fraction, 0, CELLS, out=fraction)
            np.floor(fraction, out=part)
            fraction -= part  # exact in float32 (np.modf would be several times slower)
            at32[...] = part  # float32 -> int32 -> int64: twice as fast as one cast
            at[...] = at32
            np.take(row_pairs, at, out=got, mode="wrap")
            np.multiply(got.imag, fraction, out=fraction)
            if not bent_rows[index]:
                np.add(got.real, fraction, out=out[row, first:first + n])
                continue
            target = result[:n]
            np.add(got.real, fraction, out=target)
            bent = np.flatnonzero(target > 2.0)  # _UNSURE marks the cells to search
            if bent.size:
                pending.append((index, row, first + bent, source[bent].copy()))
            out[row, first:first + n] = target
    if pending:
        table_rows = torch.tensor(np.concatenate(
            [np.full(len(where), index) for index, _, where, _ in pending]))
        exact = _search(torch.from_numpy(np.concatenate([v for *_, v in pending])),
                        table_rows, xs, ys).float().numpy()
        start = 0
        for _, row, where, _ in pending:
            out[row, where] = exact[start:start + where.size]
            start += where.size


@dataclass(frozen=True)
class _Table:
    """f at the CELLS + 1 edges of each row (start) and its rise across each cell (rise;
    _UNSURE where the chord is off by more than CHORD_TOLERANCE, 0 after the last edge);
    both flat (S * (CELLS + 1),) float32."""

    start: torch.Tensor
    rise: torch.Tensor

    @classmethod
    def build(cls, xs: torch.Tensor, ys: torch.Tensor) -> _Table:
        rows, points = xs.shape
        xs, ys = xs.double(), ys.double()
        slope = _slopes(xs, ys)
        # Curve points with x <= j / CELLS, by histogram and cumsum (CELLS is a power of two,
        # so x * CELLS is exact): the last of them starts the segment holding edge j.
        position = xs * CELLS
        edge_cell = position.ceil().long()
        edge_cell += torch.arange(rows, device=xs.device)[:, None] * (CELLS + 2)
        below = torch.bincount(edge_cell.view(-1), minlength=rows * (CELLS + 2))
        segment = (below.view(rows, CELLS + 2)[:, :-1].cumsum(dim=1) - 1).clamp_(0, points - 1)
        edges = torch.arange(CELLS + 1, dtype=torch.float64, device=xs.device) / CELLS
        start = ys.gather(1, segment) + slope.gather(1, segment) * (edges - xs.gather(1, segment))
        rise = start.diff(dim=1)
        # Both f and the chord are linear between curve points, so the chord's worst error
        # in a cell is at one of the curve points inside it.
        cell = position.floor().long().clamp_(0, CELLS - 1)
        chord = start.gather(1, cell) + (position - cell) * rise.gather(1, cell)
        error = torch.zeros_like(rise).scatter_reduce_(1, cell, (ys - chord).abs(), "amax")
        rise = torch.where(error > CHORD_TOLERANCE, _UNSURE, rise)
        rise = torch.cat([rise, torch.zeros_like(rise[:, :1])], dim=1)  # edge 1: f(1) exactly
        return cls(start=start.float().view(-1), rise=rise.float().view(-1))


def _slopes(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """(S, K) slope of the segment starting at each point; 0 for zero-width segments and the
    last point."""
    width, rise = xs.diff(dim=1), ys.diff(dim=1)
    slope = torch.where(width > 0, rise / torch.where(width > 0, width, 1.0), 0.0)
    return torch.cat([slope, torch.zeros_like(slope[:, :1])], dim=1)


def _search(values: torch.Tensor, rows: torch.Tensor, xs: torch.Tensor,
            ys: torch.Tensor) -> torch.Tensor:
    """Exact interpolation of a few (value, row) pairs, float64: one ``searchsorted`` over all
    rows at once, each row's curve shifted by 2 * row so the concatenation stays sorted."""
    xs, ys = xs.double(), ys.double()
    shift = 2.0 * torch.arange(xs.shape[0], dtype=torch.float64, device=xs.device)
    values = values.double().clamp(0.0, 1.0)
    segment = torch.searchsorted((xs + shift[:, None]).view(-1), values + shift[rows],
                                 right=True) - 1
    x0, y0, slope = xs.view(-1), ys.view(-1), _slopes(xs, ys).view(-1)
    return y0[segment] + slope[segment] * (values - x0[segment])


def apply_nonlinear(cubes: torch.Tensor, params: NonlinearParams, *,
                    points: int = DEFAULT_POINTS) -> torch.Tensor:
    """Map the intensities of the selected samples of ``cubes``; returns a new tensor."""
    return apply_nonlinear_(cubes.clone(memory_format=torch.contiguous_format), params,
                            points=points)


def apply_nonlinear_(cubes: torch.Tensor, params: NonlinearParams, *,
                     points: int = DEFAULT_POINTS) -> torch.Tensor:
    """``apply_nonlinear`` in place: modifies and returns ``cubes``."""
    spatial_shape(cubes)
    if params.samples.numel() == 0:
        return cubes
    samples = params.samples.to(cubes.device)
    xs, ys = bezier_curves(params.controls.to(cubes.device), params.invert.to(cubes.device),
                           points)
    if numpy_ready(cubes) and cubes.dtype == torch.float32 and cubes.is_contiguous():
        flat = cubes.view(cubes.shape[0], -1).numpy()  # mapped row by row, in place
        _read_numpy(flat, samples.tolist(), _Table.build(xs, ys), xs, ys, flat)
        return cubes
    values = take(cubes, samples).reshape(samples.numel(), -1)
    mapped = lookup(values, xs, ys).view(-1, *cubes.shape[1:]).to(cubes.dtype)
    return cubes.index_copy_(0, samples, mapped)


def nonlinear(cubes: torch.Tensor, generator: torch.Generator, *,
              apply: torch.Tensor | None = None, invert_rate: float = 0.5,
              points: int = DEFAULT_POINTS) -> torch.Tensor:
    """Apply a random Bezier intensity map to each applied sample; see ``sample_nonlinear``."""
    params = sample_nonlinear(cubes.shape[0], generator, apply=apply, invert_rate=invert_rate)
    return apply_nonlinear(cubes, params, points=points)
