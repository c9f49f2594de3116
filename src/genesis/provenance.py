"""Reproducibility record: config hash, git commit, package versions, hardware.

Written next to weights (JSON sidecar), into tables and into reports, so every number
can be traced back to the code and settings that produced it.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

#: Packages whose versions change numbers; recorded in every provenance record.
TRACKED_PACKAGES = (
    "genesis", "torch", "numpy", "scipy", "pandas", "nibabel", "simpleitk",
    "scikit-learn", "monai", "snakemake",
)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def settings_hash(settings: Any) -> str:
    """Hash of a JSON-serialisable settings object, independent of key order."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def git_commit(start: str | Path = ".") -> str:
    """The current commit (with ``-dirty`` when the tree has changes), or ``unknown``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=start, capture_output=True, text=True,
            check=True, timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=start,
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "system": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        import os

        info["cpus"] = os.cpu_count()
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i)
                            for i in range(torch.cuda.device_count())]
        else:
            info["gpus"] = []
    except ImportError:
        pass
    return info


def provenance_record(
    config_path: str | Path | None = None,
    settings: Any = None,
    data_manifest: str | Path | None = None,
    seeds: Any = None,
) -> dict[str, Any]:
    """Everything needed to trace a result back to code, data, settings and machine."""
    record: dict[str, Any] = {
        "git_commit": git_commit(),
        "packages": package_versions(),
        "hardware": hardware(),
    }
    if config_path is not None and Path(config_path).is_file():
        record["config_file"] = str(config_path)
        record["config_sha256"] = file_sha256(config_path)
    if settings is not None:
        record["settings_hash"] = settings_hash(settings)
    if data_manifest is not None and Path(data_manifest).is_file():
        record["data_manifest"] = str(data_manifest)
        record["data_manifest_sha256"] = file_sha256(data_manifest)
    if seeds is not None:
        record["seeds"] = seeds
    return record
