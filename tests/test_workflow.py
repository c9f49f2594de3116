"""The Snakemake layer: schema validation, lint, formatting, planning, and one real
end-to-end run of the whole DAG on a tiny config in a temporary directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
TINY = ROOT / "tests" / "data" / "tiny.yaml"


def snakemake(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MPLBACKEND", None)  # papermill would drop inline figures
    return subprocess.run(
        [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(cwd), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


SCHEMA = str(ROOT / "config" / "schema.yaml")


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    config = yaml.safe_load((ROOT / "config" / name).read_text())
    validate(config, SCHEMA)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("seed", "seven"),
        ("cube_size", [64, 64]),
        ("model", {"width": "wide"}),
        ("tasks", {"runs": 0}),
        ("pretrain", {"variants": ["rotation"]}),
        ("data", {"source": "internet"}),
        ("colour", "blue"),
    ],
)
def test_schema_rejects_bad_values(key: str, value: object) -> None:
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config[key] = value if not isinstance(value, dict) else {**config[key], **value}
    with pytest.raises(WorkflowError, match=key if key != "colour" else "colour"):
        validate(config, SCHEMA)


def dry_run(overrides: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``snakemake -n`` on the shipped config with ``overrides`` layered on top."""
    return snakemake(
        "-n",
        "--cores",
        "1",
        "--configfile",
        str(ROOT / "config" / "config.yaml"),
        str(overrides),
        cwd=cwd,
    )


