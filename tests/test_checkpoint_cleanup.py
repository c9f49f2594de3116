"""Checkpoint housekeeping: the spare .prev goes when a run finishes; temporaries are named
so that those of a killed run can be found and removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from genesis.atomic import host_tag, remove_stale_temporaries
from genesis.train.checkpoint import (
    finish_checkpoint,
    load_checkpoint,
    previous_path,
    save_checkpoint,
)


def test_finish_removes_the_spare_copy_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(2)})
    save_checkpoint(path, {"epoch": 2, "w": torch.zeros(2)})
    prev = previous_path(path)
    assert load_checkpoint(prev)["epoch"] == 1  # type: ignore[index]
    prev.with_name(prev.name + ".tmp").write_bytes(b"staging left by a kill")
    finish_checkpoint(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert load_checkpoint(path)["epoch"] == 2  # type: ignore[index]
    finish_checkpoint(path)  # nothing left to remove: no error
    finish_checkpoint(tmp_path / "never-written.pt")


def test_checkpoint_temporaries_of_a_killed_run_are_found(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    stale = tmp_path / f".checkpoint.pt.tmp.{process.pid}.{host_tag()}.abcd1234.pt"
    stale.write_bytes(b"half a checkpoint")
    live = tmp_path / f".checkpoint.pt.tmp.{os.getpid()}.{host_tag()}.abcd1234.pt"
    live.write_bytes(b"being written")
    assert remove_stale_temporaries([path, previous_path(path)]) == [stale]
    assert live.exists()
