"""Cut pretraining cubes from scans, one scan at a time, into a shard (facts §1).

The recipe, every number from ``CubeSettings``: window the intensities to [0, 1] (CT:
HU clipped to [-1000, 1000]); draw cube corners uniformly with a border kept clear
(100/100/30 voxels by default); cut X x Y x (Z + 3) windows (64 x 64 x 35) and apply the
tissue filter to them; keep the first Z slices of each accepted window; stop after N
accepted cubes (32) or 50 * N attempts, keeping what was accepted; skip scans with fewer
than ``min_slices`` slices or too small for cube plus border.

The 3 extra slices (``extra_slices``, the release's ``len_depth``): the tissue score of
cube slice d looks at slices d, d + 1 and d + 2, so the filter reads 2 slices past the
cube; the third is never read and only keeps the release's window depth (and with it
where corners may fall). The MRI filter and ``ct_filter: none`` read none of them.

Two recipes (``recipe``): ``paper`` uses ``border`` and ``min_slices`` as given (LUNA16
chest CT, 512 x 512 x ~100-700 slices). ``auto`` scales them to each scan: per axis the
border is the smaller of ``border`` and 10% of the scan, shrunk further if a window
would not fit, and the minimum slice count is the window depth plus twice the z border;
a scan is skipped only when one window does not fit. The manifest records the border and
minimum used for every scan.

Where this differs from the authors' release, on purpose:

- Randomness: each scan has its own ``numpy.random.Generator`` seeded with
  ``derive_seed(seed, source)``, so a shard is reproducible byte for byte and does not
  depend on the order or number of the other scans (the release seeded only Python's
  ``random``, shared across scans).
- Candidates are drawn in batches of ``BATCH`` and scored together with an integral image;
  attempts are still counted one by one, in draw order, so "give up after 50 * N" means
  the same. The batching only changes how the random stream is consumed.
- The filter compares against the threshold mapped through the same float32 window as
  the data, so "HU >= -150" holds exactly at the boundary.
- Output is float16 streamed to disk (see ``genesis.cubes.shards``), not one float64
  array per subset held in memory.
- Scans are not resampled (as in the release): cubes are cut at native voxel spacing.
- MRI (own data): per-volume percentile or min-max window and a foreground filter instead
  of the CT tissue filter; a 4D volume contributes one channel (``mri_channel``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from genesis.cubes.inputs import ScanInput
from genesis.cubes.intensity import Modality, ct_window, guess_modality, mri_bounds, scale_to_unit
from genesis.cubes.shards import (
    ShardAppender,
    failed_manifest_path,
    shard_writer,
    write_manifest,
)
from genesis.cubes.tissue_filter import AcceptAll, ForegroundFilter, TissueFilter, WindowFilter
from genesis.errors import InputError
from genesis.seeding import derive_seed
from genesis.settings import check_bounds, check_increasing, setting

log = logging.getLogger(__name__)

#: Candidate positions drawn and scored per vectorised step.
BATCH = 256
#: recipe auto: the border is at most this fraction of the scan, per axis.
AUTO_BORDER_FRACTION = 0.1
#: Windowed CT value at or below which a voxel is air outside the body (-950 HU in the
#: default window); a scan whose cubes are mostly that gets a warning.
OUTSIDE_AIR_HU = -950.0
MOSTLY_AIR = 0.5
MOSTLY_AIR_NOTE = "most cube voxels are air outside the body: the tissue filter keeps air/lung"

#: Why scans gave no cubes, by kind: how the summary counts them (and what to change).
SKIP_KINDS: dict[str, str] = {
    "slices": "with fewer slices than cubes.min_slices (set cubes.min_slices, or "
    "cubes.recipe: auto)",
    "size": "too small for the cube size (set cubes.border / min_slices, or cubes.recipe: auto)",
    "window": "smaller than one cube window (set a smaller cube_size)",
    "ct_filter": "where no window passed the CT tissue filter, which keeps air/lung cubes "
    "(for CT other than chest CT set cubes.ct_filter: none)",
    "mri_filter": "where no window had enough foreground (set cubes.mri_filter: none or "
    "lower cubes.mri_min_foreground)",
    "bad": "unreadable or with NaNs",
}


@dataclass(frozen=True)
class CubeSettings:
    """Settings of ``genesis cubes`` (config section ``cubes``).

    The numbers default to the paper's; ``recipe`` defaults to ``auto``, which scales the
    border and minimum slice count to each scan (the workflow pins ``paper`` for LUNA16).
    """

    recipe: Literal["paper", "auto"] = setting(
        "auto",
        "`paper`: `border` and `min_slices` as given, the paper's LUNA16 recipe (the workflow "
        "always uses it for LUNA16). `auto`: per scan and axis the border is the smaller of "
        "`border` and 10% of the scan, shrunk further until a window fits, and `min_slices` "
        "becomes the window depth plus twice that z border; a scan is skipped only when one window "
        "(`cube_size` plus `extra_slices` in z) does not fit. The manifest records the border and "
        "min_slices used for each scan.",
    )
    cube_size: tuple[int, int, int] = setting(
        (64, 64, 32),
        "Cube kept, (x, y, z) voxels; the workflow fills it in from the top-level cube_size.",
        bounds="[1, inf)",
    )
    extra_slices: int = setting(
        3,
        "Slices cut beyond the cube in z (at least 2; paper: 3): each cube slice's tissue score "
        "reads it and the next 2 slices; the third only keeps the release's window depth.",
        bounds="[2, inf)",
    )
    border: tuple[int, int, int] = setting(
        (100, 100, 30),
        "Voxels kept clear of each edge (x, y, z) when placing cubes (paper: 100, 100, 30). Scale "
        "it down with the scan size. With `recipe: auto`, the most kept clear (at most 10% of the "
        "scan per axis).",
        bounds="[0, inf)",
    )
    min_slices: int = setting(
        96,
        "Scans with fewer slices are skipped (paper: about 96). The geometric minimum, `2·border_z "
        "+ cube_z + extra_slices`, and its in-plane counterpart are always enforced as well. "
        "`recipe: auto` replaces it per scan by that geometric minimum.",
        bounds="[1, inf)",
    )
    cubes_per_scan: int = setting(
        32,
        'Cubes kept per scan (the paper\'s "scale" N = 32).',
        bounds="[1, inf)",
    )
    attempts_per_cube: int = setting(
        50,
        "Give up on a scan after `attempts_per_cube × cubes_per_scan` attempts, keeping the cubes "
        "accepted so far (paper: 50).",
        bounds="[1, inf)",
    )
    hu_window: tuple[float, float] = setting(
        (-1000.0, 1000.0),
        "CT window in HU, mapped linearly to [0, 1].",
    )
    tissue_hu: float = setting(
        -150.0,
        "Tissue-filter threshold in HU (window value t = 0.425 for the default window).",
    )
    tissue_fraction: float = setting(
        0.15,
        "Reject a cube whose summed tissue score exceeds this fraction of its voxels (paper: "
        "0.15); lower keeps more lung-only cubes.",
        bounds="[0, 1]",
    )
    ct_filter: Literal["tissue", "none"] = setting(
        "tissue",
        "`tissue`: the paper's filter; `none`: accept every position (for CT other than chest CT, "
        "or thick slices, in `own_data`; the log and manifest say when tissue-filtered cubes are "
        "mostly air outside the body).",
    )
    mri_window: Literal["percentile", "minmax"] = setting(
        "percentile",
        "Per-volume MRI intensity window mapped to [0, 1].",
    )
    mri_percentiles: tuple[float, float] = setting(
        (0.5, 99.5),
        "Low and high percentile when `mri_window` is `percentile`.",
        bounds="[0, 100]",
    )
    mri_filter: Literal["foreground", "none"] = setting(
        "foreground",
        "`foreground`: keep an MRI cube only if enough of it is foreground; `none`: keep every "
        "cube.",
    )
    mri_background: float = setting(
        0.05,
        "Windowed value at or below which an MRI voxel counts as background.",
        bounds="[0, 1]",
    )
    mri_min_foreground: float = setting(
        0.5,
        "Minimum foreground fraction of a kept MRI cube.",
        bounds="[0, 1]",
    )
    mri_channel: int = setting(
        0,
        "Channel used from a 4D (multi-sequence) MRI volume.",
        bounds="[0, inf)",
    )
    auto_ct_air_fraction: float = setting(
        0.05,
        "With modality `auto`: a scan with at least this fraction of voxels at or below -500 "
        "counts as CT (unless a `dataset.json` says otherwise).",
        bounds="(0, 1]",
    )

    def __post_init__(self) -> None:
        check_bounds(self, "cubes")
        check_increasing(self, "cubes", "hu_window", "mri_percentiles")

    @property
    def window_size(self) -> tuple[int, int, int]:
        x, y, z = self.cube_size
        return x, y, z + self.extra_slices

    @property
    def tissue_threshold(self) -> float:
        """t in window units, through the same float32 arithmetic as the data."""
        return float(ct_window(np.array([self.tissue_hu], np.float32), *self.hu_window)[0])


@dataclass(frozen=True)
class ScanCubes:
    """What one scan gave: cubes, their corners, attempts used, or why it was skipped.

    ``kind`` names the reason's kind (a key of ``SKIP_KINDS``); ``border`` and
    ``min_slices`` are what the scan was cut with (recipe auto chooses them per scan).
    """

    cubes: np.ndarray  # float16 (n, X, Y, Z)
    corners: np.ndarray  # int (n, 3), (x, y, z) voxel index of each cube's first voxel
    attempts: int
    reason: str = ""
    kind: str = ""
    border: tuple[int, int, int] | None = None
    min_slices: int | None = None


def _x(values: Sequence[int]) -> str:
    return "x".join(map(str, values))


def scan_recipe(shape: tuple[int, ...], settings: CubeSettings) -> CubeSettings:
    """The settings for one scan of ``shape``: as given (paper), or scaled to it (auto).

    auto, per axis: border = min(border, 10% of the scan), then shrunk until a window
    fits between the borders (down to 0); min_slices = window depth + 2 * border z.
    """
    if settings.recipe == "paper":
        return settings
    border = []
    for n, window, paper in zip(shape[:3], settings.window_size, settings.border, strict=True):
        chosen = min(paper, int(AUTO_BORDER_FRACTION * n))
        if n < window + 2 * chosen:
            chosen = max(0, (n - window) // 2)
        border.append(chosen)
    return replace(
        settings, border=tuple(border), min_slices=settings.window_size[2] + 2 * border[2]
    )


def _window_note(settings: CubeSettings) -> str:
    return (
        f"cubes of {_x(settings.cube_size)} are cut as {_x(settings.window_size)} windows: "
        f"cube z + {settings.extra_slices} extra slices (cubes.extra_slices), of which the "
        "tissue filter reads up to 2 past the cube"
    )


def size_check(shape: tuple[int, ...], settings: CubeSettings) -> tuple[str, str]:
    """(kind, reason) why a scan of ``shape`` cannot give cubes; ("", "") if it can.

    ``settings`` are the scan's own (``scan_recipe``).
    """
    window = settings.window_size
    needed = tuple(w + 2 * b for w, b in zip(window, settings.border, strict=True))
    if any(s < w for s, w in zip(shape, window, strict=True)):
        return "window", (
            f"scan {_x(shape)} is smaller than one window {_x(window)} "
            f"({_window_note(settings)}); set a smaller cube_size"
        )
    if shape[2] < settings.min_slices:
        return "slices", (
            f"{shape[2]} slices, fewer than min_slices = {settings.min_slices}"
            " (set cubes.min_slices, or cubes.recipe: auto to scale it and the "
            "border to each scan)"
        )
    if any(s < n for s, n in zip(shape, needed, strict=True)):
        return "size", (
            f"scan {_x(shape)} is too small: {_window_note(settings)}; with a "
            f"border of {'/'.join(map(str, settings.border))} they need at least "
            f"{_x(needed)} (set cubes.border, or cubes.recipe: auto)"
        )
    return "", ""


def size_problem(shape: tuple[int, ...], settings: CubeSettings) -> str:
    """Why a scan of ``shape`` cannot give cubes with ``settings`` ("" if it can)."""
    return size_check(shape, scan_recipe(shape, settings))[1]


def window_intensities(
    data: np.ndarray, region: tuple[slice, ...], modality: Modality, settings: CubeSettings
) -> np.ndarray:
    """Map ``data[region]`` to [0, 1] float32 (in place when ``data`` is float32).

    Only the region where cubes can lie is windowed; an MRI window is still computed
    from the whole volume.
    """
    if modality == "ct":
        low, high = settings.hu_window
    else:
        low, high = mri_bounds(data, settings.mri_window, settings.mri_percentiles)
    return scale_to_unit(data[region], low, high)


def build_filter(scaled: np.ndarray, modality: Modality, settings: CubeSettings) -> WindowFilter:
    if modality == "ct" and settings.ct_filter == "tissue":
        return TissueFilter.for_scan(
            scaled, settings.cube_size, settings.tissue_threshold, settings.tissue_fraction
        )
    if modality == "mri" and settings.mri_filter == "foreground":
        return ForegroundFilter.for_scan(
            scaled, settings.cube_size, settings.mri_background, settings.mri_min_foreground
        )
    return AcceptAll()


def choose_corners(
    window_filter: WindowFilter,
    shape: tuple[int, int, int],
    settings: CubeSettings,
    rng: np.random.Generator,
) -> tuple[np.ndarray, int]:
    """Draw candidate corners until N are accepted or the attempts run out.

    Returns the accepted corners (n, 3) in draw order and the attempts used, counted as
    if candidates were tried one at a time.
    """
    wanted = settings.cubes_per_scan
    budget = settings.attempts_per_cube * wanted
    low = np.asarray(settings.border)
    high = np.asarray(shape) - np.asarray(settings.window_size) - low  # inclusive
    accepted: list[np.ndarray] = []
    count = attempts = 0
    while count < wanted and attempts < budget:
        n = min(BATCH, budget - attempts)
        corners = rng.integers(low, high + 1, size=(n, 3))
        hits = np.flatnonzero(window_filter.accepts(corners))
        need = wanted - count
        if len(hits) >= need:
            accepted.append(corners[hits[:need]])
            attempts += int(hits[need - 1]) + 1
            count = wanted
        else:
            accepted.append(corners[hits])
            attempts += n
            count += len(hits)
    return np.concatenate(accepted) if accepted else np.zeros((0, 3), np.int64), attempts


def extract_scan(
    data: np.ndarray, modality: Modality, settings: CubeSettings, rng: np.random.Generator
) -> ScanCubes:
    """Cubes of one 3D (x, y, z) volume in its raw units. ``data`` may be overwritten.

    Everything after the size check works on the inner region that the border leaves:
    windows can only lie there, so the scan's margins are never windowed or scored.
    """
    settings = scan_recipe(data.shape, settings)
    used = {"border": tuple(settings.border), "min_slices": settings.min_slices}
    empty = np.zeros((0, *settings.cube_size), np.float16)
    kind, problem = size_check(data.shape, settings)
    if problem:
        return ScanCubes(empty, np.zeros((0, 3), np.int64), 0, problem, kind, **used)
    border = np.asarray(settings.border)
    region = tuple(slice(b, n - b) for b, n in zip(border, data.shape, strict=True))
    scaled = window_intensities(data, region, modality, settings)
    window_filter = build_filter(scaled, modality, settings)
    inner = replace(settings, border=(0, 0, 0))  # corners relative to the region
    corners, attempts = choose_corners(window_filter, scaled.shape, inner, rng)
    del window_filter  # its integral image is as large as the region
    if len(corners) == 0:
        if modality == "ct":
            hint = (
                "the CT tissue filter keeps windows of mostly air/lung; for CT other "
                "than chest CT set cubes.ct_filter: none"
            )
        else:
            hint = (
                "the MRI foreground filter wants cubes.mri_min_foreground of each cube "
                "above cubes.mri_background; set cubes.mri_filter: none or lower it"
            )
        return ScanCubes(
            empty,
            corners,
            attempts,
            f"no window passed the {modality} filter in {attempts} attempts ({hint})",
            f"{modality}_filter",
            **used,
        )
    sx, sy, sz = settings.cube_size
    cubes = np.empty((len(corners), sx, sy, sz), np.float16)
    for cube, (x, y, z) in zip(cubes, corners, strict=True):  # one slice copy per cube
        cube[...] = scaled[x : x + sx, y : y + sy, z : z + sz]
    return ScanCubes(cubes, corners + border, attempts, **used)


def outside_air_fraction(cubes: np.ndarray, settings: CubeSettings) -> float:
    """Fraction of the voxels of windowed CT ``cubes`` that are air outside the body."""
    level = float(ct_window(np.array([OUTSIDE_AIR_HU], np.float32), *settings.hu_window)[0])
    return float(np.count_nonzero(cubes <= level)) / max(cubes.size, 1)


def load_scan(
    scan: ScanInput, modality: str, settings: CubeSettings
) -> tuple[np.ndarray, Modality]:
    """Read a scan as a 3D float32 volume and settle its modality."""
    from genesis.io import load_volume

    volume = load_volume(scan.path)
    data = volume.data
    chosen = scan.modality or modality  # a CSV row's own modality wins
    if data.ndim == 4:
        if chosen == "ct":
            raise InputError(scan.path, f"a CT scan must be 3D, got shape {data.shape}")
        if settings.mri_channel >= data.shape[3]:
            raise InputError(
                scan.path,
                f"has {data.shape[3]} channels; cubes.mri_channel = {settings.mri_channel}",
            )
        data = np.ascontiguousarray(data[..., settings.mri_channel])
        chosen = "mri"
    if chosen == "auto":
        chosen = guess_modality(data, scan.path, settings.auto_ct_air_fraction)
        log.info("%s: modality %s (auto)", scan.source, chosen)
    return data, chosen  # type: ignore[return-value]


@dataclass(frozen=True)
class ExtractionSummary:
    """What a shard got: scans, skipped scans by kind (``SKIP_KINDS``), cubes, and the
    CT scans whose cubes are mostly air outside the body."""

    scans: int
    skipped: int
    cubes: int
    skipped_by_kind: dict[str, int] = field(default_factory=dict)
    mostly_air: tuple[str, ...] = ()

    def describe(self) -> str:
        """E.g. "0 cubes from 6 scans: 6 too small for the cube size (set ...)"."""
        text = f"{self.cubes} cubes from {self.scans} scans"
        if self.skipped_by_kind:
            text += ": " + ", ".join(
                f"{n} {SKIP_KINDS.get(kind, kind)}" for kind, n in self.skipped_by_kind.items()
            )
        return text


class EmptyShardError(InputError):
    """No scan gave a cube (and empty shards were not allowed)."""


def extract_to_shard(
    scans: Sequence[ScanInput],
    output: Path,
    *,
    split: str,
    modality: str,
    seed: int,
    settings: CubeSettings,
    skip_bad: bool = False,
    allow_empty: bool = False,
) -> ExtractionSummary:
    """Stream cubes from ``scans`` into ``output`` (.npy) and its manifest (.csv).

    Holds one scan at a time. A scan too small or without accepted cubes becomes a
    ``skipped`` manifest row. An unreadable scan (or one with NaNs) raises its
    ``InputError`` unless ``skip_bad``; then it too is a ``skipped`` row. No cubes at all
    raise ``EmptyShardError`` (counting the skips by kind) unless ``allow_empty``.

    Shard and manifest are replaced together, only on success; a failure leaves an
    existing pair as it was and writes the rows so far, up to and including the failing
    scan, to ``<name>.failed.csv`` so that the user sees where and why it stopped.
    """
    failed = failed_manifest_path(output)
    rows: list[dict[str, Any]] = []
    try:
        with shard_writer(output, settings.cube_size) as (shard, rows):
            for scan in scans:
                base = {"source": scan.source, "split": split, "scale": settings.cubes_per_scan}
                try:
                    rows += _one_scan(scan, shard, base, modality, seed, settings)
                except InputError as error:
                    rows.append(
                        {
                            **base,
                            "status": "skipped",
                            "reason": f"bad input: {error}",
                            "kind": "bad",
                        }
                    )
                    if not skip_bad:
                        raise
                    log.warning("skipping %s: %s", scan.source, error)
            summary = _summary(scans, rows, shard.count)
            if summary.cubes == 0 and not allow_empty:
                raise EmptyShardError(
                    output,
                    f"{summary.describe()}; each scan's reason is in "
                    f"{failed.name} (--allow-empty writes the empty shard)",
                )
    except InputError:
        write_manifest(failed, rows)
        raise
    failed.unlink(missing_ok=True)
    return summary


def _summary(
    scans: Sequence[ScanInput], rows: Sequence[dict[str, Any]], cubes: int
) -> ExtractionSummary:
    skipped = [row for row in rows if row["status"] == "skipped"]
    kinds = Counter(row.get("kind", "") for row in skipped)
    by_kind = {kind: kinds[kind] for kind in (*SKIP_KINDS, "") if kinds[kind]}
    air = tuple(dict.fromkeys(row["source"] for row in rows if row.get("mostly_air")))
    return ExtractionSummary(len(scans), len(skipped), cubes, by_kind, air)


def _one_scan(
    scan: ScanInput,
    shard: ShardAppender,
    base: dict[str, Any],
    modality: str,
    seed: int,
    settings: CubeSettings,
) -> list[dict[str, Any]]:
    """Append one scan's cubes to ``shard``; return its manifest rows."""
    rng = np.random.default_rng(derive_seed(seed, scan.source))
    data, chosen = load_scan(scan, modality, settings)
    result = extract_scan(data, chosen, settings, rng)
    base = {
        **base,
        "modality": chosen,
        "min_slices": result.min_slices,
        "border": "/".join(map(str, result.border or ())),
    }
    if result.reason:
        log.warning("skipping %s: %s", scan.source, result.reason)
        return [{**base, "status": "skipped", "reason": result.reason, "kind": result.kind}]
    indices = shard.append(result.cubes)
    log.info(
        "%s: %d cubes in %d attempts (border %s, min_slices %d)",
        scan.source,
        len(indices),
        result.attempts,
        base["border"],
        result.min_slices,
    )
    air = (
        chosen == "ct"
        and settings.ct_filter == "tissue"
        and outside_air_fraction(result.cubes, settings) > MOSTLY_AIR
    )
    note = ""
    if air:
        note = (
            f"{MOSTLY_AIR_NOTE} (below {OUTSIDE_AIR_HU:g} HU); for CT other than chest CT, "
            "or with slices so thick that a window reaches past the lungs, set "
            "cubes.ct_filter: none"
        )
        log.warning("%s: %s", scan.source, note)
    return [
        {
            **base,
            "index": i,
            "x": x,
            "y": y,
            "z": z,
            "status": "ok",
            "reason": note,
            "mostly_air": air,
        }
        for i, (x, y, z) in zip(indices, result.corners.tolist(), strict=True)
    ]
