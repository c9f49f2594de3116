"""The report notebooks execute with papermill on a tiny results tree, with inline figures,
reading only the files given as parameters (as the workflow's rules pass them)."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import nbformat
import pytest
from fixtures.make_results import add_stale_run, make_results, notebook_parameters, run_files

from genesis.cli import main

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
#: What a notebook and its helper module may import: no engine, nothing the reports
#: environment lacks.
NOTEBOOK_IMPORTS = {"json", "matplotlib", "numpy", "pandas", "nibabel", "report_helpers"}
HELPER_IMPORTS = {"__future__", "json", "re", "pathlib", "pandas", "IPython"}


def execute(name: str, out: Path, parameters: dict[str, object]) -> nbformat.NotebookNode:
    import papermill

    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"),
        str(out),
        kernel_name="python3",
        parameters=parameters,
        cwd=str(out.parent),
        progress_bar=False,
        start_timeout=120,
    )
    return nbformat.read(out, as_version=4)


def outputs(notebook: nbformat.NotebookNode) -> list[dict]:
    return [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    ]


def shown(notebook: nbformat.NotebookNode, kind: str) -> str:
    return "".join(str(o.get("data", {}).get(kind, "")) for o in outputs(notebook))


def assert_clean_with_images(notebook: nbformat.NotebookNode, minimum: int = 1) -> None:
    found = outputs(notebook)
    errors = [o for o in found if o.get("output_type") == "error"]
    assert not errors, errors[0].get("evalue")
    stderr = [o["text"] for o in found if o.get("name") == "stderr"]
    assert not any("Traceback" in text for text in stderr)
    images = [o for o in found if "image/png" in o.get("data", {})]
    assert len(images) >= minimum


def imports(source: str) -> set[str]:
    """Top-level names of the modules a piece of code imports (magics left out)."""
    code = "\n".join(
        line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))
    )
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.fixture
def kernel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the kernels as the workflow rule does: no global MPLBACKEND (conftest sets Agg),
    and the notebooks' folder on PYTHONPATH for their helper module."""
    monkeypatch.delenv("MPLBACKEND", raising=False)
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(NOTEBOOKS), path])))


