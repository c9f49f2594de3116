"""Fine-tuning: settings, initialisations, outputs, resume and the weights key report."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from target_task_data import make_ncc_task, make_seg_task, tiny_settings

from genesis.cli import main
from genesis.errors import ConfigError, InputError, WeightsError
from genesis.io.tables import FINETUNE_CURVE_COLUMNS
from genesis.models import GenesisClassifier, UNet3D, load_weights, save_weights
from genesis.tasks.finetune import (
    FinetuneSettings,
    Init,
    NccData,
    finetune,
    resolve_settings,
)
from genesis.tasks.losses import LogitBCELoss, SoftDiceLoss


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tasks")
    return {
        "ncc": make_ncc_task(root),
        "lcs": make_seg_task(root, "lcs"),
        "bms": make_seg_task(root, "bms", seed=1, inplane_size=20),
    }


@pytest.fixture(scope="module")
def unet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A width-2 U-Net weights file in the release layout (stands in for pretraining)."""
    torch.manual_seed(123)
    stem = tmp_path_factory.mktemp("pretrain") / "weights"
    return save_weights(UNet3D(width=2), stem, provenance={"stage": "test"}, epoch=7)[0]


def _read_curves(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# --- losses and settings ---------------------------------------------------------------


def test_soft_dice_hand_computed() -> None:
    # p = (1, 0.5), t = (1, 0): Dice = 2 * 1 / (1.5 + 1) = 0.8.
    p = torch.tensor([1.0, 0.5]).reshape(1, 1, 2, 1, 1)
    t = torch.tensor([1.0, 0.0]).reshape(1, 1, 2, 1, 1)
    assert float(SoftDiceLoss(smooth=0.0)(p, t)) == pytest.approx(0.2)
    # Pooled over the batch: a second, empty sample adds nothing to either sum.
    p2, t2 = torch.cat([p, torch.zeros_like(p)]), torch.cat([t, torch.zeros_like(t)])
    assert float(SoftDiceLoss(smooth=0.0)(p2, t2)) == pytest.approx(0.2)


def test_bce_on_logits_hand_computed() -> None:
    loss = LogitBCELoss()(torch.tensor([[0.0], [2.0]]), torch.tensor([1.0, 0.0]))
    expected = (np.log(2.0) + np.log(1 + np.exp(2.0))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_task_defaults_follow_the_paper() -> None:
    ncc, lcs, bms = (resolve_settings(t, {}) for t in ("ncc", "lcs", "bms"))
    assert (ncc.lr, ncc.batch_size, ncc.early_stop_patience) == (1e-3, 24, 10)
    assert (lcs.lr, lcs.early_stop_patience) == (1e-2, 20)
    assert (bms.lr, bms.early_stop_patience) == (1e-3, 30)
    assert lcs.lr_factor == 0.5
    changed = resolve_settings("lcs", {"lr": 0.5, "cube_size": [32, 32, 16]})
    assert changed.lr == 0.5 and changed.early_stop_patience == 20
    assert changed.cube_size == (32, 32, 16)


def test_bad_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"tasks.lcs.finetune: unknown key"):
        resolve_settings("lcs", {"learning_rate": 0.1})
    with pytest.raises(ConfigError, match=r"tasks.bms.finetune.batch_size must be an integer"):
        resolve_settings("bms", {"batch_size": "8"})
    with pytest.raises(ConfigError, match=r"tasks.ncc.finetune.cube_size"):
        resolve_settings("ncc", {"cube_size": [30, 32, 16]})
    with pytest.raises(ConfigError, match=r"tasks.lcs.finetune.lr_factor"):
        resolve_settings("lcs", {"lr_factor": 2.0})
    with pytest.raises(ConfigError, match="not a built-in task: its kind must be one of"):
        resolve_settings("ncs", {})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lr", float("inf")),
        ("lr", 0.0),
        ("lr_factor", float("nan")),
        ("lr_factor", 1.0),
        ("foreground_ratio", float("inf")),
        ("foreground_ratio", -0.1),
        ("positive_fraction", float("nan")),
        ("positive_fraction", 1.5),
        ("max_minutes", float("inf")),
        ("max_minutes", 0.0),
    ],
)
def test_numbers_are_finite_and_in_range(key: str, value: float) -> None:
    """Checked in ``__post_init__`` (direct construction) and named with the task's section."""
    with pytest.raises(ConfigError, match=rf"tasks\.<task>\.finetune\.{key} must be a finite"):
        FinetuneSettings(**{key: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=rf"tasks\.bms\.finetune\.{key} must be a finite"):
        resolve_settings("bms", {key: value})


def test_init_rules(unet_weights: Path) -> None:
    with pytest.raises(ConfigError, match="needs --weights"):
        Init("genesis")
    with pytest.raises(ConfigError, match="scratch starts from random"):
        Init("scratch", unet_weights)
    with pytest.raises(ConfigError, match="init must be"):
        Init("imagenet", unet_weights)
    with pytest.raises(InputError, match="not found"):
        Init("released", unet_weights.parent / "missing.pt")
    defaults = resolve_settings("lcs", {})
    assert Init("released", unet_weights).batch_stats(defaults) is True
    assert Init("genesis-nonlinear", unet_weights).batch_stats(defaults) is False
    assert Init("scratch").batch_stats(defaults) is False
    forced = resolve_settings("lcs", {"batch_stats": False})
    assert Init("released", unet_weights).batch_stats(forced) is False


# --- training --------------------------------------------------------------------------


def test_ncc_batches_balanced_and_seeded(tasks: dict[str, Path]) -> None:
    # The fixture's training split holds 8 positives among 16 cubes: ask for 3 of 4.
    data = NccData(tasks["ncc"], resolve_settings("ncc", tiny_settings(positive_fraction=0.75)))
    batches = list(data.batches(epoch_seed=9, steps=5, batch_size=4))
    assert [int(labels.sum()) for _, labels in batches] == [3] * 5
    assert batches[0][0].shape == (4, 1, 16, 16, 8)
    again = list(data.batches(epoch_seed=9, steps=5, batch_size=4))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))
    natural = NccData(tasks["ncc"], resolve_settings("ncc", tiny_settings()))
    seen = torch.cat([labels for _, labels in natural.batches(epoch_seed=9, steps=4, batch_size=4)])
    assert int(seen.sum()) == 8  # one shuffled pass over the 16 cubes


