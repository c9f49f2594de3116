"""Non-linear intensity transform: monotone Bezier maps, inversions, lookup accuracy."""

from __future__ import annotations

import importlib

import numpy as np
import torch
import transforms_oracle as oracle

from genesis.transforms import (
    NonlinearParams,
    apply_nonlinear,
    bezier_curves,
    nonlinear,
    sample_nonlinear,
)
from genesis.transforms.nonlinear import CELLS, _Table, lookup


def ramp(n: int, shape: tuple[int, int, int] = (8, 8, 8)) -> torch.Tensor:
    """Every sample holds 0, 1 and evenly spaced values in between, in raster order."""
    count = int(np.prod(shape))
    return torch.linspace(0, 1, count).view(1, 1, *shape).expand(n, 1, *shape).contiguous()


def test_maps_are_monotone_with_the_right_end_points() -> None:
    generator = torch.Generator().manual_seed(0)
    params = sample_nonlinear(200, generator)
    out = apply_nonlinear(ramp(200), params).view(200, -1)
    steps = out.diff(dim=1)
    invert = params.invert
    assert (steps[~invert] >= 0).all() and (steps[invert] <= 0).all()
    assert torch.equal(out[:, 0], invert.float()) and torch.equal(out[:, -1], 1 - invert.float())
    assert ((out >= 0) & (out <= 1)).all()


def test_inverted_about_half_the_time() -> None:
    n = 10_000
    invert = sample_nonlinear(n, torch.Generator().manual_seed(1)).invert.float().mean()
    assert abs(invert.item() - 0.5) < 4 * np.sqrt(0.25 / n)


def test_lookup_equals_searchsorted_interpolation() -> None:
    """The grid-accelerated search finds the same segment as torch.searchsorted."""
    generator = torch.Generator().manual_seed(2)
    for points in (64, 4096):
        params = sample_nonlinear(16, generator)
        # Steep curves need the most search steps: make some control points extreme.
        params.controls[:4, 0, 0] = torch.tensor([0.0, 1e-4, 1e-3, 0.02])
        params.controls[4:8, 1, 0] = torch.tensor([1.0, 0.9999, 0.999, 0.98])
        xs, ys = bezier_curves(params.controls, params.invert, points)
        values = torch.rand((16, 5000), generator=generator)
        values[:, :4] = torch.tensor([0.0, 1.0, 0.5, 0.25])
        values[:, 4:24] = xs[:, 1:21].float()  # exactly on curve points
        xs32, ys32 = xs.float(), ys.float()
        right = torch.searchsorted(xs32, values, right=True).clamp(1, points - 1)
        x0, x1 = xs32.gather(1, right - 1), xs32.gather(1, right)
        y0, y1 = ys32.gather(1, right - 1), ys32.gather(1, right)
        weight = torch.where(x1 > x0, (values - x0) / (x1 - x0).clamp(min=1e-30), 0)
        expected = y0 + weight * (y1 - y0)
        assert torch.allclose(lookup(values, xs, ys), expected, atol=2e-6, rtol=0)


def test_fewer_curve_points_than_the_release_deviate_negligibly() -> None:
    """4,096 curve points against the release's 100,000 (np.interp in float64)."""
    generator = torch.Generator().manual_seed(3)
    params = sample_nonlinear(60, generator)
    values = torch.rand((60, 4000), generator=generator, dtype=torch.float64)
    values[:, :3] = torch.tensor([0.0, 1.0, 1e-6], dtype=torch.float64)
    ours = lookup(values.float(), *bezier_curves(params.controls, params.invert, 4096))
    worst = 0.0
    for row in range(60):
        p1, p2 = params.controls[row].double().numpy()
        xs, ys = oracle.bezier_curve(p1, p2, 100_000)
        ys = np.sort(ys)[::-1] if params.invert[row] else np.sort(ys)
        theirs = np.interp(values[row].numpy(), np.sort(xs), ys)
        worst = max(worst, float(np.abs(ours[row].double().numpy() - theirs).max()))
    assert worst < 1e-4  # below float16 storage (2.4e-4); 0.2 HU in the CT window


def test_apply_mask_replay_and_dtype() -> None:
    x = torch.rand((4, 1, 6, 6, 6), generator=torch.Generator().manual_seed(4)).half()
    before = x.clone()
    apply = torch.tensor([True, False, False, True])
    a = nonlinear(x, torch.Generator().manual_seed(5), apply=apply)
    b = nonlinear(x, torch.Generator().manual_seed(5), apply=apply)
    assert a.dtype == torch.float16 and torch.equal(a, b) and torch.equal(x, before)
    assert torch.equal(a[~apply], x[~apply]) and not torch.equal(a[apply], x[apply])


def test_identity_curve_is_identity() -> None:
    """P1, P2 on the diagonal make the curve y = x: the lookup must return its input."""
    params = NonlinearParams(
        samples=torch.arange(2),
        controls=torch.tensor([[[0.25, 0.25], [0.75, 0.75]]] * 2),
        invert=torch.tensor([False, True]),
    )
    x = ramp(2)
    out = apply_nonlinear(x, params)
    assert torch.allclose(out[0], x[0], atol=1e-6)
    assert torch.allclose(out[1], 1 - x[1], atol=1e-6)


