"""The reproducibility record printed under every table and report.

A number in a table is only worth as much as the trail back to what produced it: the
config hash, the git commit, package versions, the hardware and every seed. This module
completes the record written by ``genesis provenance`` with the seeds (from the config and
from the runs in ``summary.csv``) and renders it as Markdown, LaTeX comments or JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from genesis.errors import ConfigError, InputError
from genesis.provenance import file_sha256


def load_record(path: str | Path) -> dict[str, Any]:
    """Read a provenance JSON written by ``genesis provenance``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "provenance record does not exist (run `genesis provenance`)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(path, f"not valid JSON: {error}") from None
    if not isinstance(record, dict):
        raise InputError(path, "provenance record must be a JSON object")
    return record


def config_seeds(config: Any, prefix: str = "") -> dict[str, int]:
    """Every integer key named ``seed`` or ending in ``_seed`` in a nested config, by path.

    Looking the seeds up by name keeps the record correct whatever sections the config
    grows, e.g. ``{"pretrain.seed": 1, "finetune.seed": 7}``.
    """
    seeds: dict[str, int] = {}
    if isinstance(config, Mapping):
        for key, value in config.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            is_seed = str(key) == "seed" or str(key).endswith("_seed")
            if is_seed and isinstance(value, int) and not isinstance(value, bool):
                seeds[path] = value
            else:
                seeds.update(config_seeds(value, path))
    return seeds


def run_seeds(summary: pd.DataFrame) -> dict[str, list[int]]:
    """Fine-tuning seeds per ``task/init``, in run order, from ``summary.csv``."""
    seeds: dict[str, list[int]] = {}
    ordered = summary.sort_values(["task", "init", "run"])
    for (task, init), group in ordered.groupby(["task", "init"], sort=False):
        seeds[f"{task}/{init}"] = [int(seed) for seed in group["seed"]]
    return seeds


def complete_record(
    record: Mapping[str, Any],
    config_path: str | Path | None = None,
    summary: pd.DataFrame | None = None,
    seeds: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Add the config hash and seeds that the bare provenance record may lack.

    ``seeds`` are passed by the workflow (e.g. ``{"data": 7, "runs": [8, 9, 10]}``) and
    join those found in the record, the config and the runs of ``summary``.
    """
    complete = dict(record)
    seeds_found: dict[str, Any] = dict(complete.get("seeds") or {})
    # `genesis provenance --resolved-config` embeds the workflow config: its seeds count.
    seeds_found.update(config_seeds(complete.get("config")))
    if config_path is not None:
        config_path = Path(config_path)
        if not config_path.is_file():
            raise InputError(config_path, "config file does not exist")
        digest = file_sha256(config_path)
        recorded = complete.get("config_sha256")
        if recorded and recorded != digest:
            raise ConfigError(
                f"{config_path} has sha256 {digest[:12]}..., but the provenance record "
                f"was written for {recorded[:12]}...; rerun `genesis provenance`"
            )
        complete["config_file"] = str(config_path)
        complete["config_sha256"] = digest
        seeds_found.update(config_seeds(_read_config(config_path)))
    seeds_found.update(seeds or {})
    if summary is not None and "seed" in summary:
        seeds_found["finetune_runs"] = run_seeds(summary)
    complete["seeds"] = seeds_found
    return complete


def _read_config(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise InputError(path, f"not valid YAML: {error}") from None


def record_lines(record: Mapping[str, Any]) -> list[str]:
    """The record as short ``label: value`` lines, for table footers and notebooks."""
    packages = record.get("packages") or {}
    hardware = record.get("hardware") or {}
    gpus = hardware.get("gpus") or []
    machine = ", ".join(
        part
        for part in (
            str(hardware.get("system", "")),
            f"{hardware['cpus']} CPUs" if hardware.get("cpus") else "",
            "GPUs: " + "; ".join(map(str, gpus)) if gpus else "no GPU",
            f"Python {hardware['python']}" if hardware.get("python") else "",
        )
        if part
    )
    lines = [
        _config_hash_line(record),
        f"git commit: {record.get('git_commit', 'unknown')}",
        "packages: "
        + (
            ", ".join(f"{name} {version}" for name, version in sorted(packages.items()))
            or "not recorded"
        ),
        f"hardware: {machine or 'not recorded'}",
    ]
    lines.extend(_seed_lines(record.get("seeds") or {}))
    return lines


def _config_hash_line(record: Mapping[str, Any]) -> str:
    # Written as the config file's sha256, or as a hash of the resolved config mapping.
    for key, label in (
        ("config_sha256", "config sha256"),
        ("config_hash", "config hash"),
        ("settings_hash", "settings hash"),
    ):
        if record.get(key):
            return f"{label}: {record[key]}"
    return "config hash: not recorded"


def _seed_lines(seeds: Mapping[str, Any]) -> list[str]:
    if not seeds:
        return ["seeds: not recorded"]
    plain = {key: value for key, value in seeds.items() if key != "finetune_runs"}
    lines = []
    if plain:
        pairs = (f"{key}={value}" for key, value in sorted(plain.items()))
        lines.append("seeds: " + ", ".join(pairs))
    runs = seeds.get("finetune_runs") or {}
    if runs:
        lines.append(
            "fine-tuning run seeds: "
            + "; ".join(
                f"{key}: {', '.join(map(str, values))}" for key, values in sorted(runs.items())
            )
        )
    return lines


def markdown_footer(record: Mapping[str, Any]) -> str:
    """A Markdown block listing the record, placed under a table."""
    items = "\n".join(f"- {line}" for line in record_lines(record))
    return f"**Reproducibility record**\n\n{items}\n"


def latex_comment(record: Mapping[str, Any]) -> str:
    """The record as LaTeX comment lines, so the table compiles unchanged."""
    lines = ["Reproducibility record", *record_lines(record)]
    return "\n".join(f"% {_latex_comment_safe(line)}" for line in lines) + "\n"


def _latex_comment_safe(text: str) -> str:
    # A newline would end the comment and leak text into the document.
    return " ".join(text.split())
