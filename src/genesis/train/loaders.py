"""DataLoaders over cube shards: seeded shuffling, worker seeding, rank splits.

Training order: ``GlobalBatchSampler`` (a ``DistributedSampler``, used for one process
too, so the code path is the same) shuffles all training cubes with ``torch.randperm``
seeded by ``derive_seed(seed, "shuffle") + epoch``, cuts the permutation into global
batches of ``batch_size`` and hands process r the r-th contiguous slice of
``batch_size / world_size`` cubes of each. Step k therefore covers positions
k*batch .. (k+1)*batch - 1 of the same permutation for any number of processes, and each
process's cubes are consecutive positions (torch's sampler interleaves them instead),
which lets the transforms be seeded per group of consecutive positions
(``genesis.train.loop``).

Validation: a fixed, seeded subset of ``val_cubes`` cubes (all when None), in index
order, dealt round-robin to the processes.

Workers: ``num_workers=None`` adapts to the machine (``default_num_workers``): no worker
processes on one or two cores (a laptop, a small CI runner), else one core per worker
for up to 4 workers, leaving a core for the training process itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from genesis.seeding import derive_seed
from genesis.train.distributed import DistContext
from genesis.train.shards import CubeDataset

#: Most DataLoader workers chosen automatically (per process).
MAX_AUTO_WORKERS = 4


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def default_num_workers(processes: int = 1, cpus: int | None = None) -> int:
    """Workers per process when none is set: 0 on 1-2 cores, else min(4, cores - 1),
    with the cores shared among ``processes`` training processes on this machine."""
    cpus = available_cpus() if cpus is None else cpus
    if cpus <= 2:
        return 0
    return max(0, min(MAX_AUTO_WORKERS, (cpus - 1) // max(1, processes)))


def resolve_num_workers(requested: int | None, processes: int = 1) -> int:
    """``requested`` as given, or ``default_num_workers`` when it is None."""
    return default_num_workers(processes) if requested is None else int(requested)


class GlobalBatchSampler(DistributedSampler):
    """Seeded epoch shuffle, cut into global batches; this process takes its slice of each.

    Incomplete last batches are dropped, so every process runs the same number of steps.
    """

    def __init__(self, dataset: Dataset, *, global_batch: int, ctx: DistContext, seed: int) -> None:
        super().__init__(
            dataset,
            num_replicas=ctx.world_size,
            rank=ctx.rank,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )
        if global_batch % ctx.world_size:
            raise ValueError(
                f"global batch {global_batch} is not divisible by {ctx.world_size} processes"
            )
        self.global_batch = global_batch
        self.steps = len(dataset) // global_batch  # type: ignore[arg-type]
        self.local_batch = global_batch // ctx.world_size
        self.num_samples = self.steps * self.local_batch
        self.total_size = self.steps * global_batch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=generator)  # type: ignore[arg-type]
        order = order[: self.total_size].view(self.steps, self.num_replicas, self.local_batch)
        return iter(order[:, self.rank].reshape(-1).tolist())

    def __len__(self) -> int:
        return self.num_samples


class IndexedCubes(Dataset):
    """Some cubes of a dataset, each returned with its index in that dataset."""

    def __init__(self, dataset: CubeDataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
        index = self.indices[item]
        return self.dataset[index], index


def _seed_worker(worker_id: int) -> None:
    """Seed NumPy in a DataLoader worker from torch's per-worker seed (itself seeded)."""
    np.random.seed(torch.initial_seed() % 2**32)


def train_loader(
    dataset: CubeDataset,
    *,
    seed: int,
    local_batch: int,
    ctx: DistContext,
    num_workers: int | None,
    pin_memory: bool,
) -> DataLoader:
    """Batches of ``local_batch`` cubes (b, 1, X, Y, Z); call ``sampler.set_epoch`` first.

    ``num_workers`` None: ``default_num_workers`` for ``ctx.world_size`` processes.
    """
    num_workers = resolve_num_workers(num_workers, ctx.world_size)
    sampler = GlobalBatchSampler(
        dataset,
        global_batch=local_batch * ctx.world_size,
        ctx=ctx,
        seed=derive_seed(seed, "shuffle") % 2**62,
    )
    return DataLoader(
        dataset,
        batch_size=local_batch,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(derive_seed(seed, "loader", ctx.rank)),
    )


def validation_indices(n_cubes: int, limit: int | None, seed: int) -> list[int]:
    """A fixed seeded subset of ``limit`` cube indices (sorted), or all of them."""
    if limit is None or limit >= n_cubes:
        return list(range(n_cubes))
    chosen = np.random.default_rng(derive_seed(seed, "val-subset")).choice(
        n_cubes, size=limit, replace=False
    )
    return sorted(int(i) for i in chosen)


def val_loader(
    dataset: CubeDataset,
    indices: Sequence[int],
    *,
    batch: int,
    ctx: DistContext,
    num_workers: int | None,
    pin_memory: bool,
) -> DataLoader:
    """This process's share of the validation cubes, as (cubes, indices) batches.

    ``num_workers`` None: ``default_num_workers``, at most 2 (validation is short).
    """
    if num_workers is None:
        num_workers = min(2, default_num_workers(ctx.world_size))
    share = IndexedCubes(dataset, list(indices)[ctx.rank :: ctx.world_size])
    return DataLoader(
        share,
        batch_size=batch,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        worker_init_fn=_seed_worker,
    )
