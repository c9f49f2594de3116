"""Pretraining: shard checks, settings, a tiny end-to-end run, exact resume, the CLI."""

from __future__ import annotations

import csv
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from genesis.cli import main
from genesis.errors import ConfigError, InputError
from genesis.models import UNet3D, load_weights
from genesis.train.distributed import DistContext
from genesis.train.engine import DivergedError
from genesis.train.loaders import GlobalBatchSampler, validation_indices
from genesis.train.loop import train_positions, transform_groups
from genesis.train.pretrain import pretrain, resume_mismatch
from genesis.train.schedule import EarlyStopping
from genesis.train.settings import PretrainSettings
from genesis.train.shards import CubeDataset, check_shard, check_shards
from genesis.train.synthetic import write_synthetic_shard

SHAPE = (16, 16, 16)
TINY = {"width": 4, "batch_size": 4, "num_workers": 0, "lr": 0.1, "max_epochs": 2}


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cubes")
    return {
        "train": write_synthetic_shard(folder / "train.npy", 12, SHAPE, seed=1),
        "val": write_synthetic_shard(folder / "val.npy", 5, SHAPE, seed=2, split="val"),
    }


def _run(shards: dict[str, Path], out: Path, **overrides: object) -> None:
    settings = PretrainSettings.from_mapping({**TINY, **overrides})
    pretrain([shards["train"]], [shards["val"]], out, seed=3, settings=settings, progress=False)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


# --- settings -------------------------------------------------------------------------


def test_defaults_are_the_release() -> None:
    s = PretrainSettings()
    assert (s.width, s.batch_size, s.optimizer, s.lr, s.momentum, s.weight_decay) == (
        32,
        6,
        "sgd",
        1.0,
        0.9,
        0.0,
    )
    assert (s.lr_patience, s.lr_factor, s.early_stop_patience, s.max_epochs) == (10, 0.5, 50, 10000)


@pytest.mark.parametrize(
    ("mapping", "key"),
    [
        ({"bacth_size": 6}, "bacth_size"),
        ({"batch_size": 0}, r"pretrain\.settings\.batch_size"),
        ({"lr_factor": 1.5}, r"pretrain\.settings\.lr_factor"),
        ({"amp": "fp16"}, r"pretrain\.settings\.amp"),
        ({"cube_size": [32, 32]}, r"pretrain\.settings\.cube_size"),
        ({"momentum": -1}, r"pretrain\.settings\.momentum"),
        ({"lr": float("inf")}, r"pretrain\.settings\.lr must be a finite number"),
        ({"lr": 0}, r"pretrain\.settings\.lr"),
        ({"weight_decay": -0.1}, r"pretrain\.settings\.weight_decay"),
        ({"max_minutes": 0}, r"pretrain\.settings\.max_minutes"),
    ],
)
def test_bad_settings_name_the_key(mapping: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        PretrainSettings.from_mapping(mapping)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lr", float("inf")),
        ("lr", float("nan")),
        ("lr", -1.0),
        ("momentum", -1.0),
        ("momentum", float("inf")),
        ("weight_decay", float("nan")),
        ("lr_factor", float("nan")),
        ("lr_factor", 1.0),
        ("max_minutes", float("inf")),
    ],
)
def test_numbers_are_checked_when_built_directly(key: str, value: float) -> None:
    """``__post_init__`` checks what ``from_mapping`` cannot see (direct construction)."""
    with pytest.raises(ConfigError, match=rf"pretrain\.settings\.{key} must be a finite"):
        PretrainSettings(**{key: value})  # type: ignore[arg-type]


def test_resume_mismatch_ignores_run_length() -> None:
    assert resume_mismatch({"lr": 1.0, "max_epochs": 5}, {"lr": 1.0, "max_epochs": 9}) == []
    assert resume_mismatch({"lr": 1.0, "seed": 1}, {"lr": 0.5, "seed": 1}) == ["lr"]


# --- shards ---------------------------------------------------------------------------


def _save(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.full((2, 16, 16, 16), np.nan, np.float16), "NaN"),
        (np.zeros((0, 16, 16, 16), np.float16), "no cubes"),
        (np.zeros((2, 16, 16), np.float16), "4D"),
        (np.zeros((2, 20, 16, 16), np.float16), "x=20"),
        (np.full((2, 16, 16, 16), 2.0, np.float16), r"\[0, 1\]"),
        (np.zeros((2, 16, 16, 16), np.int16), "float16"),
    ],
)
def test_bad_shards_name_the_file(tmp_path: Path, array: np.ndarray, problem: str) -> None:
    path = _save(tmp_path / "bad.npy", array)
    with pytest.raises(InputError, match=problem) as error:
        check_shard(path)
    assert error.value.path == path


def test_nan_found_beyond_the_first_chunk(tmp_path: Path) -> None:
    array = np.zeros((70, 16, 16, 16), np.float16)
    array[66, 3, 4, 5] = np.nan
    with pytest.raises(InputError, match="cube 66"):
        check_shard(_save(tmp_path / "late.npy", array))


