"""Generate phantom datasets in the real on-disk layouts, deterministically from a seed.

``luna16`` writes chest CT as LUNA16 (subset{k}/{seriesuid}.mhd + .raw, annotations.csv,
candidates_V2.csv); ``liver`` writes abdominal CT as MSD Task03_Liver; ``brain`` writes
4-channel brain MRI as MSD Task01_BrainTumour. Every later stage reads them exactly as it
reads the real downloads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from genesis.commands._settings import add_settings_argument

HELP = "generate phantom datasets (LUNA16, MSD liver, MSD brain layouts)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", choices=("luna16", "liver", "brain"), help="which dataset layout to generate"
    )
    parser.add_argument(
        "--output", type=Path, required=True, help="dataset folder to write (e.g. data/luna16)"
    )
    parser.add_argument("--seed", type=int, default=2019, help="base seed")
    add_settings_argument(parser, "phantom settings (sizes, counts, ranges)")


def run(args: argparse.Namespace) -> int:
    from genesis.synth import SYNTHESIZERS

    summary = SYNTHESIZERS[args.dataset](args.output, args.settings, args.seed)
    print(json.dumps(summary, sort_keys=True))
    return 0