def test_wrong_type_fails_before_any_job_with_the_key_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  width: wide\n")
    result = dry_run(bad, tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "width" in output and "'wide' is not of type 'integer'" in output
    assert not (tmp_path / "results").exists()


def test_released_init_needs_weights(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  inits: [scratch, released]\n")
    result = dry_run(bad, tmp_path)
    assert result.returncode != 0
    assert "tasks.released_weights is not set" in result.stdout + result.stderr


def test_own_scans_replace_luna16_for_pretraining(tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    own = tmp_path / "own.yaml"
    own.write_text(f"own_data:\n  train: {scans}\n  use_luna16: false\n")
    refused = dry_run(own, tmp_path)
    assert "own_data.val is required" in refused.stdout + refused.stderr
    own.write_text(f"own_data:\n  train: {scans}\n  val: {scans}\n  use_luna16: false\n")
    result = dry_run(own, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert planned_jobs(result.stdout)["extract_own_cubes"] == 2
    assert "--train results/cubes/own_train.npy --val results/cubes/own_val.npy" in result.stdout
    # Tables, figures and reports say what the model was pretrained on.
    assert "--data-label 'synthetic phantoms; pretrained on own scans only'" in result.stdout


@pytest.mark.parametrize("extra", [[], ["config/paper.yaml"], ["config/validation.yaml"]])
def test_lint_is_clean(extra: list[str]) -> None:
    """Every shipped config lints clean (the real-data rules exist only with paper.yaml)."""
    configs = ["--configfile", "config/config.yaml", *extra] if extra else []
    result = subprocess.run(
        [SNAKEMAKE, "--lint", *configs], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_snakefmt_formatted() -> None:
    result = subprocess.run(
        [str(BIN / "snakefmt"), "--check", "Snakefile", "rules"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def planned_jobs(output: str) -> dict[str, int]:
    """Parse the job-count table that `snakemake -n` prints."""
    counts, in_table = {}, False
    for line in output.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
            continue
        if in_table and len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
        elif in_table and counts and not parts:
            break
    return counts


def test_default_config_plans_every_stage(tmp_path: Path) -> None:
    result = snakemake(
        "-n", "--cores", "2", "--configfile", str(ROOT / "config" / "config.yaml"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    jobs = planned_jobs(result.stdout)
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    n_runs = len(config["tasks"]["names"]) * 2 * config["tasks"]["runs"]
    assert jobs["synthesize_luna16"] == 1
    assert jobs["extract_cubes"] == len(config["luna16"]["subsets"]["train"]) + len(
        config["luna16"]["subsets"]["val"]
    )
    assert jobs["pretrain"] == 1
    assert jobs["finetune"] == n_runs and jobs["evaluate"] == n_runs
    assert {"tables", "figure_gallery", "notebook_html", "all"} <= set(jobs)


def test_paper_config_plans_all_subsets_tasks_and_gpus(tmp_path: Path) -> None:
    result = snakemake(
        "-n",
        "--cores",
        "8",
        "--configfile",
        str(ROOT / "config" / "paper.yaml"),
        "--resources",
        "gpu=2",
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    jobs = planned_jobs(result.stdout)
    config = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    assert jobs["download_luna16_subset"] == 10
    assert jobs["extract_cubes"] == 7  # subsets 0-6; 7-9 are test only
    assert jobs["download_msd_task"] == 2
    n_runs = 3 * len(config["tasks"]["inits"]) * config["tasks"]["runs"]
    assert jobs["finetune"] == n_runs
    for rule in ("pretrain", "finetune", "evaluate"):
        assert f"rule {rule}:" in result.stdout
    # Every training rule asks for a GPU.
    rules = "\n".join(p.read_text() for p in (ROOT / "rules").glob("*.smk"))
    for rule in ("pretrain", "finetune", "evaluate"):
        block = rules.split(f"rule {rule}:")[1].split("\nrule ")[0]
        assert "gpu=" in block, rule


def test_ablation_variants_are_pretrained_and_fine_tuned(tmp_path: Path) -> None:
    ablation = tmp_path / "ablation.yaml"
    ablation.write_text("pretrain:\n  variants: [all, nonlinear, outpainting]\n")
    result = snakemake(
        "-n",
        "--cores",
        "2",
        "--configfile",
        str(ROOT / "config" / "config.yaml"),
        str(ablation),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = planned_jobs(result.stdout)
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    runs = config["tasks"]["runs"] * len(config["tasks"]["names"])
    assert jobs["pretrain"] == 3
    assert jobs["finetune"] == 4 * runs  # scratch, genesis, genesis-nonlinear, -outpainting
    assert jobs["figure_ablation"] == 1
    assert "results/finetune/ncc/genesis-outpainting/run0/weights.pt" in result.stdout
    assert "--init genesis-nonlinear" in result.stdout


@pytest.mark.slow
def test_end_to_end_tiny_run_reaches_all(tmp_path: Path) -> None:
    result = snakemake(
        "--cores",
        "2",
        "--configfile",
        str(ROOT / "config" / "config.yaml"),
        str(TINY),
        cwd=tmp_path,
        timeout=900,
    )
    logs = tmp_path / "results" / "logs"
    if result.returncode != 0:
        tails = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted(logs.rglob("*.log")))
        pytest.fail(f"snakemake failed:\n{result.stderr[-4000:]}\n{tails}")
    results = tmp_path / "results"
    assert (results / "tables" / "target_tasks.md").stat().st_size > 0
    summary = (results / "finetune" / "summary.csv").read_text().splitlines()
    # tasks x inits x runs (tiny config: 2 runs), plus the LCS sweep's fractions below 1
    fractions = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["tasks"]["lcs"]
    sweep = len([f for f in fractions["label_fractions"] if f < 1])
    assert len(summary) == 1 + 3 * 2 * 2 + sweep * 2 * 2
    assert any((results / "reports").glob("*.html"))
    # Same config, nothing to do: the DAG is complete.
    again = snakemake(
        "-n",
        "--cores",
        "2",
        "--configfile",
        str(ROOT / "config" / "config.yaml"),
        str(TINY),
        cwd=tmp_path,
    )
    assert "Nothing to be done" in again.stdout + again.stderr
    report = snakemake(
        "--report",
        str(results / "report.html"),
        "--configfile",
        str(ROOT / "config" / "config.yaml"),
        str(TINY),
        cwd=tmp_path,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert (results / "report.html").stat().st_size > 10_000
    shutil.rmtree(tmp_path / ".snakemake", ignore_errors=True)
