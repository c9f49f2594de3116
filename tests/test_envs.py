"""Every third-party import is declared: in requirements.lock and in the conda env of the
rules that run it (engine for src/, reports for notebooks/), with the same versions."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

#: Modules shipped beside the notebooks (notebooks/*.py), imported from there.
LOCAL_MODULES = {path.stem for path in (ROOT / "notebooks").glob("*.py")}

# Import name -> distribution name, where they differ.
DISTRIBUTIONS = {
    "SimpleITK": "simpleitk",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "skimage": "scikit-image",
}


def third_party_imports(sources: list[tuple[str, str]]) -> set[str]:
    found = set()
    for name, text in sources:
        tree = ast.parse(text, filename=name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    local = {"genesis", *LOCAL_MODULES}
    return {name for name in found if name not in stdlib and name not in local}


def python_sources() -> list[tuple[str, str]]:
    return [(str(p), p.read_text()) for p in sorted((ROOT / "src").rglob("*.py"))]


def notebook_sources() -> list[tuple[str, str]]:
    sources = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = "\n".join(
            "\n".join(
                line
                for line in "".join(c["source"]).splitlines()
                if not line.lstrip().startswith(("%", "!"))
            )
            for c in cells
            if c["cell_type"] == "code"
        )
        sources.append((str(path), code))
    sources += [(str(p), p.read_text()) for p in sorted((ROOT / "notebooks").glob("*.py"))]
    return sources


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[normalise(name)] = version.strip()
    return pins


def env_pins(env: str) -> dict[str, str]:
    spec = yaml.safe_load((ROOT / "envs" / f"{env}.yaml").read_text())
    pins = {}
    for dep in spec["dependencies"]:
        if isinstance(dep, dict):
            for pip_dep in dep["pip"]:
                name, version = pip_dep.split("==")
                pins[normalise(name)] = version
        else:
            name, version = dep.split("=")
            pins[normalise(name)] = version
    return pins


@pytest.mark.parametrize(
    ("env", "sources"), [("engine", python_sources), ("reports", notebook_sources)]
)
def test_imports_declared_in_lock_and_env(env, sources) -> None:
    imports = third_party_imports(sources())
    assert imports, "found no imports at all: the scan is broken"
    lock, pins = lock_pins(), env_pins(env)
    missing_lock = sorted(i for i in imports if normalise(DISTRIBUTIONS.get(i, i)) not in lock)
    missing_env = sorted(i for i in imports if normalise(DISTRIBUTIONS.get(i, i)) not in pins)
    assert not missing_lock, f"imports not pinned in requirements.lock: {missing_lock}"
    assert not missing_env, f"imports not declared in envs/{env}.yaml: {missing_env}"


@pytest.mark.parametrize("env", ["engine", "reports"])
def test_env_versions_equal_lock(env) -> None:
    lock = lock_pins()
    mismatched = {
        name: (version, lock.get(name))
        for name, version in env_pins(env).items()
        if name not in {"python", "pip"} and lock.get(name) != version
    }
    assert not mismatched, f"envs/{env}.yaml differs from requirements.lock: {mismatched}"


def test_engine_env_installs_the_package() -> None:
    script = (ROOT / "envs" / "engine.post-deploy.sh").read_text()
    assert "pip install" in script and "GENESIS_SRC" in script


def test_every_rule_uses_a_declared_env() -> None:
    rules = "\n".join(p.read_text() for p in sorted((ROOT / "rules").glob("*.smk")))
    used = set(re.findall(r'"\.\./envs/([a-z_]+)\.yaml"', rules))
    assert used == {"engine", "reports"}
    # Every rule defined with `rule` names its env (`use rule ... with:` inherits it).
    defined = re.findall(r"^\s*rule \w+:", rules, re.MULTILINE)
    assert rules.count("conda:") == len(defined)
