"""Restoration pretraining's epoch: seeded transformations, the training batches and
loss handed to the shared step (``genesis.train.engine.train_epoch``), and the validation.

Seeding of the transformations. Transforms run batched on the training device, after the
batch is moved there, in groups of ``group`` consecutive cubes (``transform_group``; by
default the whole per-process batch, one call per step). Each group gets its own
``torch.Generator`` seeded with ``derive_seed(seed, "transform", "train", epoch, position)``,
where ``position`` is the global position of the group's first cube in the epoch
(step * batch_size + slot; process r holds slots r*b .. (r+1)*b - 1, see
``genesis.train.loaders``). So the seeds differ between processes, steps and epochs, and
a cube's transformation depends only on (seed, epoch, its group): with a ``transform_group``
that divides the per-process batch of every world size in use (1 always does), one process
and eight produce the same pairs, and a resumed run continues the same stream whatever its
number of processes. Larger groups are faster (fewer, larger kernel launches).

Validation cubes are transformed one by one, seeded by their index in the validation set
and not by epoch: the validation pairs are the same every epoch (comparable losses) and do
not depend on the validation batch size or the number of processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from genesis.seeding import derive_seed
from genesis.train.distributed import DistContext, all_reduce_sum
from genesis.train.engine import BatchMean, StepOptions
from genesis.train.engine import train_epoch as train_steps

__all__ = [
    "StepOptions",
    "Transform",
    "cube_seed",
    "restoration_batches",
    "restoration_loss",
    "train_epoch",
    "train_positions",
    "transform_cubes",
    "transform_groups",
    "validate",
]

#: A batched restoration transform: (cubes (N, 1, X, Y, Z), generator) -> (inputs, targets).
Transform = Callable[[Tensor, torch.Generator], tuple[Tensor, Tensor]]


def cube_seed(seed: int, split: str, epoch: int | None, position: int) -> int:
    """The transform seed of one cube; ``epoch`` is None for validation (fixed pairs)."""
    if epoch is None:
        return derive_seed(seed, "transform", split, position)
    return derive_seed(seed, "transform", split, epoch, position)


def transform_cubes(
    transform: Transform, cubes: Tensor, seeds: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """Transform each cube of ``cubes`` (B, 1, X, Y, Z) with its own seeded generator."""
    if len(seeds) != cubes.shape[0]:
        raise ValueError(f"{len(seeds)} seeds for {cubes.shape[0]} cubes")
    inputs, targets = [], []
    for i, seed in enumerate(seeds):
        generator = torch.Generator(device=cubes.device).manual_seed(seed)
        x, y = transform(cubes[i : i + 1], generator)
        inputs.append(x)
        targets.append(y)
    return torch.cat(inputs), torch.cat(targets)


def train_positions(step: int, global_batch: int, local_batch: int, ctx: DistContext) -> list[int]:
    """Global positions in the epoch of this process's cubes in ``step``."""
    first = step * global_batch + ctx.rank * local_batch
    return list(range(first, first + local_batch))


def transform_groups(
    transform: Transform, cubes: Tensor, positions: Sequence[int], group: int, seed: int, epoch: int
) -> tuple[Tensor, Tensor]:
    """Transform ``cubes`` in groups of ``group``, each seeded by its first position."""
    if group == cubes.shape[0]:
        generator = torch.Generator(device=cubes.device)
        generator.manual_seed(cube_seed(seed, "train", epoch, positions[0]))
        return transform(cubes, generator)
    pairs = []
    for start in range(0, cubes.shape[0], group):
        generator = torch.Generator(device=cubes.device)
        generator.manual_seed(cube_seed(seed, "train", epoch, positions[start]))
        pairs.append(transform(cubes[start : start + group], generator))
    return torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs])


def restoration_batches(
    batches: Iterable[Tensor],
    transform: Transform,
    *,
    epoch: int,
    seed: int,
    steps: int,
    global_batch: int,
    ctx: DistContext,
    device: torch.device,
    group: int | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """(transformed input, original) pairs of ``steps`` batches, made on ``device``.

    ``epoch`` is 0-based here (the loaders' and the transform seeds' count); ``group``:
    transform group size (None: the whole per-process batch).
    """
    for step, cubes in zip(range(steps), batches, strict=False):
        cubes = cubes.to(device, non_blocking=True)  # (b, 1, X, Y, Z), b = batch / world
        positions = train_positions(step, global_batch, cubes.shape[0], ctx)
        yield transform_groups(transform, cubes, positions, group or cubes.shape[0], seed, epoch)


def restoration_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """MSE between the sigmoid output and the original cube, in fp32 (DDP averages the
    per-process means into the global-batch mean)."""
    return F.mse_loss(outputs.float(), targets.float())


def train_epoch(
    model: nn.Module,
    batches: Iterable[Tensor],
    optimizer: torch.optim.Optimizer,
    transform: Transform,
    *,
    epoch: int,
    seed: int,
    steps: int,
    global_batch: int,
    ctx: DistContext,
    device: torch.device,
    options: StepOptions,
    group: int | None = None,
    on_step: Callable[[int], None] | None = None,
) -> float:
    """Train for ``steps`` global batches; the mean of the global-batch MSE losses.

    ``epoch`` is 0-based; ``group``: transform group size (None: the whole per-process
    batch).
    """
    pairs = restoration_batches(
        batches,
        transform,
        epoch=epoch,
        seed=seed,
        steps=steps,
        global_batch=global_batch,
        ctx=ctx,
        device=device,
        group=group,
    )
    return train_steps(
        model,
        pairs,
        optimizer,
        restoration_loss,
        BatchMean(device, ctx),
        device=device,
        options=options,
        on_step=on_step,
    )


@torch.no_grad()
def validate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    transform: Transform,
    *,
    seed: int,
    ctx: DistContext,
    device: torch.device,
    options: StepOptions,
) -> tuple[float, float]:
    """Mean per-cube MSE of the restoration and of the identity (input vs original).

    ``batches`` yields (cubes, indices into the validation set); each process validates
    its share and the sums are all-reduced, so the result does not depend on the split.
    """
    model.eval()
    sums = torch.zeros(3, device=device, dtype=torch.float64)  # restoration, identity, count
    for cubes, indices in batches:
        cubes = cubes.to(device, non_blocking=True)
        seeds = [cube_seed(seed, "val", None, int(i)) for i in indices]
        inputs, targets = transform_cubes(transform, cubes, seeds)
        with options.autocast(device):
            outputs = model(options.prepare(inputs))
        restoration = (outputs.float() - targets.float()).square().flatten(1).mean(1)
        identity = (inputs.float() - targets.float()).square().flatten(1).mean(1)
        sums += torch.stack(
            [restoration.sum(), identity.sum(), torch.tensor(float(len(cubes)), device=device)]
        ).double()
    all_reduce_sum(sums, ctx)
    if sums[2] == 0:
        raise RuntimeError("the validation loader yielded no cubes")
    return float(sums[0] / sums[2]), float(sums[1] / sums[2])