@pytest.mark.parametrize("task", ["ncc", "lcs", "bms"])
def test_finetune_from_scratch_writes_outputs(
    task: str, tasks: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run1"
    settings = resolve_settings(task, tiny_settings())
    result = finetune(task, tasks[task], out, Init("scratch"), seed=5, settings=settings, run=1)
    for name in (
        "weights.pt",
        "weights.safetensors",
        "weights.json",
        "curves.csv",
        "checkpoint.pt",
    ):
        assert (out / name).is_file(), name
    curves = _read_curves(out / "curves.csv")
    assert list(curves[0]) == list(FINETUNE_CURVE_COLUMNS)
    assert [row["epoch"] for row in curves] == ["1", "2"]
    assert all(np.isfinite(float(row["train_loss"])) for row in curves)
    assert result.stop_reason.startswith("max_epochs")
    record = json.loads((out / "weights.json").read_text())
    assert record["finetune"]["task"] == task and record["finetune"]["seed"] == 5
    assert record["finetune"]["init"] == "scratch" and record["finetune"]["run"] == 1
    assert record["weights"]["model"] == ("GenesisClassifier" if task == "ncc" else "UNet3D")
    assert record["settings_hash"]
    # The saved weights are the best epoch's and load strictly into the recorded model.
    model = (GenesisClassifier if task == "ncc" else UNet3D)(**record["weights"]["model_config"])
    load_weights(model, out / "weights.pt")
    assert record["weights"]["epoch"] == result.best_epoch


def test_segmentation_loads_every_pretrained_tensor(
    tasks: dict[str, Path], unet_weights: Path, tmp_path: Path
) -> None:
    settings = resolve_settings("lcs", tiny_settings(max_epochs=1, lr=1e-12))
    finetune(
        "lcs",
        tasks["lcs"],
        tmp_path / "run1",
        Init("genesis", unet_weights),
        seed=0,
        settings=settings,
    )
    record = json.loads((tmp_path / "run1" / "weights.json").read_text())["finetune"]
    n_tensors = len(UNet3D(width=2).state_dict())
    init = record["init_weights"]
    assert (init["loaded"], init["kept_random"], init["encoder_only"]) == (n_tensors, 0, False)
    assert init["source_epoch"] == 7 and len(init["weights_sha256"]) == 64
    # A negligible learning rate leaves the convolutions where the pretrained file put them.
    trained, pretrained = UNet3D(width=2), UNet3D(width=2)
    load_weights(trained, tmp_path / "run1" / "weights.pt")
    load_weights(pretrained, unet_weights)
    key = "up_tr64.ops.1.conv1.weight"
    torch.testing.assert_close(trained.state_dict()[key], pretrained.state_dict()[key])


def test_reset_head_redraws_only_the_segmentation_head(
    tasks: dict[str, Path], unet_weights: Path, tmp_path: Path
) -> None:
    settings = resolve_settings("lcs", tiny_settings(max_epochs=1, lr=1e-12, reset_head=True))
    finetune(
        "lcs",
        tasks["lcs"],
        tmp_path / "run1",
        Init("genesis", unet_weights),
        seed=0,
        settings=settings,
    )
    record = json.loads((tmp_path / "run1" / "weights.json").read_text())["finetune"]
    assert record["init_weights"]["head_reset"] is True
    trained, pretrained = UNet3D(width=2), UNet3D(width=2)
    load_weights(trained, tmp_path / "run1" / "weights.pt")
    load_weights(pretrained, unet_weights)
    after, before = trained.state_dict(), pretrained.state_dict()
    assert not torch.allclose(after["out_tr.final_conv.weight"], before["out_tr.final_conv.weight"])
    torch.testing.assert_close(
        after["up_tr64.ops.1.conv1.weight"], before["up_tr64.ops.1.conv1.weight"]
    )


def test_ncc_loads_the_encoder_only(
    tasks: dict[str, Path], unet_weights: Path, tmp_path: Path
) -> None:
    settings = resolve_settings("ncc", tiny_settings(max_epochs=1))
    finetune(
        "ncc",
        tasks["ncc"],
        tmp_path / "run1",
        Init("genesis", unet_weights),
        seed=0,
        settings=settings,
    )
    init = json.loads((tmp_path / "run1" / "weights.json").read_text())["finetune"]["init_weights"]
    encoder = [k for k in UNet3D(width=2).state_dict() if k.startswith("down_tr")]
    assert init["encoder_only"] is True and init["loaded"] == len(encoder)
    assert init["kept_random"] == 4  # fc1/fc2 weight and bias


def test_resume_after_interruption_gives_the_same_run(
    tasks: dict[str, Path], tmp_path: Path
) -> None:
    settings = resolve_settings("bms", tiny_settings(max_epochs=3))
    whole = tmp_path / "whole"
    finetune("bms", tasks["bms"], whole, Init("scratch"), seed=3, settings=settings)

    class SimulatedKillError(Exception):
        pass

    def stop_after_first(epoch: int) -> None:
        if epoch == 1:
            raise SimulatedKillError

    parts = tmp_path / "parts"
    with pytest.raises(SimulatedKillError):
        finetune(
            "bms",
            tasks["bms"],
            parts,
            Init("scratch"),
            seed=3,
            settings=settings,
            on_epoch_end=stop_after_first,
        )
    assert len(_read_curves(parts / "curves.csv")) == 1
    assert not (parts / "weights.pt").exists()
    finetune("bms", tasks["bms"], parts, Init("scratch"), seed=3, settings=settings)
    assert (parts / "curves.csv").read_text() == (whole / "curves.csv").read_text()
    a, b = UNet3D(width=2), UNet3D(width=2)
    load_weights(a, whole / "weights.pt")
    load_weights(b, parts / "weights.pt")
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, b.state_dict()[key], rtol=0, atol=0)
    # A finished run is not trained again; raising max_epochs continues it.
    finetune("bms", tasks["bms"], parts, Init("scratch"), seed=3, settings=settings)
    assert len(_read_curves(parts / "curves.csv")) == 3
    longer = resolve_settings("bms", tiny_settings(max_epochs=4))
    finetune("bms", tasks["bms"], parts, Init("scratch"), seed=3, settings=longer)
    assert len(_read_curves(parts / "curves.csv")) == 4


