"""What the report notebooks share: colours, init order, file display, the provenance record.

The notebooks read only the files they are given as papermill parameters (the workflow's
rules pass their declared inputs). A parameter names one file or a list of files; a list
may also come as a JSON string (``papermill -p curves '["a.csv", "b.csv"]'``). Like the
notebooks, this module imports only the standard library, pandas and IPython, never the
engine, so a finished results folder can be reported on any machine.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
from IPython.display import Image, Markdown, display

#: The figures' colours (genesis.report.figures): fixed for the main initialisations.
COLOURS = {"scratch": "#7f7f7f", "genesis": "#1f77b4", "released": "#ff7f0e"}
OTHER_COLOURS = ["#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
RUN_FOLDER = re.compile(r"run(\d+)")
LABELS_FOLDER = re.compile(r"labels(\d+(?:\.\d+)?)")


def colour(init, others=()):
    """The figures' colours: fixed for the main initialisations."""
    if init in COLOURS:
        return COLOURS[init]
    others = list(others)
    return OTHER_COLOURS[others.index(init) % len(OTHER_COLOURS)] if init in others else "k"


def note(text):
    display(Markdown(f"> {text}"))


def paths(value):
    """A parameter's files as a list of Paths: a path, a list, or a JSON list string."""
    if not value:
        return []
    if isinstance(value, str):
        value = json.loads(value) if value.lstrip().startswith("[") else [value]
    return [Path(item) for item in value]


def one_path(value):
    """A parameter naming at most one file: its Path, or None."""
    found = paths(value)
    if len(found) > 1:
        raise ValueError(f"expected one file, got {len(found)}: {found}")
    return found[0] if found else None


def titled(head, data_label, rest=""):
    """``head on <data label>: rest``, as the engine's figure titles say it."""
    title = f"{head} on {data_label}" if data_label else head
    return f"{title}: {rest}" if rest else title


def show_data_label(data_label):
    if data_label:
        display(Markdown(f"**Data**: {data_label}."))
    else:
        note("No data label given: the parameter `data_label` says what the data are.")


def show_image(path, what="figure"):
    """Show a PNG written by the figures stage, or say that it is missing."""
    path = one_path(path)
    if path is None:
        note(f"No {what} given.")
    elif path.is_file():
        display(Image(filename=str(path)))
    else:
        note(f"`{path}` does not exist (its workflow rule has not run).")


def read_table(path):
    """A CSV given as a parameter, or an empty frame when not given or missing."""
    path = one_path(path)
    return pd.read_csv(path) if path is not None and path.is_file() else pd.DataFrame()


def run_of(path):
    """(init, run) of a file in ``<task>/<init>/run<k>/`` (or ``.../labels<pct>/run<k>/``).

    A label sweep's run is named ``labels<pct>/run<k>`` and its init gets the share of
    labels, as the engine's figures show it.
    """
    folder = Path(path).parent
    if not RUN_FOLDER.fullmatch(folder.name):
        raise ValueError(f"{path} is not in a run folder <task>/<init>/run<k>")
    init_dir, run = folder.parent, folder.name
    sweep = LABELS_FOLDER.fullmatch(init_dir.name)
    if sweep:
        return f"{init_dir.parent.name} ({sweep.group(1)}% labels)", f"{init_dir.name}/{run}"
    return init_dir.name, run


def read_runs(files):
    """The given per-run CSVs, each tagged with its run's ``init`` and ``run``."""
    frames = []
    for path in paths(files):
        init, run = run_of(path)
        frames.append(pd.read_csv(path).assign(init=init, run=run))
    return frames


def init_order(inits):
    inits = set(inits)
    fixed = [i for i in ("scratch", "genesis", "released") if i in inits]
    variants = sorted(i for i in inits if i.startswith("genesis-"))
    return fixed + sorted(inits - set(fixed) - set(variants)) + variants


def fmt(mean, std):
    if pd.isna(mean):
        return "–"
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def config_seeds(config, prefix=""):
    """Integer keys named seed or *_seed in an embedded config, by dotted path."""
    seeds = {}
    if isinstance(config, dict):
        for key, value in config.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if (key == "seed" or str(key).endswith("_seed")) and isinstance(value, int):
                seeds[path] = value
            else:
                seeds.update(config_seeds(value, path))
    return seeds


def record_lines(record):
    """The reproducibility record as readable lines (the tables print the same)."""
    hardware = record.get("hardware", {})
    gpus = ", ".join(hardware.get("gpus") or []) or "no GPU"
    config_hash = (record.get("config_sha256") or record.get("config_hash")
                   or record.get("settings_hash") or "not recorded")
    lines = [
        f"**config hash**: `{config_hash}`",
        f"**git commit**: `{record.get('git_commit', 'unknown')}`",
        "**packages**: " + ", ".join(f"{k} {v}" for k, v in
                                     sorted(record.get("packages", {}).items())),
        f"**hardware**: {hardware.get('system', '?')}, {hardware.get('cpus', '?')} CPUs, "
        f"{gpus}, Python {hardware.get('python', '?')}",
    ]
    seeds = {**config_seeds(record.get("config")), **(record.get("seeds") or {})}
    runs = seeds.pop("finetune_runs", {})
    lines.append("**seeds**: " + (", ".join(f"{k}={v}" for k, v in sorted(seeds.items()))
                                  or "not recorded"))
    for key, values in sorted(runs.items()):
        lines.append(f"**run seeds {key}**: {', '.join(map(str, values))}")
    return lines


def show_record(records):
    """Print the first of the given provenance records that exists."""
    for path in paths(records):
        if path.is_file():
            record = json.loads(path.read_text(encoding="utf-8"))
            display(Markdown(f"Source: `{path}`\n\n" + "\n".join(
                f"- {line}" for line in record_lines(record))))
            return
    note("No provenance record found (run `genesis provenance`).")