@pytest.fixture(scope="module")
def full_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results tree with an ablation variant, tables and figures, as after `all`, and
    leftovers no rule declares (unreadable: reading them fails): runs 0 and 9 of lcs and
    ncc, a pretraining variant `old`."""
    results = make_results(tmp_path_factory.mktemp("full") / "results")
    assert (
        main(
            [
                "tables",
                "--summary",
                str(results / "finetune" / "summary.csv"),
                "--published",
                str(REPO / "config" / "published.csv"),
                "--provenance",
                str(results / "provenance.json"),
                "--output-dir",
                str(results / "tables"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "figures",
                "segmentations",
                "--task",
                "lcs",
                "--predictions",
                *run_files(results, "lcs", "predictions"),
                "--task-dir",
                str(results / "tasks" / "lcs"),
                "--output",
                str(results / "figures" / "segmentation_lcs"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "figures",
                "tasks",
                "--summary",
                str(results / "finetune" / "summary.csv"),
                "--published",
                str(REPO / "config" / "published.csv"),
                "--output",
                str(results / "figures" / "target_tasks"),
            ]
        )
        == 0
    )
    for task in ("lcs", "ncc"):
        for init in ("scratch", "genesis-nonlinear"):
            for run in (0, 9):
                add_stale_run(results, task, init, run)
    for name in ("metrics.csv", "weights.json"):
        (results / "pretrain" / "old" / name).mkdir(parents=True)
    return results


@pytest.mark.parametrize("name", ["pretraining", "target_task", "summary"])
def test_notebook_metadata_and_isolation(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    assert notebook.metadata.language_info.name == "python"
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and 'data_label = ""' in tagged[0].source
    assert "results_dir" not in tagged[0].source
    if name == "target_task":
        assert 'task = "ncc"' in tagged[0].source
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    # Only the files given are read: no results folder, no search for files.
    assert "results_dir" not in code and "glob(" not in code and "iterdir" not in code
    assert imports(code) <= NOTEBOOK_IMPORTS and "report_helpers" in imports(code)
    assert "%matplotlib inline" in code and "MPLBACKEND" not in code
    assert not any(c.get("outputs") for c in notebook.cells if c.cell_type == "code")


def test_helper_module_reads_nothing_by_itself() -> None:
    source = (NOTEBOOKS / "report_helpers.py").read_text(encoding="utf-8")
    assert imports(source) <= HELPER_IMPORTS
    assert "glob(" not in source and "iterdir" not in source


def test_pretraining_notebook_runs(full_results: Path, tmp_path: Path, kernel_env: None) -> None:
    notebook = execute(
        "pretraining",
        tmp_path / "pretraining.ipynb",
        notebook_parameters(full_results, "pretraining"),
    )
    assert_clean_with_images(notebook)
    assert "synthetic phantoms" in shown(notebook, "text/markdown")
    assert "old" not in shown(notebook, "text/plain")  # the leftover variant is not read
    # The weights table is filled from the sidecar's keys, and epochs print as integers.
    text = shown(notebook, "text/plain")
    assert "d250b70ccb08cc63" in text and "bbbbbbbbbbbbbbbb" in text
    assert "6.0" not in text.split("best epoch")[1].split("\n")[1]


def test_target_task_notebook_runs_for_segmentation(
    full_results: Path, tmp_path: Path, kernel_env: None
) -> None:
    assert (full_results / "finetune" / "lcs" / "scratch" / "run9" / "curves.csv").is_dir()
    notebook = execute(
        "target_task",
        tmp_path / "lcs.ipynb",
        notebook_parameters(full_results, "target_task", "lcs"),
    )
    # learning curves, per-case boxplot and the overlay figure
    assert_clean_with_images(notebook, minimum=3)
    text = shown(notebook, "text/plain")
    assert "genesis-nonlinear" in text and "±" in text
    assert "run9" not in text and "run0" not in text


def test_target_task_notebook_reads_a_list_given_as_json(
    full_results: Path, tmp_path: Path, kernel_env: None
) -> None:
    """`papermill -p curves '[...]'` passes a string: the notebook reads it as a list."""
    parameters = notebook_parameters(full_results, "target_task", "ncc")
    parameters.update(
        curves=json.dumps(parameters["curves"][:2]), per_case=json.dumps(parameters["per_case"][:2])
    )
    notebook = execute("target_task", tmp_path / "ncc.ipynb", parameters)
    assert_clean_with_images(notebook, minimum=2)  # curves and ROC
    counts = shown(notebook, "text/plain")  # candidates per run: just the two given
    assert "candidates" in counts and "run2" in counts and "run3" not in counts


def test_summary_notebook_runs(full_results: Path, tmp_path: Path, kernel_env: None) -> None:
    notebook = execute(
        "summary", tmp_path / "summary.ipynb", notebook_parameters(full_results, "summary")
    )
    assert_clean_with_images(notebook)
    assert "genesis-nonlinear" in shown(notebook, "text/plain")  # the ablation table is shown


def test_notebooks_tolerate_a_bare_results_tree(tmp_path: Path, kernel_env: None) -> None:
    """No tables, figures or ablation yet: the notebooks say so instead of failing."""
    results = make_results(tmp_path / "results", tasks=("ncc",), variants=(), runs=2)
    summary = execute(
        "summary", tmp_path / "summary.ipynb", notebook_parameters(results, "summary", variants=())
    )
    assert not [o for o in outputs(summary) if o.get("output_type") == "error"]
    assert "No ablation variants ran" in shown(summary, "text/markdown")
    ncc = execute(
        "target_task",
        tmp_path / "ncc.ipynb",
        notebook_parameters(results, "target_task", "ncc", variants=(), runs=2),
    )
    assert_clean_with_images(ncc, minimum=2)  # curves and ROC
