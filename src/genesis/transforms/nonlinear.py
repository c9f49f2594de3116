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
from genesis.transforms._shape import distinct, numpy_ready, spatial_shape, take
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


def sample_nonlinear(
    n: int,
    generator: torch.Generator,
    *,
    apply: torch.Tensor | None = None,
    invert_rate: float = 0.5,
) -> NonlinearParams:
    """P1, P2 uniform in the unit square; inverted with probability ``invert_rate``."""
    samples = selected(apply, n, generator.device)
    count = samples.numel()
    controls = uniform(generator, (count, 2, 2))
    invert = uniform(generator, (count,)) < invert_rate
    return NonlinearParams(samples=samples, controls=controls, invert=invert)


def bezier_curves(
    controls: torch.Tensor, invert: torch.Tensor, points: int = DEFAULT_POINTS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled maps (xs, ys), each (S, points) float64 on the controls' device: xs increasing
    from 0 to 1, ys = f(xs); see ``_curves``."""
    xs, ys = _curves(controls, invert, points)
    return torch.from_numpy(xs).to(controls.device), torch.from_numpy(ys).to(controls.device)


def _curves(
    controls: torch.Tensor, invert: torch.Tensor, points: int
) -> tuple[np.ndarray, np.ndarray]:
    """NumPy float64 (xs, ys) for (S, 2, 2) controls and (S,) bool ``invert`` on any device.

    With control points in the unit square, x(t) and y(t) are non-decreasing in t, so
    sorting the sampled values (as the release does) keeps t order up to rounding; reading
    y in reverse t order gives the decreasing map. Float64, so the end points are exact.
    The curves and their table are a few thousand numbers per map: NumPy builds them with a
    fraction of torch's per-op overhead, on CPU for every device.
    """
    controls = controls.detach().cpu().double().numpy()
    invert = invert.detach().cpu().numpy()
    b1, b2, b3 = _bernstein(points)
    xs = controls[:, 0, 0, None] * b1 + controls[:, 1, 0, None] * b2 + b3
    ys = controls[:, 0, 1, None] * b1 + controls[:, 1, 1, None] * b2 + b3
    # Where the curve is flat, rounding could undo the order: restore it (the sort).
    np.maximum.accumulate(xs, axis=1, out=xs)
    np.maximum.accumulate(ys, axis=1, out=ys)
    ys[invert] = ys[invert, ::-1]
    return xs, ys


@functools.lru_cache(maxsize=4)
def _bernstein(points: int) -> np.ndarray:
    """(3, points) float64 weights of P1, P2 and P3 = (1, 1) at evenly spaced t in [0, 1]."""
    t = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    weights = torch.stack([3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3]).numpy()
    weights.flags.writeable = False  # shared by every call
    return weights


def _float64(array: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().double().numpy()
    return np.asarray(array, dtype=np.float64)


def lookup(
    values: torch.Tensor, xs: torch.Tensor | np.ndarray, ys: torch.Tensor | np.ndarray
) -> torch.Tensor:
    """Piecewise-linear f(values) through the points (xs, ys) of each row, like ``np.interp``.

    values (S, V) are clamped to [0, 1]; xs (S, K) is non-decreasing from 0 to 1 and ys = f(xs).
    Each voxel reads f from a uniform table of ``CELLS`` cells per row: the values at the
    cell's two edges, interpolated linearly. That is exact wherever f is straight across a
    cell, and every other cell is checked: where the chord departs from f by more than
    ``CHORD_TOLERANCE`` (steep, strongly bent parts of a curve), the voxels inside it fall
    back to an exact binary search. So the result equals ``np.interp`` through (xs, ys) to
    within 1e-6 everywhere, 0 and 1 map exactly onto the end points, and the common case is
    one read from a table small enough for the L2 cache. Returns a new float32 (S, V).
    """
    rows, count = values.shape
    values = values.detach()  # a map of the data, never part of a graph
    xs, ys = _float64(xs), _float64(ys)
    table = _Table.build(xs, ys)
    if values.device.type != "cpu":
        return _lookup_torch(values, table, xs, ys)
    out = torch.empty(rows * count)
    _read_numpy(
        values.float().contiguous().numpy(),
        range(rows),
        table,
        xs,
        ys,
        out.numpy().reshape(rows, count),
    )
    return out.view(rows, count)


def _lookup_torch(
    values: torch.Tensor, table: _Table, xs: np.ndarray, ys: np.ndarray
) -> torch.Tensor:
    """The accelerator path of ``lookup``, in torch ops on the values' device: the table
    read, then the exact search for the voxels of bent cells."""
    rows, count = values.shape
    values = values.float()
    out, bent = _read_torch(values, table)
    if bent.any():
        where = bent.nonzero().squeeze(1)
        exact = _search(
            values.reshape(-1)[where].cpu().numpy(), (where // count).cpu().numpy(), xs, ys
        )
        out[where] = torch.from_numpy(exact).to(out.device, torch.float32)
    return out.view(rows, count)


def _read_torch(values: torch.Tensor, table: _Table) -> tuple[torch.Tensor, torch.Tensor]:
    """(S * V,) start + fraction * rise of each value's cell, and (S * V,) bool: True in
    the cells whose rise is _UNSURE, whose voxels need the exact search."""
    scaled = values.clamp(0.0, 1.0).mul_(CELLS)
    cell = scaled.long()
    within = scaled.sub_(cell)  # fraction of the cell, exact in float32
    cell += torch.arange(values.shape[0], device=cell.device)[:, None] * (CELLS + 1)
    cell = cell.view(-1)
    start, rise = table.start.to(values.device), table.rise.to(values.device)
    rises = rise.index_select(0, cell)
    return start.index_select(0, cell).addcmul_(within.view(-1), rises), rises > 2.0


# Voxels per NumPy pass on CPU (about 30 bytes of scratch each): a whole 64x64x32 cube at
# a time measured fastest; L2-sized chunks of 8-32 K voxels cost more calls than they
# saved in cache misses.
_CHUNK = 131_072


def _read_numpy(
    values: np.ndarray,
    rows: Sequence[int],
    table: _Table,
    xs: np.ndarray,
    ys: np.ndarray,
    out: np.ndarray,
) -> None:
    """The CPU read: out[rows[i]] = f_i(values[rows[i]]) for table row i, exact everywhere.

    values and out are float32 (N, V) and may be the same array (in place). The work runs
    row by row, in chunks of at most ``_CHUNK`` voxels; start and rise sit side by side in
    one complex64 table, so a voxel costs one gather (``take`` with int64 cells and mode
    "wrap": no index conversion, no bounds checks). Voxels of cells with an _UNSURE rise get
    the exact search, from the original values kept aside before they are overwritten.
    """
    width = CELLS + 1
    pairs, bent_rows = table.pairs, table.bent_rows
    chunk = min(values.shape[1], _CHUNK)
    scaled, whole = (scratch(name, chunk, torch.float32).numpy() for name in ("scaled", "whole"))
    cell = scratch("cell", chunk, torch.int64).numpy()
    narrow = scratch("narrow cell", chunk, torch.int32).numpy()
    found = scratch("found", chunk, torch.complex64).numpy()
    result = scratch("result", chunk, torch.float32).numpy()
    pending: list[tuple[int, int, np.ndarray, np.ndarray]] = []
    for index, row in enumerate(rows):
        row_pairs = pairs[index * width : (index + 1) * width]
        for first in range(0, values.shape[1], chunk):
            source = values[row, first : first + chunk]
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
                np.add(got.real, fraction, out=out[row, first : first + n])
                continue
            target = result[:n]
            np.add(got.real, fraction, out=target)
            bent = np.flatnonzero(got.imag > 2.0)  # _UNSURE rises mark the cells to search
            if bent.size:
                pending.append((index, row, first + bent, source[bent].copy()))
            out[row, first : first + n] = target
    if pending:
        table_rows = np.concatenate([np.full(len(where), index) for index, _, where, _ in pending])
        exact = _search(np.concatenate([v for *_, v in pending]), table_rows, xs, ys)
        start = 0
        for _, row, where, _ in pending:
            out[row, where] = exact[start : start + where.size]
            start += where.size


@dataclass(frozen=True)
class _Table:
    """f at the CELLS + 1 edges of each row (start) and its rise across each cell (rise;
    _UNSURE where the chord is off by more than CHORD_TOLERANCE, 0 after the last edge),
    side by side as flat (S * (CELLS + 1),) complex64 start + i * rise (``pairs``: one
    gather per voxel on CPU); ``start`` and ``rise`` are float32 tensor views of it.
    ``bent_rows``: the rows with an _UNSURE cell.
    """

    pairs: np.ndarray
    bent_rows: list[bool]

    @property
    def start(self) -> torch.Tensor:
        return torch.view_as_real(torch.from_numpy(self.pairs))[:, 0]

    @property
    def rise(self) -> torch.Tensor:
        return torch.view_as_real(torch.from_numpy(self.pairs))[:, 1]

    @classmethod
    def build(cls, xs: torch.Tensor | np.ndarray, ys: torch.Tensor | np.ndarray) -> _Table:
        xs, ys = _float64(xs), _float64(ys)
        rows, points = xs.shape
        row = np.arange(rows)[:, None]
        # Curve points with x <= j / CELLS, by histogram and cumsum (CELLS is a power of two,
        # so x * CELLS is exact): the last of them starts the segment holding edge j.
        position = xs * CELLS
        edge_cell = np.ceil(position).astype(np.int64)
        edge_cell += row * (CELLS + 2)
        below = np.bincount(edge_cell.ravel(), minlength=rows * (CELLS + 2))
        segment = below.reshape(rows, CELLS + 2)[:, :-1].cumsum(axis=1)
        segment -= 1
        np.clip(segment, 0, points - 1, out=segment)
        segment += row * points  # flat indices from here on
        edges = np.arange(CELLS + 1, dtype=np.float64) / CELLS
        start = ys.take(segment) + _slopes(xs, ys).take(segment) * (edges - xs.take(segment))
        rise = np.diff(start, axis=1)
        # Both f and the chord are linear between curve points, so the chord's worst error
        # in a cell is at one of the curve points inside it: a cell is bent when any of its
        # points is off by more than the tolerance.
        cell = np.floor(position).astype(np.int64)
        np.clip(cell, 0, CELLS - 1, out=cell)
        chord = start.take(cell + row * (CELLS + 1)) + (position - cell) * rise.take(
            cell + row * CELLS
        )
        off = np.abs(ys - chord) > CHORD_TOLERANCE
        bent = np.zeros((rows, CELLS), dtype=bool)
        bent[np.nonzero(off)[0], cell[off]] = True
        pairs = np.empty((rows, CELLS + 1), dtype=np.complex64)
        pairs.real = start
        pairs.imag[:, :-1] = rise
        pairs.imag[:, :-1][bent] = _UNSURE
        pairs.imag[:, -1] = 0.0  # edge 1: f(1) exactly
        return cls(pairs=pairs.ravel(), bent_rows=bent.any(axis=1).tolist())


def _slopes(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(S, K) slope of the segment starting at each point; 0 for zero-width segments and the
    last point."""
    width, rise = np.diff(xs, axis=1), np.diff(ys, axis=1)
    slope = np.zeros_like(xs)
    np.divide(rise, width, out=slope[:, :-1], where=width > 0)
    return slope


def _search(values: np.ndarray, rows: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Exact float64 interpolation of a few (value, row) pairs: one ``searchsorted`` over all
    rows at once, each row's curve shifted by 2 * row so the concatenation stays sorted."""
    shift = 2.0 * np.arange(xs.shape[0], dtype=np.float64)
    values = np.clip(values.astype(np.float64), 0.0, 1.0)
    segment = np.searchsorted((xs + shift[:, None]).ravel(), values + shift[rows], side="right") - 1
    x0, y0, slope = xs.ravel(), ys.ravel(), _slopes(xs, ys).ravel()
    return y0[segment] + slope[segment] * (values - x0[segment])


def apply_nonlinear(
    cubes: torch.Tensor, params: NonlinearParams, *, points: int = DEFAULT_POINTS
) -> torch.Tensor:
    """Map the intensities of the selected samples of ``cubes``; returns a new tensor."""
    return apply_nonlinear_(
        cubes.clone(memory_format=torch.contiguous_format), params, points=points
    )


def apply_nonlinear_(
    cubes: torch.Tensor, params: NonlinearParams, *, points: int = DEFAULT_POINTS
) -> torch.Tensor:
    """``apply_nonlinear`` in place: modifies and returns ``cubes``."""
    spatial_shape(cubes)
    if params.samples.numel() == 0:
        return cubes
    samples = params.samples.to(cubes.device)
    xs, ys = _curves(params.controls, params.invert, points)
    if numpy_ready(cubes) and cubes.dtype == torch.float32 and cubes.is_contiguous():
        flat = cubes.view(cubes.shape[0], -1).numpy()  # mapped row by row, in place
        _read_numpy(flat, distinct(samples), _Table.build(xs, ys), xs, ys, flat)
        torch.autograd.graph.increment_version(cubes)  # a NumPy write is invisible to torch
        return cubes
    values = take(cubes, samples).reshape(samples.numel(), -1)
    mapped = lookup(values, xs, ys).view(-1, *cubes.shape[1:]).to(cubes.dtype)
    return cubes.index_copy_(0, samples, mapped)


def nonlinear(
    cubes: torch.Tensor,
    generator: torch.Generator,
    *,
    apply: torch.Tensor | None = None,
    invert_rate: float = 0.5,
    points: int = DEFAULT_POINTS,
) -> torch.Tensor:
    """Apply a random Bezier intensity map to each applied sample; see ``sample_nonlinear``."""
    params = sample_nonlinear(cubes.shape[0], generator, apply=apply, invert_rate=invert_rate)
    return apply_nonlinear(cubes, params, points=points)
