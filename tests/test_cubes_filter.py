"""The tissue filter: integral-image scores equal the definition; accept/reject is right."""

from __future__ import annotations

import numpy as np
import pytest

from genesis.cubes.extract import CubeSettings, choose_corners
from genesis.cubes.intensity import ct_window
from genesis.cubes.tissue_filter import (
    ForegroundFilter,
    TissueFilter,
    direct_tissue_score,
    doubled_column_scores,
    integral_image,
    reference_tissue_score,
    window_sums,
)

T = CubeSettings().tissue_threshold


def test_threshold_is_the_papers_and_exact_at_minus_150_hu() -> None:
    assert abs(T - (-150 + 1000) / 2000) < 1e-7
    hu = np.array([-150.0, -150.5, -149.5], np.float32)
    assert (ct_window(hu) >= T).tolist() == [True, False, True]


def test_first_hit_weights() -> None:
    # One column, cube depth 4: d=0 hit at k=0 (1), d=1 first hit at k=2 (0),
    # d=2 first hit at k=1 (0.5), d=3 hit at k=0 (1).
    column = np.array([0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1], np.float32)[None, None]
    assert reference_tissue_score(column, T, 4) == 2.5
    assert direct_tissue_score(column, T, 4) == 2.5
    assert doubled_column_scores(column, T)[0, 0].tolist() == [2, 0, 1, 2, 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_integral_scores_equal_direct_and_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    volume = rng.uniform(0.3, 0.55, size=(17, 15, 19)).astype(np.float32)  # around t
    size = (6, 5, 7)
    tissue = TissueFilter.for_scan(volume, size, T, 0.15)
    corners = rng.integers(0, [17 - 6, 15 - 5, 19 - 7 - 3], size=(40, 3), endpoint=True)
    fast = tissue.scores(corners)
    for corner, score in zip(corners, fast, strict=True):
        x, y, z = corner
        window = volume[x : x + 6, y : y + 5, z : z + 10]
        assert score == direct_tissue_score(window, T, 7)
        assert score == reference_tissue_score(window, T, 7)
    assert len(set(fast.tolist())) > 5  # the volume really exercises the filter


def test_window_sums_are_exact_box_sums() -> None:
    rng = np.random.default_rng(5)
    values = rng.integers(0, 3, size=(9, 8, 7)).astype(np.uint8)
    table = integral_image(values)
    assert table.dtype == np.int32 and table.shape == (10, 9, 8)
    corners = rng.integers(0, 4, size=(30, 3))
    sums = window_sums(table, corners, (5, 4, 3))
    expected = [values[x : x + 5, y : y + 4, z : z + 3].sum() for x, y, z in corners]
    assert sums.tolist() == expected


def lung_and_tissue(rng: np.random.Generator) -> np.ndarray:
    """A scaled volume: lung (about -850 HU) on one side, soft tissue on the other."""
    hu = np.full((40, 36, 30), -850.0, np.float32)
    hu[20:] = 40.0
    hu += rng.normal(0, 120, hu.shape).astype(np.float32)
    return ct_window(hu)


def test_accepted_windows_meet_the_criterion_and_rejected_do_not() -> None:
    rng = np.random.default_rng(7)
    scaled = lung_and_tissue(rng)
    size = (10, 10, 6)
    limit = 0.15 * 10 * 10 * 6
    tissue = TissueFilter.for_scan(scaled, size, T, 0.15)
    corners = rng.integers(0, [30, 26, 21], size=(60, 3), endpoint=True)
    accepted = tissue.accepts(corners)
    assert 0 < accepted.sum() < len(corners)
    for corner, ok in zip(corners, accepted, strict=True):
        x, y, z = corner
        score = reference_tissue_score(scaled[x : x + 10, y : y + 10, z : z + 9], T, 6)
        assert (score <= limit) == ok


def test_chosen_corners_pass_the_reference_filter() -> None:
    rng = np.random.default_rng(8)
    scaled = lung_and_tissue(rng)
    settings = CubeSettings(
        cube_size=(10, 10, 6), border=(2, 2, 1), cubes_per_scan=6, min_slices=10
    )
    tissue = TissueFilter.for_scan(scaled, settings.cube_size, T, 0.15)
    corners, attempts = choose_corners(tissue, scaled.shape, settings, rng)
    assert len(corners) == 6 and attempts >= 6
    for x, y, z in corners:
        assert 2 <= x <= 40 - 10 - 2 and 1 <= z <= 30 - 9 - 1
        window = scaled[x : x + 10, y : y + 10, z : z + 9]
        assert reference_tissue_score(window, T, 6) <= 0.15 * 600


class EveryThird:
    """A stand-in filter that accepts candidates 2, 5, 8, ... in draw order."""

    def __init__(self) -> None:
        self.seen = 0

    def accepts(self, corners: np.ndarray) -> np.ndarray:
        index = np.arange(self.seen, self.seen + len(corners))
        self.seen += len(corners)
        return index % 3 == 2


@pytest.mark.parametrize(("attempts_per_cube", "found", "attempts"), [(50, 4, 12), (1, 1, 4)])
def test_attempts_are_counted_one_by_one(attempts_per_cube: int, found: int, attempts: int) -> None:
    settings = CubeSettings(
        cube_size=(2, 2, 2),
        border=(0, 0, 0),
        min_slices=5,
        cubes_per_scan=4,
        attempts_per_cube=attempts_per_cube,
    )
    corners, used = choose_corners(EveryThird(), (10, 10, 10), settings, np.random.default_rng(0))
    assert (len(corners), used) == (found, attempts)


def test_nothing_accepted_uses_the_whole_budget() -> None:
    class Never:
        def accepts(self, corners: np.ndarray) -> np.ndarray:
            return np.zeros(len(corners), bool)

    settings = CubeSettings(cube_size=(2, 2, 2), border=(0, 0, 0), min_slices=5, cubes_per_scan=7)
    corners, used = choose_corners(Never(), (10, 10, 10), settings, np.random.default_rng(0))
    assert len(corners) == 0 and used == 50 * 7


def test_foreground_filter_counts() -> None:
    scaled = np.zeros((12, 12, 12), np.float32)
    scaled[:6] = 0.8
    fg = ForegroundFilter.for_scan(scaled, (6, 6, 6), 0.05, 0.5)
    assert fg.accepts(np.array([[0, 0, 0], [3, 0, 0], [4, 0, 0], [6, 0, 0]])).tolist() == [
        True,
        True,
        False,
        False,
    ]
