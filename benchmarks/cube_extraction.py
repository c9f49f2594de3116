"""Benchmark of ``genesis cubes``: speed against a per-voxel reference, memory vs scans.

Run from the repository root::

    .venv/bin/python benchmarks/cube_extraction.py [--shape 512 512 128] [--scans 20]

1. Speed on one phantom chest CT (``genesis.synth``), paper settings (64x64x32 cubes,
   border 100/100/30, N = 32): cubes/s of the vectorised extractor (integral image, batched
   candidates) against the same sampler with the tissue filter evaluated by per-voxel
   Python loops (as the original tool did), and with the filter vectorised per window but
   without the integral image. Every ratio is measured in this one run. Times are CPU
   time of this process (``time.process_time``), not wall-clock, so that other jobs on a
   shared machine distort them less; everything here is single-threaded.
2. Peak memory: ``extract_to_shard`` in a fresh subprocess over 1 and over N scans of the
   same size (ru_maxrss of the child, and the tracemalloc peak of numpy/Python
   allocations). Streaming should make the two equal.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from genesis.cubes.extract import CubeSettings, extract_scan, size_problem
from genesis.cubes.intensity import ct_window
from genesis.cubes.tissue_filter import direct_tissue_score, reference_tissue_score

SPACING = (0.7, 0.7, 2.5)  # LUNA16-like: 512 voxels span 358 mm


def phantom(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A chest CT phantom in HU with scanner-like noise, as int16 (like LUNA16)."""
    from genesis.synth.chest import build_anatomy

    rng = np.random.default_rng(seed)
    hu = build_anatomy(rng, shape, SPACING).hu
    hu += rng.normal(0.0, 20.0, hu.shape).astype(np.float32)
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16)


def list_tissue_score(window: np.ndarray, threshold: float, cube_depth: int) -> float:
    """The per-voxel loops on nested Python lists: the fastest plain-Python variant."""
    values = window.tolist()
    total = 0.0
    for plane in values:
        for column in plane:
            for d in range(cube_depth):
                for k in range(3):
                    if column[d + k] >= threshold:
                        total += 1.0 - k / 2.0
                        break
    return total


def one_at_a_time(
    raw: np.ndarray, settings: CubeSettings, score: Callable[..., float], cubes: int
) -> tuple[float, int]:
    """The straightforward extractor: window the scan, draw a corner, score its window,
    keep it or not. Windowing is timed, as for the vectorised extractor.
    Returns cubes/s and the windows scored; stops after ``cubes`` cubes.
    """
    rng = np.random.default_rng(1)
    data = raw.astype(np.float32)  # as the reader returns it
    start = time.process_time()
    scaled = ct_window(data)
    low = np.asarray(settings.border)
    high = np.asarray(scaled.shape) - np.asarray(settings.window_size) - low
    wx, wy, wz = settings.window_size
    depth = settings.cube_size[2]
    limit = settings.tissue_fraction * float(np.prod(settings.cube_size))
    kept, tried = [], 0
    while len(kept) < cubes and tried < settings.attempts_per_cube * cubes:
        x, y, z = rng.integers(low, high + 1)
        tried += 1
        window = scaled[x : x + wx, y : y + wy, z : z + wz]
        if score(window, settings.tissue_threshold, depth) <= limit:
            kept.append(window[:, :, :depth].astype(np.float16))
    return len(kept) / (time.process_time() - start), tried


def speed(raw: np.ndarray, reference_cubes: int, repeats: int) -> dict[str, float]:
    settings = CubeSettings(recipe="paper")
    print(
        f"phantom {raw.shape}, {raw.nbytes / 2**20:.0f} MiB int16; "
        f"{(raw < -500).mean():.0%} of voxels at or below -500 HU"
    )
    timings, produced = [], []
    for seed in range(repeats):
        data = raw.astype(np.float32)  # as the reader returns it; windowed in place
        start = time.process_time()
        result = extract_scan(data, "ct", settings, np.random.default_rng(seed))
        timings.append(time.process_time() - start)
        produced.append(len(result.cubes))
    # The median is robust to load spikes (cache and memory-bandwidth contention).
    fast = float(np.median(produced) / np.median(timings))
    print(
        f"vectorised: {produced[0]} cubes per scan, median {np.median(timings) * 1e3:.0f} ms "
        f"CPU per scan over {repeats} runs (windowing, integral image, sampling, float16 "
        f"cubes) -> {fast:.1f} cubes/s"
    )
    direct, n_direct = one_at_a_time(raw, settings, direct_tissue_score, 32)
    print(
        f"per-window numpy filter (no integral image): {direct:.2f} cubes/s "
        f"({n_direct} windows scored)"
    )
    loops, n_loops = one_at_a_time(raw, settings, reference_tissue_score, reference_cubes)
    print(
        f"per-voxel Python loops over the array (reference): {loops:.3f} cubes/s "
        f"({n_loops} windows scored)"
    )
    lists, n_lists = one_at_a_time(raw, settings, list_tissue_score, reference_cubes)
    print(
        f"per-voxel Python loops over nested lists: {lists:.3f} cubes/s ({n_lists} windows scored)"
    )
    print(
        f"speed-up of the vectorised extractor: {fast / loops:.0f}x vs the per-voxel "
        f"reference, {fast / lists:.0f}x vs the list variant, {fast / direct:.1f}x vs "
        "per-window numpy"
    )
    # Few windows pass (a body-heavy scan): the sampler tries up to 50 * N candidates. The
    # integral image costs the same; per-window scoring grows with the attempts.
    strict = replace(settings, tissue_fraction=0.02)
    start = time.process_time()
    hard = extract_scan(raw.astype(np.float32), "ct", strict, np.random.default_rng(0))
    hard_fast = time.process_time() - start
    hard_rate, hard_tried = one_at_a_time(raw, strict, direct_tissue_score, 32)
    hard_slow = len(hard.cubes) / hard_rate if hard_rate else float("nan")
    print(
        f"low acceptance (tissue_fraction 0.02): vectorised {len(hard.cubes)} cubes in "
        f"{hard.attempts} attempts, {hard_fast * 1e3:.0f} ms CPU; per-window numpy "
        f"{hard_tried} attempts, {hard_slow * 1e3:.0f} ms CPU "
        f"({hard_slow / hard_fast:.1f}x)"
    )
    return {
        "vectorised": fast,
        "per_window_numpy": direct,
        "per_voxel_loops": loops,
        "per_voxel_lists": lists,
    }