def test_different_seeds_give_different_runs(tasks: dict[str, Path], tmp_path: Path) -> None:
    settings = resolve_settings("lcs", tiny_settings(max_epochs=1))
    losses = []
    for seed in (1, 2):
        finetune(
            "lcs",
            tasks["lcs"],
            tmp_path / f"s{seed}",
            Init("scratch"),
            seed=seed,
            settings=settings,
        )
        losses.append(_read_curves(tmp_path / f"s{seed}" / "curves.csv")[0]["train_loss"])
    assert losses[0] != losses[1]


def test_finished_run_restores_deleted_outputs(tasks: dict[str, Path], tmp_path: Path) -> None:
    """Snakemake deletes a job's outputs before rerunning it: the checkpoint restores them."""
    out = tmp_path / "run1"
    settings = resolve_settings("lcs", tiny_settings(max_epochs=1))
    finetune("lcs", tasks["lcs"], out, Init("scratch"), seed=0, settings=settings)
    curves = (out / "curves.csv").read_text()
    (out / "curves.csv").unlink()
    (out / "weights.pt").unlink()
    finetune("lcs", tasks["lcs"], out, Init("scratch"), seed=0, settings=settings)
    assert (out / "curves.csv").read_text() == curves and (out / "weights.pt").is_file()