def test_shard_lists(tmp_path: Path, shards: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="no train cube shards"):
        check_shards([], "train")
    with pytest.raises(InputError, match="does not exist"):
        check_shards([tmp_path / "missing.npy"], "train")
    other = _save(tmp_path / "other.npy", np.zeros((2, 32, 32, 16), np.float16))
    with pytest.raises(InputError, match="differs") as error:
        check_shards([shards["train"], other], "train")
    assert error.value.path == other


def test_dataset_streams_float32_cubes(shards: dict[str, Path]) -> None:
    infos = check_shards([shards["train"], shards["val"]], "train")
    dataset = CubeDataset(infos)
    assert len(dataset) == 17
    raw = np.load(shards["val"])
    cube = dataset[12 + 3]
    assert cube.shape == (1, *SHAPE) and cube.dtype == torch.float32
    np.testing.assert_array_equal(cube[0].numpy(), raw[3].astype(np.float32))
    with pytest.raises(IndexError):
        dataset[17]
    clone = pickle.loads(pickle.dumps(dataset))  # what a DataLoader worker receives
    assert clone._arrays is None and torch.equal(clone[15], cube)


# --- seeding --------------------------------------------------------------------------


def test_rank_positions_cover_the_global_batch() -> None:
    one = train_positions(3, 6, 6, DistContext())
    two = [
        p
        for rank in range(2)
        for p in train_positions(3, 6, 3, DistContext(rank=rank, world_size=2))
    ]
    assert two == one == list(range(18, 24))


