"""Download a public dataset or the authors' released models with checksums, or take
them from a local copy.

Examples::

    genesis fetch luna16 --output data --files subset3.zip annotations.csv
    genesis fetch liver --output data --settings '{"local_path": "/mnt/Task03_Liver.tar"}'
    genesis fetch lits --output data --settings '{"local_path": "/mnt/LiTS"}'
    genesis fetch released --output data     # Genesis_Chest_CT.pt and .h5
    genesis fetch released --output data --files genesis_nnunet_luna16_006.model

Layout under --output: luna16/subset{k}/ (+ luna16/subset{k}.complete.json),
luna16/annotations.csv, luna16/candidates_V2.csv, Task03_Liver/, Task01_BrainTumour/,
LiTS/, BraTS2018/, released/<file>. A folder is complete once its ``.complete.json``
marker exists. The nnU-Net model is for nnU-Net v1 only (see ``genesis.data.released``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genesis.commands._settings import add_settings_argument

HELP = "download LUNA16 / MSD data or the released models with checksums (or use a local copy)"
DATASETS = ("luna16", "liver", "brain", "lits", "brats2018", "released")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", choices=DATASETS, help="which dataset, or 'released' for the authors' models"
    )
    parser.add_argument(
        "--output",
        type=Path,
        required=True,
        help="data folder; the dataset goes into its own sub-folder",
    )
    parser.add_argument(
        "--files",
        nargs="+",
        metavar="NAME",
        help="only these files of the dataset, e.g. subset3.zip or "
        "Genesis_Chest_CT.pt (overrides the settings key 'files')",
    )
    add_settings_argument(parser, "fetch settings (base_url, checksums, local_path, ...)")


def run(args: argparse.Namespace) -> int:
    from genesis.data.fetch import FetchSettings, fetch_dataset
    from genesis.settings import from_mapping

    settings = from_mapping(FetchSettings, args.settings, "fetch")
    for target in fetch_dataset(args.dataset, args.output, settings, args.files):
        print(target)
    return 0
