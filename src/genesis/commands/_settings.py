"""Shared argument helpers: stage settings arrive as one JSON object.

Snakemake rules pass a config section with ``--settings {params.settings:q}``; a user can
pass the same JSON inline or as ``@file.json``. The engine never reads Snakemake's config.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from genesis.errors import ConfigError


def parse_settings(text: str) -> dict[str, Any]:
    """Parse a JSON-object option (``--settings``, ``--seeds``, ...): inline JSON, or
    ``@path`` to a JSON/YAML file. argparse prefixes errors with the option's name."""
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise ConfigError(f"file {path} does not exist")
        raw = path.read_text(encoding="utf-8")
        if path.suffix in {".yaml", ".yml"}:
            import yaml

            value = yaml.safe_load(raw)
        else:
            value = _loads(raw, str(path))
    else:
        value = _loads(text, "value")
    if not isinstance(value, dict):
        raise ConfigError(f"must be a JSON object, got {type(value).__name__}")
    return value


def _loads(raw: str, where: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{where} is not valid JSON: {error}") from None


def settings_argument(text: str) -> dict[str, Any]:
    """``parse_settings`` for argparse: errors become one-line usage errors."""
    try:
        return parse_settings(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_settings_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--settings",
        type=settings_argument,
        default={},
        help=f"{what} as a JSON object, or @file.json / @file.yaml; keys as in the "
        "matching section of config/config.yaml (see config/README.md)",
    )


def add_task_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``--threads``, ``--gpu-slots`` and ``--jobs-per-gpu`` of the task commands
    (finetune, evaluate): the same lease options, spelt once."""
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument(
        "--gpu-slots",
        type=int,
        default=None,
        help="number of GPU lock slots (default: $GENESIS_GPU_SLOTS or all visible GPUs)",
    )
    parser.add_argument(
        "--jobs-per-gpu",
        type=int,
        default=1,
        help="share each GPU with up to this many jobs (many small fine-tunes; "
        "an exclusive job such as pretraining never shares)",
    )