@pytest.mark.parametrize("n", [12, 13, 17])
def test_sampler_slices_one_permutation(n: int) -> None:
    """Two processes see, step by step, the two halves of the one-process batches."""
    dataset = list(range(n))
    one = GlobalBatchSampler(dataset, global_batch=4, ctx=DistContext(), seed=9)
    two = [
        GlobalBatchSampler(dataset, global_batch=4, ctx=DistContext(rank=r, world_size=2), seed=9)
        for r in range(2)
    ]
    for sampler in (one, *two):
        sampler.set_epoch(5)
    order = list(one)
    assert len(order) == len(one) == 4 * (n // 4) and len(set(order)) == len(order)
    halves = [list(s) for s in two]
    assert [
        i for step in range(n // 4) for half in halves for i in half[2 * step : 2 * step + 2]
    ] == order
    one.set_epoch(6)
    assert list(one) != order


def test_transform_groups_are_world_size_invariant() -> None:
    """Group seeds depend on positions only: any split into processes gives the same pairs."""
    from genesis.train.pretrain import build_transform

    transform = build_transform("all", {})
    cubes = torch.rand(4, 1, *SHAPE, generator=torch.Generator().manual_seed(0))
    whole = transform_groups(transform, cubes, [8, 9, 10, 11], 2, seed=1, epoch=2)
    halves = [
        transform_groups(transform, cubes[i : i + 2], [8 + i, 9 + i], 2, seed=1, epoch=2)
        for i in (0, 2)
    ]
    for k in range(2):
        assert torch.equal(whole[k], torch.cat([h[k] for h in halves]))
    other_epoch = transform_groups(transform, cubes, [8, 9, 10, 11], 2, seed=1, epoch=3)
    assert not torch.equal(whole[0], other_epoch[0])


def test_validation_subset_is_fixed() -> None:
    assert validation_indices(10, None, 0) == list(range(10))
    subset = validation_indices(100, 7, 5)
    assert subset == validation_indices(100, 7, 5) and len(set(subset)) == 7


# --- end to end -----------------------------------------------------------------------


def test_pretrain_writes_weights_metrics_and_checkpoint(
    tmp_path: Path, shards: dict[str, Path]
) -> None:
    out = tmp_path / "run"
    _run(shards, out)
    rows = _rows(out / "metrics.csv")
    assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "identity_loss", "lr", "seconds"]
    assert [r["epoch"] for r in rows] == ["1", "2"]
    # Fixed validation pairs: the identity baseline is identical in every epoch.
    assert rows[0]["identity_loss"] == rows[1]["identity_loss"]
    assert float(rows[0]["identity_loss"]) > 0
    model = UNet3D(width=4)
    load_weights(model, out / "weights.pt")
    provenance = (out / "weights.json").read_text()
    assert "data_manifests" in provenance and "train.csv" in provenance
    assert (out / "checkpoint.pt").is_file()


def test_resume_gives_the_same_weights(tmp_path: Path, shards: dict[str, Path]) -> None:
    _run(shards, tmp_path / "straight")
    _run(shards, tmp_path / "resumed", max_epochs=1)  # "killed" after epoch 1
    _run(shards, tmp_path / "resumed")  # rerun: resumes from the checkpoint
    a = load_file(tmp_path / "straight" / "weights.safetensors")
    b = load_file(tmp_path / "resumed" / "weights.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    straight, resumed = (
        [
            {k: v for k, v in row.items() if k != "seconds"}
            for row in _rows(tmp_path / run / "metrics.csv")
        ]
        for run in ("straight", "resumed")
    )
    assert straight == resumed


def test_changed_settings_start_afresh(
    tmp_path: Path, shards: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    _run(shards, out, max_epochs=1)
    with caplog.at_level(logging.WARNING):
        _run(shards, out, max_epochs=1, lr=0.05)
    assert "starting afresh" in caplog.text
    assert "checkpoint was trained with other settings (lr)" in caplog.text
    assert [r["lr"] for r in _rows(out / "metrics.csv")] == ["0.05"]


def test_rebuilt_shards_start_afresh(
    tmp_path: Path, shards: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Snakemake rebuilt the cubes: the checkpoint on the old ones must not be resumed."""
    out = tmp_path / "run"
    _run(shards, out, max_epochs=1)
    os.utime(shards["train"], ns=(0, shards["train"].stat().st_mtime_ns + 10**9))
    with caplog.at_level(logging.WARNING):
        _run(shards, out, max_epochs=2)
    assert "checkpoint belongs to another run (shard_stamps" in caplog.text
    assert [r["epoch"] for r in _rows(out / "metrics.csv")] == ["1", "2"]


def test_divergence_raises_and_exports_no_weights(tmp_path: Path, shards: dict[str, Path]) -> None:
    out = tmp_path / "run"
    with pytest.raises(
        DivergedError,
        match=r"pretrain: diverged at epoch 1 .*"
        r"Lower pretrain\.settings\.lr",
    ):
        _run(shards, out, lr=1e30)
    assert not list(out.glob("weights*")) and not (out / "checkpoint.pt").exists()


def test_divergence_keeps_the_last_good_epoch(
    tmp_path: Path, shards: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NaN validation loss in epoch 2: epoch 2 is neither checkpointed nor exported."""
    import genesis.train.pretrain as stage

    real = stage.validate
    calls: list[int] = []

    def nan_at_second(*args: object, **kwargs: object) -> tuple[float, float]:
        calls.append(1)
        loss, identity = real(*args, **kwargs)  # type: ignore[arg-type]
        return (float("nan") if len(calls) == 2 else loss), identity

    monkeypatch.setattr(stage, "validate", nan_at_second)
    out = tmp_path / "run"
    with pytest.raises(DivergedError, match=r"epoch 2 .*the checkpoint of epoch 1 is kept"):
        _run(shards, out, max_epochs=3)
    assert [r["epoch"] for r in _rows(out / "metrics.csv")] == ["1"]
    assert load_file(out / "weights.safetensors")  # epoch 1's, exported as the best so far
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1


def test_cli_reports_divergence_in_one_line(
    tmp_path: Path, shards: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "pretrain",
            "--train",
            str(shards["train"]),
            "--val",
            str(shards["val"]),
            "--output-dir",
            str(tmp_path / "out"),
            "--no-progress",
            "--settings",
            '{"width": 4, "batch_size": 4, "num_workers": 0, "lr": 1e30}',
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "diverged at epoch 1" in err and "Traceback" not in err


def test_cli_reports_bad_shard_in_one_line(
    tmp_path: Path, shards: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _save(tmp_path / "nan.npy", np.full((2, 16, 16, 16), np.nan, np.float16))
    code = main(
        [
            "pretrain",
            "--train",
            str(bad),
            "--val",
            str(shards["val"]),
            "--output-dir",
            str(tmp_path / "out"),
            "--settings",
            '{"width": 4}',
        ]
    )
    assert code == 2
    assert "nan.npy" in capsys.readouterr().err


def test_cli_refuses_a_cube_size_mismatch(
    tmp_path: Path, shards: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "pretrain",
            "--train",
            str(shards["train"]),
            "--val",
            str(shards["val"]),
            "--output-dir",
            str(tmp_path / "out"),
            "--settings",
            '{"width": 4, "cube_size": [32, 32, 16]}',
        ]
    )
    assert code == 2
    assert "train.npy" in capsys.readouterr().err


def test_time_budget_stops_between_epochs(tmp_path: Path, shards: dict[str, Path]) -> None:
    out = tmp_path / "run"
    _run(shards, out, max_epochs=5, max_minutes=1e-4)
    assert [r["epoch"] for r in _rows(out / "metrics.csv")] == ["1"]
    assert (out / "weights.safetensors").is_file()


def test_early_stopping_counts_epochs_without_improvement() -> None:
    stopper = EarlyStopping(patience=2)
    assert stopper.update(0.5, 1) and not stopper.should_stop
    assert not stopper.update(0.5, 2)  # equal is not better
    assert stopper.update(0.4, 3) and stopper.bad_epochs == 0
    stopper.update(0.45, 4)
    stopper.update(0.41, 5)
    assert stopper.should_stop and (stopper.best, stopper.best_epoch) == (0.4, 3)
    clone = EarlyStopping(patience=2)
    clone.load_state_dict(stopper.state_dict())
    assert clone == stopper
