"""Where a process sits in a torchrun launch, and the command that starts one.

Kept free of torch imports: ``genesis pretrain --gpus N`` decides whether to re-execute
itself under torchrun before it imports anything heavy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a torchrun launch (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> DistContext:
    """Read torchrun's environment; absent variables mean a single process."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    return DistContext(
        rank=int(os.environ.get("RANK", 0)),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", world)),
    )


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", 1)) > 1


def torchrun_command(gpus: int, argv: Sequence[str]) -> list[str]:
    """The command that reruns ``genesis <argv>`` as ``gpus`` processes on this machine.

    Uses ``python -m torch.distributed.run`` (what the ``torchrun`` script runs) with this
    interpreter, so the same environment is used even where ``torchrun`` is not on PATH.
    ``--standalone`` picks a free rendezvous port, so concurrent jobs do not collide.
    """
    if gpus < 2:
        raise ValueError(f"torchrun is for 2 or more processes, got gpus={gpus}")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={gpus}",
        "-m",
        "genesis.cli",
        *argv,
    ]
