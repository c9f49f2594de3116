"""Cut pretraining cubes from CT/MRI scans into a float16 shard plus a manifest CSV.

Inputs are folders (searched recursively for .mhd/.mha/.nii/.nii.gz files and DICOM
series folders, formats may be mixed), CSV lists (column ``path``; optional ``modality``
and ``split``) or single volumes. Writes OUTPUT (.npy, (n, X, Y, Z) float16 in [0, 1])
and OUTPUT with .csv (index, source, split, x, y, z, scale, status, reason).

Example::

    genesis cubes --inputs data/luna16/subset0 --output results/cubes/subset0.npy \\
        --split train --modality ct --seed 0 --settings '{"cubes_per_scan": 32}'
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from genesis.commands._settings import add_settings_argument

HELP = "cut pretraining cubes from scans into a shard (.npy) and manifest (.csv)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inputs", nargs="+", type=Path, required=True, metavar="PATH",
                        help="folders, CSV lists (column 'path') or volume files")
    parser.add_argument("--output", type=Path, required=True,
                        help="shard to write (.npy); the manifest goes next to it (.csv)")
    parser.add_argument("--split", default="train",
                        help="split recorded in the manifest; also selects rows of a CSV "
                        "list that has a 'split' column")
    parser.add_argument("--modality", choices=("ct", "mri", "auto"), default="ct",
                        help="intensity window: CT HU window, MRI per-volume window, or "
                        "decide per scan (a CSV 'modality' column overrides this)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; each scan derives "
                        "its own stream from it and its source label")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable scans or scans with NaNs (logged and "
                        "recorded in the manifest) instead of stopping with an error")
    add_settings_argument(parser, "cube settings (cube_size, border, cubes_per_scan, ...)")


def run(args: argparse.Namespace) -> int:
    from genesis.cubes.extract import CubeSettings, extract_to_shard
    from genesis.cubes.inputs import discover_scans
    from genesis.errors import ConfigError
    from genesis.settings import from_mapping

    if args.output.suffix != ".npy":
        raise ConfigError(f"--output must end in .npy, got {args.output}")
    settings = from_mapping(CubeSettings, args.settings, "cubes")
    scans = discover_scans(args.inputs, split=args.split)
    log.info("%d scans from %s", len(scans), ", ".join(map(str, args.inputs)))
    summary = extract_to_shard(scans, args.output, split=args.split, modality=args.modality,
                               seed=args.seed, settings=settings, skip_bad=args.skip_bad)
    log.info("%s: %d cubes from %d scans (%d skipped)", args.output, summary.cubes,
             summary.scans - summary.skipped, summary.skipped)
    return 0
