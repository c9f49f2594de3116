"""Collect every run's ``metrics.json`` into one CSV, one row per run.

Rows are sorted by (task, init, fraction, run, seed) so the summary does not depend on
the order in which the shell or Snakemake lists the files. ``fraction`` is the share of
the training cases a run learnt from (1.0 without a label sweep, and for metrics files
written before sweeps existed) and ``n_labelled`` their number.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from genesis.atomic import write_text
from genesis.errors import InputError

#: Columns of ``finetune/summary.csv`` (docs/architecture.md).
SUMMARY_COLUMNS: tuple[str, ...] = (
    "task",
    "init",
    "fraction",
    "n_labelled",
    "run",
    "seed",
    "metric",
    "value",
    "dice",
)
_REQUIRED: tuple[str, ...] = ("task", "init", "run", "seed", "metric", "value")


def read_metrics(path: str | Path) -> dict[str, Any]:
    """One run's metrics, checked for the keys the summary needs."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "does not exist") from None
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(path, f"not readable as JSON: {error}") from None
    if not isinstance(record, dict):
        raise InputError(path, "expected a JSON object")
    missing = [key for key in _REQUIRED if key not in record]
    if missing:
        raise InputError(path, f"missing key(s) {', '.join(missing)}")
    return record


def summary_rows(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Summary rows of the given metrics files, deterministically sorted."""
    rows = []
    for path in paths:
        record = read_metrics(path)
        row = {key: record.get(key) for key in SUMMARY_COLUMNS}
        if row["fraction"] is None:
            row["fraction"] = 1.0
        for key in ("dice", "n_labelled"):
            if row[key] is None or (isinstance(row[key], float) and math.isnan(row[key])):
                row[key] = ""
        rows.append(row)
    rows.sort(
        key=lambda r: (
            str(r["task"]),
            str(r["init"]),
            float(r["fraction"]),
            _run_key(r["run"]),
            str(r["seed"]),
        )
    )
    keys = [(r["task"], r["init"], r["fraction"], r["run"]) for r in rows]
    duplicates = sorted({k for k in keys if keys.count(k) > 1}, key=str)
    if duplicates:
        raise InputError(
            None, f"several metrics files for the same (task, init, fraction, run): {duplicates}"
        )
    return rows


def write_summary(paths: Iterable[str | Path], output: str | Path) -> list[dict[str, Any]]:
    """Write ``summary.csv`` atomically and return its rows."""
    rows = summary_rows(paths)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(output, buffer.getvalue())
    return rows


def _run_key(run: Any) -> tuple[int, str]:
    """Numeric runs sort as numbers (run 10 after run 2), anything else after them."""
    try:
        return int(run), ""
    except (TypeError, ValueError):
        return 1 << 62, str(run)
