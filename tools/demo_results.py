"""Write docs/demo-results.md from a finished `make demo`, and the README's copy of it.

    python tools/demo_results.py [--results results] [--output docs/demo-results.md]
                                 [--readme README.md]

(`make demo-results` runs it.) Every number the README's demo section quotes comes from
the files the run wrote: `results/tables/target_tasks.csv`, `label_efficiency.csv`,
`results/pretrain/all/metrics.csv`, `results/provenance.json` and `results/demo_time.json`
(written by `make demo`: install and workflow seconds). Nothing here is typed by hand;
tests/test_demo_results.py fails when the README's block differs from the file.

The README block sits between the markers `<!-- demo-results:begin -->` and
`<!-- demo-results:end -->` and holds the same tables as docs/demo-results.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

METRIC_NAMES = {"auc": "AUC", "iou": "IoU"}
BEGIN = "<!-- demo-results:begin -->"
END = "<!-- demo-results:end -->"


def _pct(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.1f} ± {std:.1f}" if not math.isnan(std) else f"{mean:.1f}"


def _p(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def target_rows(table: pd.DataFrame) -> list[str]:
    """One Markdown row per task: scratch and genesis, n, paired and Welch p."""
    lines = [
        "| task | metric | n | scratch | genesis | paired t-test p | Welch p |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, rows in table.groupby("task", sort=False):
        by_init = {row["init"]: row for _, row in rows.iterrows()}
        if "scratch" not in by_init or "genesis" not in by_init:
            continue
        scratch, genesis = by_init["scratch"], by_init["genesis"]
        lines.append(
            f"| {task.upper()} (phantom) | {metric_name(genesis['metric'])} % "
            f"| {int(genesis['n'])} | {_pct(scratch['mean_pct'], scratch['std_pct'])} "
            f"| {_pct(genesis['mean_pct'], genesis['std_pct'])} "
            f"| {_p(genesis.get('p_paired', math.nan))} | {_p(genesis['p_value'])} |"
        )
    return lines


def efficiency_rows(table: pd.DataFrame) -> list[str]:
    """One Markdown row per (task, fraction) of a sweep: scratch vs genesis, paired p."""
    lines = [
        "| task | labelled | cases | n | scratch | genesis | Δ (points) | paired t-test p "
        "| Wilcoxon p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    swept = table.groupby("task")["fraction"].nunique()
    for (task, fraction), rows in table.groupby(["task", "fraction"], sort=True):
        if swept[task] < 2:
            continue
        by_init = {row["init"]: row for _, row in rows.iterrows()}
        if "scratch" not in by_init or "genesis" not in by_init:
            continue
        scratch, genesis = by_init["scratch"], by_init["genesis"]
        lines.append(
            f"| {task.upper()} (phantom) | {fraction * 100:g}% | {genesis['n_labelled']} "
            f"| {int(genesis['n_runs'])} | {_pct(scratch['mean_pct'], scratch['std_pct'])} "
            f"| {_pct(genesis['mean_pct'], genesis['std_pct'])} "
            f"| {genesis['delta_pct']:+.1f} | {_p(genesis['p_value'])} "
            f"| {_p(genesis['p_wilcoxon'])} |"
        )
    return lines


def render(results: Path, title: str = "Demo results", run: str = "`make demo`") -> str:
    """The Markdown of docs/demo-results.md (its first block is the README's copy).

    ``run`` names what wrote ``results`` (another experiment than the demo, e.g. the
    validation experiment, is recorded with the same tables).
    """
    target = pd.read_csv(results / "tables" / "target_tasks.csv")
    efficiency = pd.read_csv(results / "tables" / "label_efficiency.csv", dtype={"n_labelled": str})
    provenance = json.loads((results / "provenance.json").read_text(encoding="utf-8"))
    timing_path = results / "demo_time.json"
    timing = json.loads(timing_path.read_text(encoding="utf-8")) if timing_path.is_file() else {}
    metrics = pd.read_csv(results / "pretrain" / "all" / "metrics.csv")
    best = metrics.loc[metrics["val_loss"].idxmin()]
    hardware = provenance.get("hardware", {})
    commit = str(provenance.get("git_commit", "unknown"))[:10]
    block = [
        f"Run of {run} at commit `{commit}` on {hardware.get('cpus', '?')} CPU cores"
        + (f", {timing['date']}" if "date" in timing else "")
        + (
            f": install {timing['install_seconds'] / 60:.1f} min, workflow "
            f"{timing['workflow_seconds'] / 60:.1f} min"
            if "workflow_seconds" in timing
            else ""
        )
        + ".",
        f"Pretraining: best validation restoration loss {best['val_loss']:.4f} at epoch "
        f"{int(best['epoch'])} (identity baseline {best['identity_loss']:.4f}).",
        "",
        "All labels, every run paired with scratch by seed (data: synthetic phantoms):",
        "",
        *target_rows(target),
        "",
    ]
    sweep = efficiency_rows(efficiency)
    if len(sweep) > 2:
        block += ["Label efficiency (nested subsets, paired by run):", "", *sweep, ""]
    body = "\n".join(block)
    if run == "`make demo`":
        source = (
            "Generated by `make demo-results` (tools/demo_results.py) from the files a\n"
            "`make demo` run wrote under `results/`; do not edit by hand. The README quotes the\n"
            "block below verbatim, and tests/test_demo_results.py checks that it does.\n\n"
        )
    else:
        source = (
            "Generated by tools/demo_results.py from the files the run below wrote under\n"
            "`results/`; do not edit by hand.\n\n"
        )
    return f"# {title}\n\n{source}{BEGIN}\n{body}{END}\n"


def block_of(text: str, where: str) -> str:
    """The text between the markers, or a clear error naming the file."""
    try:
        start = text.index(BEGIN) + len(BEGIN)
        end = text.index(END, start)
    except ValueError:
        raise SystemExit(f"{where}: no {BEGIN} ... {END} block") from None
    return text[start:end]


def replace_block(text: str, block: str, where: str) -> str:
    start = text.index(BEGIN) + len(BEGIN) if BEGIN in text else None
    if start is None or END not in text[start:]:
        raise SystemExit(f"{where}: no {BEGIN} ... {END} block to replace")
    end = text.index(END, start)
    return text[:start] + block + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--output", type=Path, default=Path("docs/demo-results.md"))
    parser.add_argument(
        "--readme", type=Path, default=Path("README.md"), help="README whose demo block to rewrite"
    )
    parser.add_argument(
        "--no-readme",
        action="store_true",
        help="write only --output (a record of one protocol attempt, docs/demo-attempts/)",
    )
    parser.add_argument("--title", default="Demo results", help="the document's heading")
    parser.add_argument(
        "--run", default="`make demo`", help="what wrote --results (Markdown), for the record"
    )
    args = parser.parse_args(argv)
    document = render(args.results, args.title, args.run)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(document, encoding="utf-8")
    if args.no_readme:
        print(f"wrote {args.output}", file=sys.stderr)
        return 0
    readme = args.readme.read_text(encoding="utf-8")
    args.readme.write_text(
        replace_block(readme, block_of(document, str(args.output)), str(args.readme)),
        encoding="utf-8",
    )
    print(f"wrote {args.output} and the demo block of {args.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
