"""Throughput of the batched Models Genesis transforms against the per-sample NumPy oracle.

Reports transformed (input, target) pairs per CPU second on one thread at the paper's cube
size, for ``GenesisTransform`` and for the plain NumPy reference in ``tests/``, measured in
the same run and interleaved. Process CPU time, not wall time, is what is compared: on a
shared machine it counts only the time this process ran, so the ratio is the speed-up per
core. With CUDA available (or ``--device cuda``) it also reports GPU pairs per wall second.

    python benchmarks/transforms.py --batch 6 --repeats 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import transforms_oracle as oracle

from genesis.transforms import (
    GenesisTransform,
    TransformSettings,
    apply_flip,
    apply_inpaint_,
    apply_local_shuffle_,
    apply_nonlinear_,
    apply_outpaint_,
)

Clock = Callable[[], float]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=6, help="cubes per batch (release: 6)")
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds")
    parser.add_argument(
        "--size", type=int, nargs=3, default=(64, 64, 32), metavar=("X", "Y", "Z"), help="cube size"
    )
    parser.add_argument(
        "--device",
        default=None,
        help="extra device to time, e.g. cuda (default: cuda if available)",
    )
    parser.add_argument("--gpu-batch", type=int, default=32, help="batch size on the GPU")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def smooth_cubes(n: int, size: tuple[int, int, int], seed: int) -> torch.Tensor:
    """CT-like test cubes: smoothed noise in [0, 1], so runs of similar values exist."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand((n, 1, *(s + 4 for s in size)), generator=generator)
    cubes = torch.nn.functional.avg_pool3d(noise, 5, stride=1)
    low, high = cubes.amin(), cubes.amax()
    return ((cubes - low) / (high - low)).contiguous()


def time_batched(
    transform: GenesisTransform,
    cubes: torch.Tensor,
    generator: torch.Generator,
    clock: Clock = time.process_time,
) -> float:
    """Seconds for one batch."""
    if cubes.is_cuda:
        torch.cuda.synchronize()
    start = clock()
    transform(cubes, generator)
    if cubes.is_cuda:
        torch.cuda.synchronize()
    return clock() - start


def time_oracle(cubes: np.ndarray, rng: np.random.Generator) -> float:
    """CPU seconds for the oracle to transform every cube of a batch, one by one."""
    start = time.process_time()
    for cube in cubes:
        oracle.genesis_pair(cube, rng)
    return time.process_time() - start


def stage_times(
    transform: GenesisTransform, cubes: torch.Tensor, generator: torch.Generator
) -> dict[str, float]:
    """CPU seconds of each step of one batch: where the batched time goes. The steps run
    as in ``GenesisTransform.apply``: in place on one working copy, made with the flip."""
    times: dict[str, float] = {}
    start = time.process_time()

    def lap(name: str) -> None:
        nonlocal start
        now = time.process_time()
        times[name] = now - start
        start = now

    params = transform.sample(cubes.shape, generator)
    lap("sampling")
    targets = apply_flip(cubes, params.flip)
    inputs = targets.clone()
    lap("flip")
    apply_local_shuffle_(inputs, params.local_shuffle)
    lap("local shuffle")
    apply_nonlinear_(inputs, params.nonlinear)
    lap("non-linear")
    apply_inpaint_(inputs, params.inpainting)
    lap("in-painting")
    apply_outpaint_(inputs, params.outpainting)
    lap("out-painting")
    return times


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    size = tuple(args.size)
    transform = GenesisTransform(TransformSettings())
    cubes = smooth_cubes(args.batch, size, args.seed)
    arrays = cubes[:, 0].numpy()
    generator = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    time_batched(transform, cubes, generator)  # warm-up: caches, allocator
    batched, reference, stages = [], [], []
    for _ in range(args.repeats):  # interleaved, so load changes hit both alike
        batched.append(time_batched(transform, cubes, generator))
        reference.append(time_oracle(arrays, rng))
        stages.append(stage_times(transform, cubes, generator))
    # Totals, not medians: which transforms a batch gets is random (a batch with six
    # shuffled cubes costs several times one with none), so throughput is pairs / total.
    ours = args.batch * args.repeats / sum(batched)
    theirs = args.batch * args.repeats / sum(reference)
    ratios = [r / b for r, b in zip(reference, batched, strict=True)]
    print(
        f"cube {size[0]}x{size[1]}x{size[2]}, batch {args.batch}, {args.repeats} rounds, "
        f"torch {torch.__version__}, 1 CPU thread"
    )
    print(f"batched torch (CPU): {ours:8.1f} pairs per CPU second")
    print(f"NumPy oracle  (CPU): {theirs:8.1f} pairs per CPU second")
    print(
        f"speed-up per core:   {ours / theirs:8.1f}x (per-round ratios: median "
        f"{statistics.median(ratios):.1f}x, range {min(ratios):.1f}-{max(ratios):.1f}x)"
    )
    parts = ", ".join(
        f"{name} {1000 * sum(s[name] for s in stages) / len(stages) / args.batch:.2f}"
        for name in stages[0]
    )
    print(f"batched CPU ms per pair (mean, rates included): {parts}")
    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    if device and device != "cpu":
        report_device(transform, device, args.gpu_batch, size, args)
    return 0


def report_device(
    transform: GenesisTransform,
    device: str,
    batch: int,
    size: tuple[int, int, int],
    args: argparse.Namespace,
) -> None:
    """Pairs/s on an accelerator, with a generator on that device (no host transfers)."""
    cubes = smooth_cubes(batch, size, args.seed).to(device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    for _ in range(2):
        time_batched(transform, cubes, generator, time.perf_counter)
    seconds = [
        time_batched(transform, cubes, generator, time.perf_counter) for _ in range(args.repeats)
    ]
    name = torch.cuda.get_device_name() if device.startswith("cuda") else device
    print(
        f"batched torch ({name}, batch {batch}): {batch / statistics.median(seconds):8.1f} pairs/s"
    )


if __name__ == "__main__":
    raise SystemExit(main())
