"""The benchmark scripts run end to end (their timings are not tested: no wall-clock
asserts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_runs_every_step_in_smoke_mode(tmp_path: Path) -> None:
    """The prepared GPU check must not rot while no GPU is lent: its CPU smoke mode runs
    the same steps at tiny sizes (the CUDA test skips) and writes every log and the JSON."""
    env = {**os.environ, "DEVICE_CHECK_SMOKE": "1", "OUT": str(tmp_path), "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", "benchmarks/device_check.sh"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "device.log",
        "gpu_pretrain.json",
        "gpu_pretrain.log",
        "tests.log",
        "transforms.log",
    ]
    assert "passed" in (tmp_path / "tests.log").read_text(encoding="utf-8")
    record = json.loads((tmp_path / "gpu_pretrain.json").read_text(encoding="utf-8"))
    assert sorted(record["bf16_over_fp32"]) == ["2", "4"]
    assert "speed-up per core" in (tmp_path / "transforms.log").read_text(encoding="utf-8")
