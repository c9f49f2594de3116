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
    "genesis",
    "torch",
    "numpy",
    "scipy",
    "pandas",
    "nibabel",
    "simpleitk",
    "scikit-learn",
    "monai",
    "snakemake",
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


#: What ``git_commit`` records when the code's commit cannot be known.
UNKNOWN_COMMIT = "unknown (not a git checkout)"


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=folder, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


def _checkout_commit(folder: Path) -> str | None:
    """HEAD of the git checkout at ``folder`` (``-dirty`` with changes), None if none."""
    try:
        commit = _git(folder, "rev-parse", "HEAD")
        dirty = _git(folder, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def _source_checkout() -> Path | None:
    """The package's folder when git tracks it (an editable install or ``src`` on the
    path); None for an installed copy (site-packages, even inside an ignored .venv)."""
    package = Path(__file__).resolve().parent
    try:
        _git(package, "ls-files", "--error-unmatch", Path(__file__).name)
    except (OSError, subprocess.SubprocessError):
        return None
    return package


def installed_commit(distribution: str = "genesis") -> str | None:
    """The commit pip recorded when the package was installed from a git URL
    (``direct_url.json``, ``vcs_info.commit_id``; PEP 610), else None."""
    try:
        text = metadata.distribution(distribution).read_text("direct_url.json")
        commit = json.loads(text or "null")["vcs_info"]["commit_id"]
    except (metadata.PackageNotFoundError, ValueError, KeyError, TypeError):
        return None
    return commit if isinstance(commit, str) and commit else None


def git_commit(start: str | Path | None = None) -> str:
    """The commit of the code that runs, or ``UNKNOWN_COMMIT``.

    With ``start``: the git checkout there (``-dirty`` when the tree has changes).
    Without: the checkout holding this package's source when git tracks it, else the
    commit recorded at install time from a git URL (``pip install git+https://...``),
    else ``UNKNOWN_COMMIT``. The working directory does not matter: running from inside
    another repository never records that repository's commit.
    """
    if start is not None:
        return _checkout_commit(Path(start)) or UNKNOWN_COMMIT
    source = _source_checkout()
    if source is not None:
        commit = _checkout_commit(source)
        if commit:
            return commit
    return installed_commit() or UNKNOWN_COMMIT


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
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
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
