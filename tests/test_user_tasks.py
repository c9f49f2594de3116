"""A user's own target tasks, on real scans shipped with nilearn: a 3-class MSD-layout
segmentation (MNI152 grey and white matter) and a classification CSV of world points.

Covers preparation through the CLI, multi-class fine-tuning from pretrained weights with
every layer but the head transferred, per-class evaluation with label-valued
predictions on the source grid, label fractions, and the one-line errors for bad input.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from user_task_data import CLASS_NAMES, mni_classification, mni_segmentation

from genesis.cli import main
from genesis.errors import ConfigError, InputError
from genesis.models import UNet3D, save_weights
from genesis.tasks.evaluate import EvaluateSettings, evaluate
from genesis.tasks.finetune import DivergedError, Init, finetune, resolve_settings
from genesis.tasks.kinds import task_info
from genesis.tasks.label_subsets import labelled_order, labelled_subset

CUBE = [16, 16, 8]
TINY = {
    "max_epochs": 2,
    "steps_per_epoch": 2,
    "batch_size": 2,
    "width": 2,
    "patches_per_case": 2,
    "val_patches_per_case": 2,
    "cube_size": CUBE,
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("user_data")
    return {
        "segmentation": mni_segmentation(root / "Task99_MNI", cases=6),
        "classification": mni_classification(root / "points", scans=5),
    }


@pytest.fixture(scope="module")
def prepared(sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("user_tasks")
    out = {}
    for name, kind, settings in (
        ("brain3", "segmentation", {"cube_size": CUBE}),
        ("tissue", "classification", {"cube_size": CUBE, "max_shift": [1, 1, 1]}),
    ):
        out[name] = root / name
        assert (
            main(
                [
                    "prepare",
                    name,
                    "--kind",
                    kind,
                    "--data",
                    str(sources[kind]),
                    "--output-dir",
                    str(out[name]),
                    "--seed",
                    "3",
                    "--settings",
                    json.dumps(settings),
                ]
            )
            == 0
        )
    return out


def test_msd_folder_prepares_three_classes_with_names(prepared: dict[str, Path]) -> None:
    info = task_info(prepared["brain3"])
    assert info.kind == "segmentation" and info.classes == ("0", "1", "2")
    assert info.class_names == tuple(CLASS_NAMES.values()) and info.n_outputs == 3
    record = json.loads((prepared["brain3"] / "prepare.json").read_text())
    assert record["split_source"] == "split_proportions"
    assert all(v > 0 for v in record["class_voxels_train"])
    volume = np.load(next((prepared["brain3"] / "volumes").glob("*.npz")))
    assert set(np.unique(volume["label"])) == {0, 1, 2}


def test_classification_csv_prepares_binary(prepared: dict[str, Path]) -> None:
    info = task_info(prepared["tissue"])
    assert info.kind == "classification" and info.n_outputs == 1


def test_multiclass_finetune_transfers_all_but_head_and_evaluates(
    prepared: dict[str, Path], tmp_path: Path
) -> None:
    pretrained = UNet3D(width=2)
    stem = tmp_path / "pretrained" / "weights"
    stem.parent.mkdir()
    save_weights(pretrained, stem, provenance={"stage": "test"})
    settings = resolve_settings("brain3", TINY, "segmentation")
    run = tmp_path / "run0"
    result = finetune(
        "brain3",
        prepared["brain3"],
        run,
        Init("genesis", stem.with_suffix(".pt")),
        seed=5,
        settings=settings,
        run=0,
    )
    assert result.best_epoch >= 1
    record = json.loads((run / "weights.json").read_text())["finetune"]
    init = record["init_weights"]
    assert init["except_head"] and init["kept_random"] == 2  # out_tr.final_conv weight, bias
    assert record["classes"] == ["0", "1", "2"] and record["label_fraction"] == 1.0
    model = UNet3D(width=2, out_channels=3, final_activation=None)
    model.load_state_dict(
        {
            k.removeprefix("module."): v
            for k, v in torch.load(run / "weights.pt", weights_only=True)["state_dict"].items()
        }
    )  # a 3-class head
    metrics = evaluate("brain3", prepared["brain3"], run, EvaluateSettings())
    assert metrics["metric"] == "iou" and set(metrics["per_class"]) == {
        "grey matter",
        "white matter",
    }
    header = (run / "per_case.csv").read_text().splitlines()[0].split(",")
    assert header == [
        "case",
        "iou",
        "dice",
        "iou_grey matter",
        "iou_white matter",
        "dice_grey matter",
        "dice_white matter",
    ]
    prediction = next((run / "predictions").glob("*.nii.gz"))
    case = prediction.name.removesuffix(".nii.gz")
    split = (prepared["brain3"] / "split.csv").read_text().splitlines()
    image_path = next(line.split(",")[2] for line in split if line.startswith(case + ","))
    source = nib.load(image_path)
    predicted = nib.load(prediction)
    assert predicted.shape == source.shape
    assert np.allclose(predicted.affine, source.affine, atol=1e-4)
    assert set(np.unique(np.asarray(predicted.dataobj))) <= {0, 1, 2}


def test_label_fraction_trains_on_a_nested_subset(
    prepared: dict[str, Path], tmp_path: Path
) -> None:
    settings = resolve_settings("tissue", TINY, "classification")
    counts = {}
    for fraction in (0.25, 1.0):
        run = tmp_path / f"f{fraction}"
        finetune(
            "tissue",
            prepared["tissue"],
            run,
            Init("scratch"),
            seed=2,
            settings=settings,
            run=0,
            label_fraction=fraction,
        )
        record = json.loads((run / "weights.json").read_text())["finetune"]
        counts[fraction] = (record["n_labelled"], record["n_train_cases"])
        metrics = evaluate("tissue", prepared["tissue"], run, EvaluateSettings())
        assert metrics["fraction"] == fraction and metrics["n_labelled"] == record["n_labelled"]
    total = counts[1.0][1]
    assert counts[1.0][0] == total and counts[0.25][0] == int(np.ceil(0.25 * total))


def test_divergence_is_an_error_and_writes_no_weights(
    prepared: dict[str, Path], tmp_path: Path
) -> None:
    settings = resolve_settings("tissue", {**TINY, "lr": 1e30}, "classification")
    with pytest.raises(DivergedError, match=r"diverged at epoch 1"):
        finetune("tissue", prepared["tissue"], tmp_path, Init("scratch"), seed=1, settings=settings)
    assert not (tmp_path / "weights.pt").exists()


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), -1.0, 0.0])
def test_non_finite_or_negative_lr_is_refused(lr: float) -> None:
    with pytest.raises(ConfigError, match=r"tasks\.tissue\.finetune\.lr"):
        resolve_settings("tissue", {"lr": lr}, "classification")


def test_cli_finetune_and_evaluate_a_user_task(prepared: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run1"
    assert (
        main(
            [
                "finetune",
                "--task",
                "brain3",
                "--data",
                str(prepared["brain3"]),
                "--output-dir",
                str(run),
                "--seed",
                "1",
                "--label-fraction",
                "0.5",
                "--settings",
                json.dumps(TINY),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                "--task",
                "brain3",
                "--data",
                str(prepared["brain3"]),
                "--run-dir",
                str(run),
            ]
        )
        == 0
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["fraction"] == 0.5 and metrics["kind"] == "segmentation"


def test_prepare_needs_a_kind_for_a_user_task(
    sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "prepare",
                "spleen",
                "--data",
                str(sources["segmentation"]),
                "--output-dir",
                str(tmp_path / "spleen"),
            ]
        )
        == 2
    )
    assert "give its --kind" in capsys.readouterr().err


# --- bad inputs: one line naming the file, or a recorded skip with skip_bad ----------------


def _copy_dataset(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def test_unknown_class_value_names_the_label_file(sources: dict[str, Path], tmp_path: Path) -> None:
    from genesis.tasks.prepare_segmentation import SegmentationSettings, prepare_segmentation

    data = _copy_dataset(sources["segmentation"], tmp_path / "data")
    prepare_segmentation(
        "bad", data, tmp_path / "clean", SegmentationSettings(cube_size=tuple(CUBE)), 0
    )
    lines = (tmp_path / "clean" / "split.csv").read_text().splitlines()[1:]
    case = next(line.split(",")[0] for line in lines if ",train," in line)
    label_path = data / "labelsTr" / f"{case}.nii.gz"
    label = nib.load(label_path)
    values = np.asarray(label.dataobj).copy()
    values[values == 2] = 7
    nib.save(nib.Nifti1Image(values, label.affine), label_path)
    settings = {"cube_size": CUBE, "skip_bad": False}
    assert (
        main(
            [
                "prepare",
                "bad",
                "--kind",
                "segmentation",
                "--data",
                str(data),
                "--output-dir",
                str(tmp_path / "out"),
                "--settings",
                json.dumps(settings),
            ]
        )
        == 2
    )
    with pytest.raises(InputError, match=rf"{case}.nii.gz: .*7.*unknown class value"):
        prepare_segmentation(
            "bad",
            data,
            tmp_path / "out2",
            SegmentationSettings(cube_size=tuple(CUBE), skip_bad=False),
            0,
        )
    summary = prepare_segmentation(
        "bad", data, tmp_path / "out3", SegmentationSettings(cube_size=tuple(CUBE)), 0
    )
    assert [s["case"] for s in summary["skipped"]] == [case]


def test_mismatched_label_grid_is_named(sources: dict[str, Path], tmp_path: Path) -> None:
    from genesis.tasks.prepare_segmentation import SegmentationSettings, prepare_segmentation

    data = _copy_dataset(sources["segmentation"], tmp_path / "data")
    label_path = data / "labelsTr" / "mni_004.nii.gz"
    label = nib.load(label_path)
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj)[1:], label.affine), label_path)
    with pytest.raises(InputError, match=r"mni_004.nii.gz: case mni_004: label shape"):
        prepare_segmentation(
            "bad",
            data,
            tmp_path / "out",
            SegmentationSettings(cube_size=tuple(CUBE), skip_bad=False),
            0,
        )


def test_empty_class_is_refused(sources: dict[str, Path], tmp_path: Path) -> None:
    from genesis.tasks.prepare_segmentation import SegmentationSettings, prepare_segmentation

    settings = SegmentationSettings(cube_size=tuple(CUBE), classes=(0, 1, 2, 3))
    with pytest.raises(InputError, match=r"class_3 \(3\) have no voxel in any training case"):
        prepare_segmentation("bad", sources["segmentation"], tmp_path / "out", settings, 0)


def test_csv_with_a_split_column_and_an_unreadable_row(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    from genesis.tasks.prepare_segmentation import SegmentationSettings, prepare_segmentation

    root = sources["segmentation"]
    lines = ["image,label,split"]
    for k, split in enumerate(["train", "train", "train", "val", "test"]):
        lines.append(
            f"{root}/imagesTr/mni_{k:03d}.nii.gz,{root}/labelsTr/mni_{k:03d}.nii.gz,{split}"
        )
    lines.append(f"{root}/imagesTr/missing.nii.gz,{root}/labelsTr/missing.nii.gz,train")
    table = tmp_path / "cases.csv"
    table.write_text("\n".join(lines) + "\n")
    summary = prepare_segmentation(
        "csvtask", table, tmp_path / "out", SegmentationSettings(cube_size=tuple(CUBE)), 0
    )
    assert summary["counts"] == {"train": 3, "val": 1, "test": 1}
    assert [s["case"] for s in summary["skipped"]] == ["missing"]
    assert summary["classes"] == ["0", "1", "2"]  # found in the label volumes


# --- label subsets: properties against their definition -----------------------------------


def _random_cases(rng: np.random.Generator, n: int, n_classes: int) -> list[frozenset[int]]:
    return [
        frozenset(
            int(c)
            for c in rng.choice(
                np.arange(1, n_classes + 1), size=rng.integers(0, n_classes + 1), replace=False
            )
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("trial", range(30))
def test_subsets_are_nested_paired_and_cover_every_class(trial: int) -> None:
    rng = np.random.default_rng(trial)
    cases = _random_cases(rng, int(rng.integers(1, 40)), int(rng.integers(1, 4)))
    seed = int(rng.integers(0, 1000))
    fractions = [*sorted(rng.uniform(0.01, 1.0, size=4).tolist()), 1.0]
    subsets = [set(labelled_subset(cases, f, seed, "task").tolist()) for f in fractions]
    classes = set().union(*cases)
    for smaller, larger in itertools.pairwise(subsets):
        assert smaller <= larger  # nested
    for fraction, subset in zip(fractions, subsets, strict=True):
        assert len(subset) >= min(len(cases), int(np.ceil(fraction * len(cases))))
        assert set().union(*(cases[i] for i in subset)) == classes  # every class present
        # paired: the subset depends on (seed, task, fraction) only, not on the init
        assert subset == set(labelled_subset(cases, fraction, seed, "task").tolist())
    assert subsets[-1] == set(range(len(cases)))
    order, n_cover = labelled_order(cases, seed, "task")
    assert sorted(order) == list(range(len(cases))) and n_cover <= max(len(classes), 1)


def test_other_seeds_draw_other_subsets() -> None:
    cases = [frozenset({1})] * 40
    draws = {tuple(labelled_subset(cases, 0.25, seed, "t").tolist()) for seed in range(5)}
    assert len(draws) == 5


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5, float("nan")])
def test_bad_fractions_are_refused(fraction: float) -> None:
    with pytest.raises(ConfigError, match="label_fraction must be in"):
        labelled_subset([frozenset({1})], fraction, 0, "t")


# --- the Keras release as an initialisation -------------------------------------------------

KERAS_FIXTURE = Path(__file__).parent / "fixtures" / "keras"


@pytest.mark.parametrize("task", ["brain3", "tissue"])
def test_released_keras_init_fine_tunes_and_evaluates(
    prepared: dict[str, Path], task: str, tmp_path: Path
) -> None:
    weights = next(KERAS_FIXTURE.glob("*.h5"))  # width 2, written by Keras itself
    info = task_info(prepared[task])
    settings = resolve_settings(task, TINY, info.kind)
    finetune(
        task,
        prepared[task],
        tmp_path,
        Init("released_keras", weights),
        seed=4,
        settings=settings,
        run=0,
    )
    record = json.loads((tmp_path / "weights.json").read_text())
    assert record["weights"]["model"] in ("KerasUNet3D", "KerasClassifier")
    assert record["finetune"]["batch_stats"] is False
    init = record["finetune"]["init_weights"]
    assert init["loaded"] > 0 and init["except_head"] == (task == "brain3")
    metrics = evaluate(task, prepared[task], tmp_path, EvaluateSettings())
    assert metrics["init"] == "released_keras" and np.isfinite(metrics["value"])


def test_released_keras_takes_the_h5_file(tmp_path: Path) -> None:
    pt = tmp_path / "weights.pt"
    pt.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"released_keras takes the Keras \.h5 file"):
        Init("released_keras", pt)


def test_binary_task_keeps_its_label_value_and_keras_head_resets(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    """A binary task whose foreground is 2 (white matter only): prepare.json records 2,
    predictions carry 2, and `reset_head` works for the Keras release's head too. The
    CSV starts with a byte-order mark, as Excel writes it."""
    from genesis.tasks.prepare_segmentation import SegmentationSettings, prepare_segmentation

    root = sources["segmentation"]
    labels = tmp_path / "labels"
    labels.mkdir()
    rows = ["image,label"]
    for k in range(5):
        label = nib.load(root / "labelsTr" / f"mni_{k:03d}.nii.gz")
        values = np.asarray(label.dataobj).copy()
        values[values == 1] = 0  # grey matter becomes background: white matter (2) only
        nib.save(nib.Nifti1Image(values, label.affine), labels / f"mni_{k:03d}.nii.gz")
        rows.append(f"{root}/imagesTr/mni_{k:03d}.nii.gz,{labels}/mni_{k:03d}.nii.gz")
    table = tmp_path / "white.csv"
    table.write_text("\ufeff" + "\n".join(rows) + "\n", encoding="utf-8")
    task_dir = tmp_path / "white"
    prepare_segmentation(
        "white", table, task_dir, SegmentationSettings(cube_size=tuple(CUBE)), seed=0
    )
    info = task_info(task_dir)
    assert info.classes == ("0", "2") and info.n_outputs == 1
    weights = next(KERAS_FIXTURE.glob("*.h5"))
    settings = resolve_settings("white", {**TINY, "reset_head": True}, "segmentation")
    run = tmp_path / "run"
    finetune(
        "white", task_dir, run, Init("released_keras", weights), seed=1, settings=settings, run=0
    )
    record = json.loads((run / "weights.json").read_text())["finetune"]
    assert record["init_weights"]["head_reset"] is True
    evaluate("white", task_dir, run, EvaluateSettings())
    for prediction in (run / "predictions").glob("*.nii.gz"):
        assert set(np.unique(np.asarray(nib.load(prediction).dataobj))) <= {0, 2}
