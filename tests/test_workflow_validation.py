"""Every config error is caught by `snakemake -n`, before the first job, naming the key.

Each case was accepted by the dry run once and failed (or silently misbehaved) only when
its job ran, hours or days later.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_workflow import dry_run

CASES = [
    ("cube_size: [40, 32, 16]\n", "x and y must be multiples of 16"),
    ("tasks:\n  lcs:\n    finetune: {lr: .inf}\n", "tasks.lcs.finetune.lr must be a finite"),
    (
        "tasks:\n  ncc:\n    finetune: {lr: -1}\n",
        "config tasks.ncc.finetune.lr: -1 is less than or equal to the minimum of 0",
    ),
    (
        "pretrain:\n  settings: {momentum: -1}\n",
        "config pretrain.settings.momentum: -1 is less than the minimum of 0",
    ),
    (
        "tasks:\n  lcs:\n    finetune: {foreground_ratio: 1.5}\n",
        "config tasks.lcs.finetune.foreground_ratio: 1.5 is greater than the maximum of 1",
    ),
    ("tasks:\n  lcs:\n    prepare: {z_scale: .inf}\n", "tasks.lcs.prepare.z_scale"),
    (
        "tasks:\n  lcs:\n    prepare: {geometry_tolerance_mm: .nan}\n",
        "tasks.lcs.prepare.geometry_tolerance_mm must be a finite",
    ),
    ("tasks:\n  bms:\n    prepare: {test_fold: 7}\n", "tasks.bms.prepare.test_fold must be in"),
    (
        "luna16:\n  subsets: {train: [0, 1], val: [1], test: [4]}\n",
        "subset(s) [1] are in both train and val",
    ),
    ("cubes: {border: [60, 60, 8]}\n", "does not fit the phantoms"),
    ("tasks:\n  names: [ncc, spleen]\n", "there is no tasks.spleen section"),
    (
        "tasks:\n  names: [ncc, spleen]\n  spleen: {kind: segmentation, data: /nonexistent}\n",
        "tasks.spleen.data: /nonexistent does not exist",
    ),
    ("tasks:\n  inits: [scratch, released_keras]\n", "tasks.released_keras_weights is not set"),
    ("tasks:\n  released_weights: weights.h5\n", "must be a .pt or .safetensors file"),
    ("tasks:\n  lcs: {label_fractions: [0]}\n", "label_fractions"),
    ("tasks:\n  lcs: {label_fractions: [0.3333333333]}\n", "cannot be named exactly"),
]


@pytest.mark.parametrize(("override", "message"), CASES)
def test_dry_run_refuses_bad_values(tmp_path: Path, override: str, message: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(override)
    result = dry_run(bad, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert message in output, output[-2000:]
    assert not (tmp_path / "results").exists()


def test_validation_experiment_plans(tmp_path: Path) -> None:
    """config/validation.yaml, layered over the default, plans its label sweeps."""
    from test_workflow import ROOT

    result = dry_run(ROOT / "config" / "validation.yaml", tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-2000:]
    # 3 tasks x 2 inits x 10 runs at all labels; LCS 3 and BMS 2 fractions below 1.
    assert "finetune                      60" in output
    assert "finetune_labels              100" in output


def _resources(output: str, rule: str) -> dict[str, str]:
    block = output.split(f"rule {rule}:", 1)[1].split("\n\n", 1)[0]
    line = next(line for line in block.splitlines() if "resources:" in line)
    return dict(item.strip().split("=", 1) for item in line.split(":", 1)[1].split(","))


def test_heavy_jobs_have_benchmarks_and_resources_from_the_settings(tmp_path: Path) -> None:
    """Extraction, pretraining, fine-tuning and evaluation write a benchmark file, and their
    memory and time come from the cube size, width and batch, not from a constant."""
    from test_workflow import ROOT

    def plan(override: str) -> str:
        config = tmp_path / "c.yaml"
        config.write_text(override)
        result = dry_run(config, tmp_path)
        assert result.returncode == 0, (result.stdout + result.stderr)[-2000:]
        return result.stdout + result.stderr

    small = plan("model: {width: 8}\n")
    for rule in ("extract_cubes", "pretrain", "finetune", "evaluate"):
        block = small.split(f"rule {rule}:", 1)[1].split("\n\n", 1)[0]
        assert "benchmark: results/logs/benchmarks/" in block, rule
    wide = plan("model: {width: 16}\npretrain: {settings: {batch_size: 12}}\n")
    assert int(_resources(wide, "pretrain")["mem_mb"]) > int(
        _resources(small, "pretrain")["mem_mb"]
    )
    assert int(_resources(wide, "finetune")["runtime"]) >= int(
        _resources(small, "finetune")["runtime"]
    )
    assert (ROOT / "Snakefile").read_text().count("wildcard_constraints:") == 1
