"""How much the data path adds to a pretraining step (goal: at most 10%).

Measures, in one run and on one device:

- model step: forward, MSE, backward and SGD step on ready-made tensors already on the
  device (transformed once, reused every step);
- full step: what ``genesis pretrain`` runs, ``genesis.train.loop.train_epoch`` over a
  DataLoader streaming a memory-mapped float16 shard, transforms on the device with one
  seeded generator per cube, then the same step;
- the transforms alone, per cube (as training runs them) and as one batched call.

The model-only and full measurements alternate for ``--rounds`` rounds and the fastest
round of each counts, so a burst of load from other processes on a shared machine does not
land on one side of the ratio only. Prints seconds per step and the ratio full / model.
Example (CPU demo size):

    python benchmarks/pretrain_step.py --shape 32 32 16 --width 8 --batch 6 --steps 20

Writes JSON with --json PATH.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from genesis.models import UNet3D
from genesis.train.distributed import DistContext
from genesis.train.loaders import train_loader
from genesis.train.loop import StepOptions, Transform, train_epoch, transform_cubes
from genesis.train.pretrain import amp_dtype, build_transform
from genesis.train.shards import CubeDataset, check_shards
from genesis.train.synthetic import write_synthetic_shard


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Seconds per call of ``fn`` (after one warm-up call), device work included."""
    fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def make_model(
    width: int, device: torch.device, options: StepOptions
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    memory_format = torch.channels_last_3d if options.channels_last else torch.preserve_format
    model = UNet3D(width=width).to(device, memory_format=memory_format)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def model_steps(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    options: StepOptions,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
) -> Callable[[], None]:
    """``steps`` training steps on tensors that are already prepared on the device."""
    device = inputs.device
    inputs = options.prepare(inputs)

    def run() -> None:
        model.train()
        for _ in range(steps):
            with options.autocast(device):
                outputs = model(inputs)
            loss = F.mse_loss(outputs.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return run


def full_steps(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    options: StepOptions,
    transform: Transform,
    dataset: CubeDataset,
    batch: int,
    steps: int,
    workers: int,
    device: torch.device,
) -> Callable[[], None]:
    """One epoch of ``steps`` steps of the real training loop, data and transforms included."""
    loader = train_loader(
        dataset,
        seed=0,
        local_batch=batch,
        ctx=DistContext(),
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    epoch = 0

    def run() -> None:
        nonlocal epoch
        loader.sampler.set_epoch(epoch)
        train_epoch(
            model,
            loader,
            optimizer,
            transform,
            epoch=epoch,
            seed=0,
            steps=steps,
            global_batch=batch,
            ctx=DistContext(),
            device=device,
            options=options,
        )
        epoch += 1

    return run


def alternate(
    runs: dict[str, Callable[[], None]], device: torch.device, rounds: int
) -> dict[str, float]:
    """Fastest of ``rounds`` timings of each run, the runs interleaved round by round."""
    for run in runs.values():  # warm-up: allocator, cuDNN autotuning, loader workers
        run()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def transform_pairs_per_second(
    transform: Transform, cubes: torch.Tensor, per_cube: bool, repeats: int
) -> float:
    """Transformed pairs per second, per cube with seeded generators or one batched call."""
    seeds = list(range(cubes.shape[0]))

    def run() -> None:
        if per_cube:
            transform_cubes(transform, cubes, seeds)
        else:
            transform(cubes, torch.Generator(device=cubes.device).manual_seed(0))

    return cubes.shape[0] / timed(run, cubes.device, repeats)


def measure(
    shape: tuple[int, int, int],
    width: int,
    batch: int,
    steps: int,
    workers: int,
    device: torch.device,
    amp: str,
    channels_last: bool | None,
    variant: str,
    folder: Path,
    rounds: int = 3,
) -> dict[str, Any]:
    """All three measurements for one configuration, as a JSON-ready dict."""
    cl = device.type == "cuda" if channels_last is None else channels_last
    options = StepOptions(amp_dtype(amp, device), cl)
    transform = build_transform(variant, {})
    shard = folder / f"bench_{'x'.join(map(str, shape))}_{batch * steps}.npy"
    if not shard.exists():
        write_synthetic_shard(shard, batch * steps, shape, seed=0)
    dataset = CubeDataset(check_shards([shard], "train"))
    cubes = torch.stack([dataset[i] for i in range(batch)]).to(device)
    inputs, targets = transform_cubes(transform, cubes, list(range(batch)))
    model, optimizer = make_model(width, device, options)
    best = alternate(
        {
            "model": model_steps(model, optimizer, options, inputs, targets, steps),
            "full": full_steps(
                model, optimizer, options, transform, dataset, batch, steps, workers, device
            ),
        },
        device,
        rounds,
    )
    model_s, full_s = best["model"] / steps, best["full"] / steps
    per_cube = transform_pairs_per_second(transform, cubes, True, max(2, steps // 4))
    batched = transform_pairs_per_second(transform, cubes, False, max(2, steps // 4))
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "shape": list(shape),
        "width": width,
        "batch": batch,
        "steps": steps,
        "rounds": rounds,
        "num_workers": workers,
        "variant": variant,
        "amp": "bf16" if options.amp_dtype == torch.bfloat16 else "fp32",
        "channels_last": cl,
        "model_step_s": model_s,
        "full_step_s": full_s,
        "full_over_model": full_s / model_s,
        "model_pairs_per_s": batch / model_s,
        "full_pairs_per_s": batch / full_s,
        "transform_pairs_per_s_per_cube": per_cube,
        "transform_pairs_per_s_batched": batched,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 32, 16])
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--variant", default="all")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        result = measure(
            tuple(args.shape),
            args.width,
            args.batch,
            args.steps,
            args.workers,
            torch.device(args.device),
            args.amp,
            None,
            args.variant,
            Path(folder),
            args.rounds,
        )
    print(
        f"{result['device']}, {result['threads']} thread(s), width {args.width}, "
        f"batch {args.batch}, cubes {'x'.join(map(str, args.shape))}, "
        f"best of {args.rounds} rounds of {args.steps} steps"
    )
    print(f"model step (ready tensors): {result['model_step_s'] * 1e3:9.1f} ms")
    print(f"full step (loader+transforms): {result['full_step_s'] * 1e3:6.1f} ms")
    print(f"full / model: {result['full_over_model']:.3f}  (goal <= 1.10)")
    print(
        f"transforms: {result['transform_pairs_per_s_per_cube']:.1f} pairs/s per cube, "
        f"{result['transform_pairs_per_s_batched']:.1f} pairs/s batched"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
