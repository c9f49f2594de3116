"""The report notebooks execute with papermill on a tiny results tree, with inline figures."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from fixtures.make_results import make_results

from genesis.cli import main

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


def execute(name: str, results: Path, out: Path, **parameters: str) -> nbformat.NotebookNode:
    import papermill

    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"), str(out), kernel_name="python3",
        parameters={"results_dir": str(results), **parameters}, cwd=str(out.parent),
        progress_bar=False, start_timeout=120,
    )
    return nbformat.read(out, as_version=4)


def outputs(notebook: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.get("outputs", [])]


def assert_clean_with_images(notebook: nbformat.NotebookNode, minimum: int = 1) -> None:
    found = outputs(notebook)
    errors = [o for o in found if o.get("output_type") == "error"]
    assert not errors, errors[0].get("evalue")
    stderr = [o["text"] for o in found if o.get("name") == "stderr"]
    assert not any("Traceback" in text for text in stderr)
    images = [o for o in found if "image/png" in o.get("data", {})]
    assert len(images) >= minimum


@pytest.fixture
def inline_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the kernels as the workflow rule does: no global MPLBACKEND (conftest sets Agg)."""
    monkeypatch.delenv("MPLBACKEND", raising=False)


@pytest.fixture(scope="module")
def full_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results tree with an ablation variant, tables and figures, as after `all`."""
    results = make_results(tmp_path_factory.mktemp("full") / "results")
    assert main(["tables", "--summary", str(results / "finetune" / "summary.csv"),
                 "--published", str(REPO / "config" / "published.csv"),
                 "--provenance", str(results / "provenance.json"),
                 "--output-dir", str(results / "tables")]) == 0
    assert main(["figures", "segmentations", "--task", "lcs",
                 "--runs-root", str(results / "finetune"),
                 "--tasks-root", str(results / "tasks"),
                 "--output", str(results / "figures" / "segmentation_lcs")]) == 0
    return results


@pytest.mark.parametrize("name", ["pretraining", "target_task", "summary"])
def test_notebook_metadata_and_isolation(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    assert notebook.metadata.language_info.name == "python"
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and 'results_dir = "results"' in tagged[0].source
    if name == "target_task":
        assert 'task = "ncc"' in tagged[0].source
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    assert "import genesis" not in code and "from genesis" not in code
    assert "%matplotlib inline" in code and "MPLBACKEND" not in code
    assert not any(c.get("outputs") for c in notebook.cells if c.cell_type == "code")


def test_pretraining_notebook_runs(full_results: Path, tmp_path: Path,
                                   inline_backend: None) -> None:
    notebook = execute("pretraining", full_results, tmp_path / "pretraining.ipynb")
    assert_clean_with_images(notebook)


def test_target_task_notebook_runs_for_segmentation(full_results: Path, tmp_path: Path,
                                                    inline_backend: None) -> None:
    notebook = execute("target_task", full_results, tmp_path / "lcs.ipynb", task="lcs")
    # learning curves, per-case boxplot and the overlay figure
    assert_clean_with_images(notebook, minimum=3)
    text = "".join(str(o.get("data", {}).get("text/plain", "")) for o in outputs(notebook))
    assert "genesis-nonlinear" in text and "±" in text


def test_summary_notebook_runs(full_results: Path, tmp_path: Path,
                               inline_backend: None) -> None:
    notebook = execute("summary", full_results, tmp_path / "summary.ipynb")
    assert_clean_with_images(notebook)
    text = "".join(str(o.get("data", {}).get("text/plain", "")) for o in outputs(notebook))
    assert "genesis-nonlinear" in text  # the ablation table is shown


def test_notebooks_tolerate_a_bare_results_tree(tmp_path: Path, inline_backend: None) -> None:
    """No tables, figures or ablation yet: the notebooks say so instead of failing."""
    results = make_results(tmp_path / "results", tasks=("ncc",), variants=(), runs=2)
    summary = execute("summary", results, tmp_path / "summary.ipynb")
    assert not [o for o in outputs(summary) if o.get("output_type") == "error"]
    markdown = "".join(str(o.get("data", {}).get("text/markdown", ""))
                       for o in outputs(summary))
    assert "No ablation variants ran" in markdown
    ncc = execute("target_task", results, tmp_path / "ncc.ipynb", task="ncc")
    assert_clean_with_images(ncc, minimum=2)  # curves and ROC
