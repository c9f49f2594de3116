"""Atomic checkpoints: never a corrupt latest file, fallback to .prev, RNG round trips."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from genesis.errors import InputError
from genesis.train.checkpoint import (
    load_checkpoint,
    previous_path,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)


def test_missing_checkpoint_is_none(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path / "checkpoint.pt") is None


def test_round_trip_and_previous_kept(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "weights": torch.ones(3)})
    assert not previous_path(path).exists()
    save_checkpoint(path, {"epoch": 2, "weights": torch.zeros(3)})
    assert load_checkpoint(path)["epoch"] == 2
    assert torch.load(previous_path(path), weights_only=True)["epoch"] == 1
    leftovers = [
        p.name for p in tmp_path.iterdir() if p.name not in {"checkpoint.pt", "checkpoint.pt.prev"}
    ]
    assert leftovers == []


def test_failed_save_keeps_old_latest(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1})
    with pytest.raises(Exception):  # noqa: B017 - any pickling error will do
        save_checkpoint(path, {"epoch": 2, "bad": lambda: None})
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_corrupt_latest_falls_back_to_previous(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1})
    save_checkpoint(path, {"epoch": 2})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a truncated write
    with caplog.at_level(logging.WARNING):
        state = load_checkpoint(path)
    assert state == {"epoch": 1}
    assert "falling back" in caplog.text and str(path) in caplog.text


def test_corrupt_without_previous_names_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"checkpoint\.pt"):
        load_checkpoint(path)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    """weights_only loading: arbitrary objects in a checkpoint are an error, not code."""
    path = tmp_path / "checkpoint.pt"
    torch.save({"settings": Path("x")}, path)
    with pytest.raises(InputError, match="cannot read checkpoint"):
        load_checkpoint(path)


def test_rng_state_round_trip_through_file(tmp_path: Path) -> None:
    torch_gen = torch.Generator().manual_seed(11)
    numpy_gen = np.random.default_rng(12)
    gens = {"transform": torch_gen, "shuffle": numpy_gen}
    save_checkpoint(tmp_path / "c.pt", {"rng": rng_state(gens)})

    def draw() -> list[float]:
        return [
            torch.rand(1, generator=torch_gen).item(),
            numpy_gen.random(),
            torch.rand(1).item(),
            np.random.rand(),
            random.random(),
        ]

    first = draw()
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"], gens)
    assert draw() == first


def test_restore_unknown_generator_fails() -> None:
    state = rng_state()
    with pytest.raises(KeyError, match="extra"):
        restore_rng_state(state, {"extra": torch.Generator()})
