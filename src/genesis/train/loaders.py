"""DataLoaders over cube shards: seeded shuffling, worker seeding, rank splits.

Training order: a ``DistributedSampler`` (also for one process, so the code path is the
same) shuffles all training cubes with ``torch.randperm`` seeded by
``derive_seed(seed, "shuffle") + epoch``, truncates to a multiple of the number of
processes and hands process r every world_size-th cube starting at r. Each process loads
``batch_size / world_size`` cubes per step, so step k covers positions
k*batch .. (k+1)*batch - 1 of the same permutation for any number of processes.

Validation: a fixed, seeded subset of ``val_cubes`` cubes (all when None), in index
order, dealt round-robin to the processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from genesis.seeding import derive_seed
from genesis.train.distributed import DistContext
from genesis.train.shards import CubeDataset


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


def train_loader(dataset: CubeDataset, *, seed: int, local_batch: int, ctx: DistContext,
                 num_workers: int, pin_memory: bool) -> DataLoader:
    """Batches of ``local_batch`` cubes (b, 1, X, Y, Z); call ``sampler.set_epoch`` first."""
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=derive_seed(seed, "shuffle") % 2**62,
                                 drop_last=True)
    return DataLoader(
        dataset, batch_size=local_batch, sampler=sampler, drop_last=True,
        num_workers=num_workers, pin_memory=pin_memory,
        persistent_workers=num_workers > 0, worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(derive_seed(seed, "loader", ctx.rank)),
    )


def validation_indices(n_cubes: int, limit: int | None, seed: int) -> list[int]:
    """A fixed seeded subset of ``limit`` cube indices (sorted), or all of them."""
    if limit is None or limit >= n_cubes:
        return list(range(n_cubes))
    chosen = np.random.default_rng(derive_seed(seed, "val-subset")).choice(
        n_cubes, size=limit, replace=False)
    return sorted(int(i) for i in chosen)


def val_loader(dataset: CubeDataset, indices: Sequence[int], *, batch: int, ctx: DistContext,
               num_workers: int, pin_memory: bool) -> DataLoader:
    """This process's share of the validation cubes, as (cubes, indices) batches."""
    share = IndexedCubes(dataset, list(indices)[ctx.rank::ctx.world_size])
    return DataLoader(share, batch_size=batch, shuffle=False, num_workers=num_workers,
                      pin_memory=pin_memory, persistent_workers=num_workers > 0,
                      worker_init_fn=_seed_worker)
