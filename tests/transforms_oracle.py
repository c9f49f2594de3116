"""Plain per-sample NumPy reference of the four Models Genesis transformations (facts §2).

Written straight from the description, one cube at a time, with the same loops the facts
describe: the independent reimplementation the batched torch ops are tested against, and the
speed baseline of ``benchmarks/transforms.py``. Cubes are (X, Y, Z) float arrays in [0, 1].
Obviously correct beats fast here.
"""

from __future__ import annotations

import numpy as np

Box = tuple[tuple[int, int, int], tuple[int, int, int]]  # (size, lowest corner)


def flip_pair(
    x: np.ndarray, y: np.ndarray, rng: np.random.Generator, rate: float = 0.4, max_flips: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_flips`` times while rand < rate: flip both along a random axis."""
    for _ in range(max_flips):
        if rng.random() >= rate:
            break
        axis = int(rng.integers(0, 3))
        x, y = np.flip(x, axis), np.flip(y, axis)
    return x.copy(), y.copy()


def shuffle_block(rng: np.random.Generator, shape: tuple[int, ...]) -> Box:
    """Block edge randint(1, n // 10) per axis, corner uniform with the block inside."""
    size = tuple(int(rng.integers(1, n // 10, endpoint=True)) for n in shape)
    corner = tuple(
        int(rng.integers(0, n - s, endpoint=True)) for n, s in zip(shape, size, strict=True)
    )
    return size, corner  # type: ignore[return-value]


def local_pixel_shuffle(
    x: np.ndarray, rng: np.random.Generator, blocks: int = 10_000
) -> np.ndarray:
    """Each block: read from the untransformed cube, permute its voxels, write to the output."""
    out = x.copy()
    for _ in range(blocks):
        (sx, sy, sz), (cx, cy, cz) = shuffle_block(rng, x.shape)
        window = x[cx : cx + sx, cy : cy + sy, cz : cz + sz]
        out[cx : cx + sx, cy : cy + sy, cz : cz + sz] = rng.permutation(window.ravel()).reshape(
            window.shape
        )
    return out


def bezier_curve(
    p1: np.ndarray, p2: np.ndarray, points: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """Cubic Bezier through control points (0, 0), p1, p2, (1, 1), sampled at ``points`` t."""
    t = np.linspace(0.0, 1.0, points)
    b1, b2, b3 = 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
    return b1 * p1[0] + b2 * p2[0] + b3, b1 * p1[1] + b2 * p2[1] + b3


def nonlinear(
    x: np.ndarray, rng: np.random.Generator, points: int = 100_000, invert_rate: float = 0.5
) -> np.ndarray:
    """Bezier intensity map: x values sorted; y sorted too, or reversed to invert."""
    p1, p2 = rng.random(2), rng.random(2)
    xs, ys = bezier_curve(p1, p2, points)
    xs, ys = np.sort(xs), np.sort(ys)
    if rng.random() < invert_rate:
        ys = ys[::-1]
    return np.interp(x, xs, ys)


def inpaint_hole(rng: np.random.Generator, shape: tuple[int, ...], margin: int = 3) -> Box:
    """Hole edge in [n // 6, n // 3] per axis, placed inside the margin."""
    size = tuple(int(rng.integers(n // 6, n // 3, endpoint=True)) for n in shape)
    corner = tuple(
        int(rng.integers(margin, n - s - margin, endpoint=True))
        for n, s in zip(shape, size, strict=True)
    )
    return size, corner  # type: ignore[return-value]


def outpaint_window(rng: np.random.Generator, shape: tuple[int, ...], margin: int = 3) -> Box:
    """Window edge n - randint(3n // 7, 4n // 7) per axis, placed inside the margin."""
    size = tuple(n - int(rng.integers(3 * n // 7, 4 * n // 7, endpoint=True)) for n in shape)
    corner = tuple(
        int(rng.integers(margin, n - s - margin, endpoint=True))
        for n, s in zip(shape, size, strict=True)
    )
    return size, corner  # type: ignore[return-value]


def _box(box: Box) -> tuple[slice, slice, slice]:
    (sx, sy, sz), (cx, cy, cz) = box
    return slice(cx, cx + sx), slice(cy, cy + sy), slice(cz, cz + sz)


def in_painting(
    x: np.ndarray,
    rng: np.random.Generator,
    max_holes: int = 5,
    continue_rate: float = 0.95,
    margin: int = 3,
) -> np.ndarray:
    """Up to ``max_holes`` holes while rand < continue_rate, each filled with noise."""
    out = x.copy()
    for _ in range(max_holes):
        if rng.random() >= continue_rate:
            break
        box = inpaint_hole(rng, x.shape, margin)
        out[_box(box)] = rng.random(box[0])
    return out


def out_painting(
    x: np.ndarray,
    rng: np.random.Generator,
    max_windows: int = 5,
    continue_rate: float = 0.95,
    margin: int = 3,
) -> np.ndarray:
    """Noise cube; copy back one window, then more while rand < continue_rate."""
    out = rng.random(x.shape)
    for count in range(max_windows):
        if count > 0 and rng.random() >= continue_rate:
            break
        window = _box(outpaint_window(rng, x.shape, margin))
        out[window] = x[window]
    return out


def genesis_pair(
    cube: np.ndarray,
    rng: np.random.Generator,
    *,
    flip_rate: float = 0.4,
    local_shuffle_rate: float = 0.5,
    nonlinear_rate: float = 0.9,
    paint_rate: float = 0.9,
    inpaint_rate: float = 0.2,
    blocks: int = 10_000,
    points: int = 100_000,
) -> tuple[np.ndarray, np.ndarray]:
    """(input, target) for one cube: flip both, then shuffle, non-linear, paint the input."""
    x, y = flip_pair(cube, cube, rng, flip_rate)
    if rng.random() < local_shuffle_rate:
        x = local_pixel_shuffle(x, rng, blocks)
    if rng.random() < nonlinear_rate:
        x = nonlinear(x, rng, points)
    if rng.random() < paint_rate:
        x = in_painting(x, rng) if rng.random() < inpaint_rate else out_painting(x, rng)
    return x, y