def test_new_pretrained_weights_start_a_new_run(
    tasks: dict[str, Path], unet_weights: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run1"
    settings = resolve_settings("lcs", tiny_settings(max_epochs=1))
    weights = tmp_path / "pretrained.pt"
    weights.write_bytes(unet_weights.read_bytes())
    finetune("lcs", tasks["lcs"], out, Init("genesis", weights), seed=0, settings=settings)
    model = UNet3D(width=2)
    load_weights(model, weights)
    with torch.no_grad():
        model.out_tr.final_conv.bias.add_(1.0)
    torch.save({"epoch": 1, "state_dict": model.state_dict()}, weights)
    with caplog.at_level("WARNING"):
        finetune("lcs", tasks["lcs"], out, Init("genesis", weights), seed=0, settings=settings)
    assert "init_weights_sha256" in caplog.text


def test_stale_checkpoint_starts_afresh(
    tasks: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Snakemake reruns a job whose settings or seed changed: the old checkpoint is
    ignored with a warning, and the run equals one made in an empty folder."""
    out = tmp_path / "run1"
    finetune(
        "lcs",
        tasks["lcs"],
        out,
        Init("scratch"),
        seed=0,
        settings=resolve_settings("lcs", tiny_settings(max_epochs=1)),
    )
    for seed, changes, reason in (
        (0, {"lr": 0.1}, r"other settings \(lr\)"),
        (1, {}, r"another run \(seed"),
    ):
        settings = resolve_settings("lcs", tiny_settings(max_epochs=1, **changes))
        with caplog.at_level("WARNING"):
            finetune("lcs", tasks["lcs"], out, Init("scratch"), seed=seed, settings=settings)
        assert re.search(reason, caplog.text)
        fresh = tmp_path / f"fresh{seed}"
        finetune("lcs", tasks["lcs"], fresh, Init("scratch"), seed=seed, settings=settings)
        assert _read_curves(out / "curves.csv") == _read_curves(fresh / "curves.csv")


def test_early_stopping(tasks: dict[str, Path], tmp_path: Path) -> None:
    # Weights that do not move (tiny learning rate) and a norm that ignores the running
    # statistics give the same validation loss every epoch: no improvement after epoch 1.
    settings = resolve_settings(
        "lcs", tiny_settings(max_epochs=10, early_stop_patience=2, lr=1e-30, batch_stats=True)
    )
    result = finetune(
        "lcs", tasks["lcs"], tmp_path / "run1", Init("scratch"), seed=0, settings=settings
    )
    assert result.stop_reason.startswith("early stopping")
    assert len(result.curves) == 3 and result.best_epoch == 1


def test_ncc_cube_size_must_match_the_prepared_cubes(
    tasks: dict[str, Path], tmp_path: Path
) -> None:
    settings = resolve_settings("ncc", tiny_settings(cube_size=[32, 32, 16]))
    with pytest.raises(ConfigError, match="prepared cubes"):
        finetune("ncc", tasks["ncc"], tmp_path / "run1", Init("scratch"), seed=0, settings=settings)


# --- command line ----------------------------------------------------------------------


def test_cli_reports_mismatched_weights(
    tasks: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wide = save_weights(UNet3D(width=4), tmp_path / "wide", provenance={}, epoch=1)[0]
    code = main(
        [
            "finetune",
            "--task",
            "lcs",
            "--data",
            str(tasks["lcs"]),
            "--init",
            "released",
            "--weights",
            str(wide),
            "--output-dir",
            str(tmp_path / "run1"),
            "--seed",
            "0",
            "--settings",
            json.dumps(tiny_settings()),
        ]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "weights do not fit UNet3D" in error and "wrong shape" in error
    assert "down_tr64.ops.0.conv1.weight file (4, 1, 3, 3, 3) vs model (2, 1, 3, 3, 3)" in error
    assert not (tmp_path / "run1" / "weights.pt").exists()
    with pytest.raises(WeightsError, match="missing"):
        classifier = GenesisClassifier(width=2, hidden=8)
        load_weights(classifier, wide.with_suffix(".safetensors"))


def test_cli_finetunes_a_run(
    tasks: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "finetune" / "ncc" / "scratch" / "run2"
    code = main(
        [
            "finetune",
            "--task",
            "ncc",
            "--data",
            str(tasks["ncc"]),
            "--init",
            "scratch",
            "--output-dir",
            str(out),
            "--seed",
            "11",
            "--threads",
            "1",
            "--settings",
            json.dumps(tiny_settings(max_epochs=1)),
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["run"] == 2 and summary["epochs"] == 1
    assert json.loads((out / "weights.json").read_text())["finetune"]["run"] == 2
