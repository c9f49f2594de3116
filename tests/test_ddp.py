"""DDP on the CPU (gloo, 2 processes): same losses as one process with the same global batch.

Also: batch norm over the global batch, and resuming a 2-process checkpoint with 1 process.
"""

from __future__ import annotations

import csv
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from genesis.cli import build_parser, main
from genesis.train.distributed import GlobalBatchNorm3d, convert_sync_batchnorm, torchrun_command
from genesis.train.pretrain import pretrain
from genesis.train.settings import PretrainSettings
from genesis.train.synthetic import write_synthetic_shard

SHAPE = (16, 16, 16)
# transform_group 2 divides the per-process batch of 1 process (4) and of 2 (2): the same
# cubes get the same transformations in both runs.
TINY = {"width": 4, "batch_size": 4, "num_workers": 0, "lr": 0.1, "transform_group": 2}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _batchnorm_worker(rank: int, port: int, x: torch.Tensor, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        norm = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm3d(3)), torch.device("cpu"))
        assert isinstance(norm[0], GlobalBatchNorm3d)
        with torch.no_grad():
            norm[0].weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        part = x[rank * 2 : (rank + 1) * 2].clone().requires_grad_(True)
        out = norm(part)
        weights = torch.arange(out.numel(), dtype=torch.float32).view_as(out) / out.numel()
        # The global loss is the sum over processes, as DDP's gradient average assumes.
        (out * weights).sum().backward()
        for p in norm.parameters():  # what DDP does: sum parameter gradients over ranks
            dist.all_reduce(p.grad)
        torch.save(
            {
                "out": out.detach(),
                "grad": part.grad,
                "wgrad": norm[0].weight.grad,
                "mean": norm[0].running_mean,
                "var": norm[0].running_var,
            },
            Path(folder) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_global_batchnorm_matches_one_process(tmp_path: Path) -> None:
    x = torch.randn(4, 3, 2, 2, 2) * 3 + 5
    # fork: the children inherit the imported torch instead of paying for it again.
    mp.start_processes(
        _batchnorm_worker,
        args=(_free_port(), x, str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    reference = nn.BatchNorm3d(3)
    with torch.no_grad():
        reference.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    full = x.clone().requires_grad_(True)
    out = reference(full)
    weights = torch.arange(out[:2].numel(), dtype=torch.float32).view_as(out[:2]) / out[:2].numel()
    (out * torch.cat([weights, weights])).sum().backward()

    torch.testing.assert_close(torch.cat([r["out"] for r in ranks]), out.detach())
    torch.testing.assert_close(torch.cat([r["grad"] for r in ranks]), full.grad)
    torch.testing.assert_close(ranks[0]["wgrad"], reference.weight.grad)
    torch.testing.assert_close(ranks[1]["mean"], reference.running_mean)
    torch.testing.assert_close(ranks[0]["var"], reference.running_var)


def test_torchrun_command() -> None:
    command = torchrun_command(2, ["pretrain", "--gpus", "2"])
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in command and "--nproc_per_node=2" in command
    assert command[-5:] == ["-m", "genesis.cli", "pretrain", "--gpus", "2"]
    with pytest.raises(ValueError):
        torchrun_command(1, [])


def _losses(path: Path) -> np.ndarray:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return np.array(
        [[float(r[k]) for k in ("train_loss", "val_loss", "identity_loss", "lr")] for r in rows]
    )


def _pretrain_worker(rank: int, port: int, train: Path, val: Path, out: Path) -> None:
    """One rank of a 2-process run, with the environment torchrun would set."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    pretrain(
        [train],
        [val],
        out,
        seed=3,
        progress=False,
        settings=PretrainSettings.from_mapping({**TINY, "max_epochs": 1}),
    )


def test_two_processes_match_one_and_resume_with_one(tmp_path: Path) -> None:
    train = write_synthetic_shard(tmp_path / "train.npy", 12, SHAPE, seed=1)
    val = write_synthetic_shard(tmp_path / "val.npy", 5, SHAPE, seed=2, split="val")
    two = tmp_path / "two"
    mp.start_processes(
        _pretrain_worker,
        args=(_free_port(), train, val, two),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    assert len(_losses(two / "metrics.csv")) == 1

    # One process, straight for two epochs, with the same global batch of 4.
    one = tmp_path / "one"
    pretrain(
        [train],
        [val],
        one,
        seed=3,
        progress=False,
        settings=PretrainSettings.from_mapping({**TINY, "max_epochs": 2}),
    )
    # Resume the two-process checkpoint with one process for the second epoch.
    pretrain(
        [train],
        [val],
        two,
        seed=3,
        progress=False,
        settings=PretrainSettings.from_mapping({**TINY, "max_epochs": 2}),
    )

    expected, got = _losses(one / "metrics.csv"), _losses(two / "metrics.csv")
    assert got.shape == expected.shape == (2, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_cli_reexecutes_under_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--gpus 2 replaces the process with torchrun running the same arguments."""
    calls: list[list[str]] = []

    def fake_execv(path: str, command: list[str]) -> None:
        calls.append(command)
        raise SystemExit(0)

    for name in ("WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "execv", fake_execv)
    argv = [
        "pretrain",
        "--train",
        "a.npy",
        "b.npy",
        "--val",
        "c.npy",
        "--output-dir",
        str(tmp_path),
        "--variant",
        "nonlinear",
        "--seed",
        "7",
        "--threads",
        "4",
        "--gpus",
        "2",
        "--settings",
        '{"batch_size": 8}',
    ]
    with pytest.raises(SystemExit):
        main(argv)
    (command,) = calls
    assert command[:5] == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
    ]
    relaunched = build_parser().parse_args(command[command.index("genesis.cli") + 1 :])
    original = build_parser().parse_args(argv)
    assert vars(relaunched).keys() == vars(original).keys()
    for key in ("train", "val", "output_dir", "variant", "seed", "threads", "gpus", "settings"):
        assert getattr(relaunched, key) == getattr(original, key), key