def test_cells_the_chord_does_not_fit_are_searched_exactly() -> None:
    """A steep start (P1 near the y axis) bends the map inside single table cells; voxels
    there must still get the exact interpolation, not the cell's chord."""
    params = NonlinearParams(
        samples=torch.arange(2),
        controls=torch.tensor([[[1e-4, 0.9], [0.3, 0.95]]] * 2),
        invert=torch.tensor([False, True]),
    )
    xs, ys = bezier_curves(params.controls, params.invert, 4096)
    width = 1 / CELLS
    unsure = _Table.build(xs, ys).rise.view(2, -1) > 2.0
    assert unsure[:, 0].all()  # the first cell is bent, so it is searched
    values = torch.linspace(0, width, 257)[1:-1].expand(2, -1)
    for row in range(2):
        x, y, v = xs[row].numpy(), ys[row].numpy(), values[row].double().numpy()
        expected = np.interp(v, x, y)
        chord = np.interp(v, [0, width], np.interp([0, width], x, y))
        assert np.abs(expected - chord).max() > 1e-4  # a chord lookup would be far off
        ours = lookup(values[row : row + 1], xs[row : row + 1], ys[row : row + 1])[0]
        assert np.abs(ours.double().numpy() - expected).max() < 1e-6


def test_torch_and_numpy_table_reads_agree() -> None:
    """The GPU read (torch) and the CPU read (NumPy) of the table, both run on CPU."""
    from genesis.transforms.nonlinear import _read_numpy, _read_torch

    generator = torch.Generator().manual_seed(6)
    params = sample_nonlinear(5, generator)
    xs, ys = bezier_curves(params.controls, params.invert, 4096)
    table = _Table.build(xs, ys)
    values = torch.rand((5, 3000), generator=generator)
    values[:, :2] = torch.tensor([0.0, 1.0])
    numpy_read = torch.empty_like(values)
    _read_numpy(values.numpy(), range(5), table, xs.numpy(), ys.numpy(), numpy_read.numpy())
    torch_read, bent = _read_torch(values.clone(), table)
    sure = ~bent.view(5, -1)  # the NumPy read has already searched the bent cells
    assert torch.allclose(numpy_read[sure], torch_read.view(5, -1)[sure], atol=1e-6, rtol=0)


def test_accelerator_lookup_is_exact_for_any_input_type() -> None:
    """The torch path of ``lookup`` (run on CPU here) gives np.interp through the curve for
    float32, float16, bfloat16 and grad-tracking values, bent cells and values so close to a
    cell edge that the bent cell's huge rise times their fraction stays below 1 included."""
    from genesis.transforms.nonlinear import _lookup_torch

    params = NonlinearParams(
        samples=torch.arange(2),
        controls=torch.tensor([[[1e-4, 0.9], [0.3, 0.95]], [[0.2, 0.1], [0.7, 0.8]]]),
        invert=torch.tensor([True, False]),
    )
    xs, ys = (a.numpy() for a in bezier_curves(params.controls, params.invert, 4096))
    table = _Table.build(xs, ys)
    assert table.bent_rows == [True, False]
    values = torch.rand((2, 400), generator=torch.Generator().manual_seed(9))
    values[:, :4] = torch.tensor([0.0, 1.0, 1e-34, 1 / CELLS / 3])  # tiny, in the bent cell
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        typed = values.to(dtype).detach().requires_grad_(dtype == torch.float32)
        ours = _lookup_torch(typed.detach(), table, xs, ys).double().numpy()
        exact = typed.detach().double().numpy()
        for row in range(2):
            expected = np.interp(exact[row], xs[row], ys[row])
            assert np.abs(ours[row] - expected).max() < 1e-6, dtype
        cpu = lookup(typed, xs, ys)  # the NumPy path, for the same inputs
        assert torch.equal(cpu, lookup(typed.detach().float(), xs, ys))
        assert np.abs(cpu.double().numpy() - ours).max() < 1e-6


def test_in_place_cpu_map_equals_the_generic_path(monkeypatch) -> None:
    """The CPU fast path maps the selected cubes in place, chunk by chunk, and must give
    what ``lookup`` gives on copies, bent cells included, across chunk edges."""
    # The package's ``nonlinear`` function shadows the submodule's name.
    module = importlib.import_module("genesis.transforms.nonlinear")
    monkeypatch.setattr(module, "_CHUNK", 100)  # many chunks, a short last one
    cubes = torch.rand((4, 1, 8, 8, 5), generator=torch.Generator().manual_seed(7))
    params = NonlinearParams(
        samples=torch.tensor([0, 2, 3]),
        controls=torch.tensor(
            [[[1e-4, 0.9], [0.3, 0.95]], [[0.2, 0.1], [0.7, 0.8]], [[1e-4, 0.9], [0.3, 0.95]]]
        ),
        invert=torch.tensor([False, False, True]),
    )
    cubes[0, 0, 0, 0] = torch.linspace(0, 1 / CELLS, 5)  # inside the bent first cell
    xs, ys = bezier_curves(params.controls, params.invert, 4096)
    assert (_Table.build(xs, ys).rise.view(3, -1) > 2.0).any(dim=1).tolist() == [True, False, True]
    expected = cubes.clone()
    expected[params.samples] = lookup(cubes[params.samples].reshape(3, -1), xs, ys).view(
        3, 1, 8, 8, 5
    )
    work = cubes.clone()
    assert module.apply_nonlinear_(work, params) is work
    assert torch.equal(work, expected)
