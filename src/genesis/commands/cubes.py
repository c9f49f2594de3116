"""Cut pretraining cubes from CT/MRI scans into a float16 shard plus a manifest CSV.

Inputs are folders (searched recursively for .mhd/.mha/.nii/.nii.gz files and DICOM
series folders, formats may be mixed), CSV lists (column ``path``; optional ``modality``
and ``split``) or single volumes. Writes OUTPUT (.npy, (n, X, Y, Z) float16 in [0, 1])
and OUTPUT with .csv (index, source, split, x, y, z, scale, status, reason, modality,
border, min_slices), the two together and only on success. A run that fails (a bad
scan without --skip-bad, or no cubes at all without --allow-empty) exits with status 2,
leaves an existing pair untouched and writes its rows to OUTPUT with .failed.csv.

By default (``cubes.recipe: auto``) the border and minimum slice count are scaled to
each scan, so ordinary CT and MRI give cubes; ``{"recipe": "paper"}`` is the paper's
LUNA16 recipe, as given in the settings.

Example::

    genesis cubes --inputs data/luna16/subset0 --output results/cubes/subset0.npy \\
        --split train --modality ct --seed 0 --settings '{"recipe": "paper"}'
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from genesis.commands._settings import add_settings_argument

HELP = "cut pretraining cubes from scans into a shard (.npy) and manifest (.csv)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--inputs",
        nargs="+",
        type=Path,
        required=True,
        metavar="PATH",
        help="folders, CSV lists (column 'path') or volume files",
    )
    parser.add_argument(
        "--output",
        type=Path,
        required=True,
        help="shard to write (.npy); the manifest goes next to it (.csv)",
    )
    parser.add_argument(
        "--split",
        default="train",
        help="split recorded in the manifest; also selects rows of a CSV "
        "list that has a 'split' column",
    )
    parser.add_argument(
        "--modality",
        choices=("ct", "mri", "auto"),
        default="auto",
        help="intensity window: CT HU window, MRI per-volume window, or "
        "decide per scan (a CSV 'modality' column overrides this)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="base seed; each scan derives its own stream from it and its source label",
    )
    parser.add_argument(
        "--skip-bad",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="skip unreadable scans or scans with NaNs (logged and recorded "
        "in the manifest) instead of stopping with an error",
    )
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="write an empty shard when no scan gives a cube, instead of "
        "failing with the reasons counted",
    )
    add_settings_argument(parser, "cube settings (cube_size, border, cubes_per_scan, ...)")


def run(args: argparse.Namespace) -> int:
    from genesis.atomic import remove_stale_temporaries
    from genesis.cubes.extract import CubeSettings, extract_to_shard
    from genesis.cubes.inputs import discover_scans
    from genesis.cubes.shards import failed_manifest_path, manifest_path
    from genesis.errors import ConfigError
    from genesis.settings import from_mapping

    if args.output.suffix != ".npy":
        raise ConfigError(f"--output must end in .npy, got {args.output}")
    settings = from_mapping(CubeSettings, args.settings, "cubes")
    remove_stale_temporaries(
        [args.output, manifest_path(args.output), failed_manifest_path(args.output)]
    )
    scans = discover_scans(args.inputs, split=args.split)
    log.info(
        "%d scans from %s (recipe %s)",
        len(scans),
        ", ".join(map(str, args.inputs)),
        settings.recipe,
    )
    summary = extract_to_shard(
        scans,
        args.output,
        split=args.split,
        modality=args.modality,
        seed=args.seed,
        settings=settings,
        skip_bad=args.skip_bad,
        allow_empty=args.allow_empty,
    )
    log.info("%s: %s", args.output, summary.describe())
    if summary.mostly_air:
        log.warning(
            "%d of %d scans gave cubes that are mostly air outside the body (%s): "
            "the CT tissue filter keeps air/lung windows; for CT other than chest CT, "
            "or thick slices, set cubes.ct_filter: none",
            len(summary.mostly_air),
            summary.scans,
            ", ".join(summary.mostly_air[:3]) + (", ..." if len(summary.mostly_air) > 3 else ""),
        )
    return 0
