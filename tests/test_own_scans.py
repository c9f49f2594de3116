"""The first hour with your own scans: the README's commands on scans that ship with
packages in the lock file, one set of defaults, laptop-friendly housekeeping.

The own-data folder: nilearn's MNI152 T1 template (1 mm, 197 x 233 x 189) and two of
nibabel's test images (``nibabel.testing.data_path``: a 33 x 41 x 25 anatomical and a
128 x 96 x 24 x 2 functional series, both too small for a 64 x 64 x 32 cube) for training;
the template at 2 mm (99 x 117 x 95) for validation.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from genesis.cli import build_parser, main
from genesis.cubes.shards import open_shard, read_manifest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_section_commands(heading: str, prefix: str) -> list[str]:
    """Lines starting with ``prefix`` in the code blocks of one README section, as written."""
    text = README.read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```")[1::2]
    return [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip().startswith(prefix)
    ]


#: The README's commands ("Your own unlabelled scans"), parsed from it so they cannot drift.
README_COMMANDS = "\n".join(readme_section_commands("Your own unlabelled scans", "genesis "))
#: One short epoch of a narrow U-Net (the README's run trains for days).
TINY_PRETRAIN = {
    "width": 4,
    "batch_size": 2,
    "max_epochs": 1,
    "steps_per_epoch": 1,
    "val_cubes": 2,
    "num_workers": 0,
}


def readme_commands(scans: Path) -> list[list[str]]:
    """The README's commands, verbatim but for the scans' folder: cubes of both splits,
    then pretraining."""
    commands = [
        shlex.split(line.replace("/data/my_scans", str(scans)))[1:]
        for line in README_COMMANDS.strip().splitlines()
    ]
    assert [c[0] for c in commands] == ["cubes", "cubes", "pretrain"], commands
    return commands


@pytest.fixture(scope="module")
def own_scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    nib = pytest.importorskip("nibabel")
    datasets = pytest.importorskip("nilearn.datasets")
    from nibabel.testing import data_path

    root = tmp_path_factory.mktemp("my_scans")
    (root / "train").mkdir()
    (root / "val").mkdir()
    nib.save(datasets.load_mni152_template(resolution=1), root / "train" / "mni152_t1.nii.gz")
    for name in ("anatomical.nii", "example4d.nii.gz"):
        shutil.copy(Path(data_path) / name, root / "train" / name)
    nib.save(datasets.load_mni152_template(resolution=2), root / "val" / "mni152_t1_2mm.nii.gz")
    return root


def test_the_readme_commands_on_real_scans(
    own_scans: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    commands = readme_commands(own_scans)
    assert [c[0] for c in commands] == ["cubes", "cubes", "pretrain"]
    for command in commands:
        if command[0] == "pretrain":
            command += ["--settings", json.dumps(TINY_PRETRAIN), "--no-progress"]
        assert main(command) == 0, command

    train = read_manifest(Path("cubes/train.csv"))
    by_source = {row["source"]: row for row in train}
    assert open_shard(Path("cubes/train.npy")).shape == (32, 64, 64, 32)
    mni = [row for row in train if row["source"] == "train/mni152_t1.nii.gz"]
    assert {(r["status"], r["modality"], r["border"], r["min_slices"]) for r in mni} == {
        ("ok", "mri", "19/23/18", "71")
    }
    for name, shape in [("anatomical.nii", "33x41x25"), ("example4d.nii.gz", "128x96x24")]:
        row = by_source[f"train/{name}"]
        assert row["status"] == "skipped"
        assert f"scan {shape} is smaller than one window 64x64x35" in row["reason"]
    val = read_manifest(Path("cubes/val.csv"))
    assert open_shard(Path("cubes/val.npy")).shape == (32, 64, 64, 32)
    assert {(r["border"], r["min_slices"]) for r in val} == {("9/11/9", "53")}

    out = Path("pretrain/mine")
    assert {
        "weights.pt",
        "weights.safetensors",
        "weights.json",
        "metrics.csv",
        "checkpoint.pt",
    } <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    from genesis.models import UNet3D, load_weights

    load_weights(UNet3D(width=4), out / "weights.safetensors")  # hashes match the sidecar


def test_one_set_of_defaults() -> None:
    args = build_parser().parse_args(["cubes", "--inputs", "x", "--output", "y.npy"])
    assert (args.modality, args.skip_bad, args.allow_empty) == ("auto", True, False)
    no = build_parser().parse_args(
        ["cubes", "--inputs", "x", "--output", "y.npy", "--no-skip-bad", "--allow-empty"]
    )
    assert (no.skip_bad, no.allow_empty) == (False, True)
    from genesis.cubes.extract import CubeSettings

    assert CubeSettings().recipe == "auto"


def test_pretrain_refuses_validation_shards_that_are_training_shards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from genesis.train.synthetic import write_synthetic_shard

    train = write_synthetic_shard(tmp_path / "train.npy", 4, (16, 16, 16), seed=1)
    copy = tmp_path / "copy.npy"
    shutil.copy(train, copy)
    other = write_synthetic_shard(tmp_path / "val.npy", 4, (16, 16, 16), seed=2)
    out = tmp_path / "out"
    for val, how in [(train, "same file"), (copy, "same sha256")]:
        code = main(
            [
                "pretrain",
                "--train",
                str(train),
                "--val",
                str(other),
                str(val),
                "--output-dir",
                str(out),
            ]
        )
        [line] = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and line.startswith(
            f"genesis pretrain: error: --val {val} is also a training shard ({how}"
        )
        assert "validation cubes must come from other scans" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("cpus", "processes", "workers"),
    [
        (1, 1, 0),
        (2, 1, 0),
        (3, 1, 2),
        (4, 1, 3),
        (8, 1, 4),
        (64, 1, 4),
        (8, 2, 3),
        (8, 8, 0),
    ],
)
def test_workers_adapt_to_the_cores(cpus: int, processes: int, workers: int) -> None:
    from genesis.train.loaders import default_num_workers

    assert default_num_workers(processes, cpus=cpus) == workers


def test_loaders_choose_workers_when_none_is_set(tmp_path: Path) -> None:
    from genesis.train.distributed import DistContext
    from genesis.train.loaders import (
        default_num_workers,
        resolve_num_workers,
        train_loader,
        val_loader,
    )
    from genesis.train.shards import CubeDataset, check_shard
    from genesis.train.synthetic import write_synthetic_shard

    assert resolve_num_workers(3) == 3 and resolve_num_workers(0) == 0
    assert resolve_num_workers(None) == default_num_workers()
    shard = write_synthetic_shard(tmp_path / "s.npy", 4, (16, 16, 16), seed=0)
    dataset = CubeDataset([check_shard(shard)])
    ctx = DistContext(rank=0, world_size=1, local_rank=0)
    loader = train_loader(
        dataset, seed=0, local_batch=2, ctx=ctx, num_workers=None, pin_memory=False
    )
    assert loader.num_workers == default_num_workers()
    val = val_loader(dataset, [0, 1], batch=2, ctx=ctx, num_workers=None, pin_memory=False)
    assert val.num_workers == min(2, default_num_workers())


def test_the_commit_is_the_codes_not_the_working_directorys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from genesis import provenance

    if shutil.which("git") is None or provenance._source_checkout() is None:
        pytest.skip("needs git and a git checkout of genesis")
    ours = provenance.git_commit(Path(provenance.__file__).parent)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)  # another repository, without commits
    assert provenance.git_commit() == ours != provenance.UNKNOWN_COMMIT
    assert provenance.git_commit(tmp_path) == provenance.UNKNOWN_COMMIT


def test_an_installed_copy_records_the_commit_pip_saw(monkeypatch: pytest.MonkeyPatch) -> None:
    from genesis import provenance

    monkeypatch.setattr(provenance, "_source_checkout", lambda: None)
    record = {
        "url": "https://github.com/example/genesis.git",
        "vcs_info": {"vcs": "git", "commit_id": "0123abc" * 5 + "01234"},
    }
    fake = SimpleNamespace(
        read_text=lambda name: json.dumps(record) if name == "direct_url.json" else None
    )
    monkeypatch.setattr(provenance.metadata, "distribution", lambda name: fake)
    assert provenance.git_commit() == "0123abc" * 5 + "01234"
    record = {"url": "file:///home/me/genesis", "dir_info": {}}  # pip install .
    assert provenance.git_commit() == "unknown (not a git checkout)"
    fake.read_text = lambda name: None  # a plain wheel: no direct_url.json
    assert provenance.git_commit() == provenance.UNKNOWN_COMMIT