def write_scans(folder: Path, raw: np.ndarray, count: int) -> None:
    """``count`` .mhd headers sharing one .raw (same size, different names and seeds)."""
    from genesis.io import save_metaimage

    save_metaimage(folder / "scan000.mhd", raw, spacing=SPACING, origin=(0.0, 0.0, 0.0))
    header = (folder / "scan000.mhd").read_text()
    for k in range(1, count):
        (folder / f"scan{k:03d}.mhd").write_text(header)  # ElementDataFile = scan000.raw


def peak_rss() -> int:
    """This process's peak resident memory in bytes.

    ``VmHWM`` belongs to the process image, while ``ru_maxrss`` survives ``exec`` and would
    report the parent's peak (the phantom build) for a child process.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (
        1 if sys.platform == "darwin" else 1024
    )


def child(folder: Path, count: int, output: Path) -> None:
    """Runs in a fresh process: extract from the first ``count`` scans, report peaks."""
    from genesis.cubes.extract import extract_to_shard
    from genesis.cubes.inputs import ScanInput

    scans = [ScanInput(p, p.name) for p in sorted(folder.glob("*.mhd"))[:count]]
    tracemalloc.start()
    start = time.process_time()
    summary = extract_to_shard(
        scans, output, split="train", modality="ct", seed=0, settings=CubeSettings(recipe="paper")
    )
    seconds = time.process_time() - start
    _, peak = tracemalloc.get_traced_memory()
    rss = peak_rss()
    print(
        json.dumps(
            {
                "scans": count,
                "cubes": summary.cubes,
                "seconds": seconds,
                "traced_peak": peak,
                "max_rss": rss,
            }
        )
    )


def memory(raw: np.ndarray, many: int) -> list[dict[str, float]]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "scans"
        folder.mkdir()
        write_scans(folder, raw, many)
        scan_mib = raw.size * 4 / 2**20
        for count in (1, many):
            out = Path(tmp) / f"out{count}.npy"
            line = (
                subprocess.run(
                    [sys.executable, __file__, "--child", str(folder), str(count), str(out)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            record = json.loads(line)
            results.append(record)
            print(
                f"{count:3d} scans: {record['cubes']:4d} cubes, {record['seconds']:.1f} CPU s, "
                f"shard {out.stat().st_size / 2**20:.0f} MiB, peak traced "
                f"{record['traced_peak'] / 2**20:.0f} MiB, max RSS "
                f"{record['max_rss'] / 2**20:.0f} MiB (one scan as float32: "
                f"{scan_mib:.0f} MiB)"
            )
    one, more = results
    traced = more["traced_peak"] / one["traced_peak"]
    print(
        f"peak memory {many} scans / 1 scan: traced {traced:.2f}, "
        f"RSS {more['max_rss'] / one['max_rss']:.2f}"
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 128))
    parser.add_argument("--scans", type=int, default=20, help="scans for the memory run")
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="times the vectorised extractor runs on the scan (seeds differ)",
    )
    parser.add_argument(
        "--reference-cubes",
        type=int,
        default=32,
        help="cubes the per-voxel references produce (fewer: faster run)",
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("FOLDER", "COUNT", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), int(args.child[1]), Path(args.child[2]))
        return
    shape = tuple(args.shape)
    if size_problem(shape, CubeSettings(recipe="paper")):
        raise SystemExit(f"--shape {shape}: {size_problem(shape, CubeSettings(recipe='paper'))}")
    raw = phantom(shape)
    speed(raw, args.reference_cubes, args.repeats)
    memory(raw, args.scans)


if __name__ == "__main__":
    main()
