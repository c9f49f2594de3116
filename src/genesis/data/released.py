"""The authors' released models, fetched from Hugging Face with checksums.

The Models Genesis authors publish three files in the Hugging Face repository
``MrGiovanni/ModelsGenesis`` (revision ``main``)::

    Genesis_Chest_CT.pt                 PyTorch weights of the 3D U-Net (``pt``)
    Genesis_Chest_CT.h5                 weights for the authors' Keras code (``h5``)
    genesis_nnunet_luna16_006.model     an nnU-Net v1 model file (``nnunet``)

``genesis_nnunet_luna16_006.model`` is an nnU-Net v1 model file: a pickled trainer plan
plus checkpoint for nnU-Net v1 on LUNA16 (task 006). It needs nnU-Net v1 to be used and is
NOT loadable by this project's U-Nets, so it is fetched only when asked for by name
(``--files`` or the settings key ``files``); by default only the two weight files are.

Everything else is ``genesis fetch``'s machinery (``genesis.data.fetch``): the files land
in ``<output>/released/<file>``; transfers resume from ``.<file>.part``; a file is checked
against a sha256 pinned in the settings key ``checksums`` or, without a pin, against the LFS
sha256 that the hub's tree API (settings key ``hub_api``) lists for it, and that value is
logged so it can be pinned; ``base_url`` fetches from a mirror (``<base_url>/<file>``) and
``local_path`` takes a copy the user already has (the file itself, or a folder holding it).

This is a registry entry (``released`` in ``genesis.data.sources``) rather than code of its
own, so ``genesis fetch released`` gets the resume, checksum and local-copy handling the
datasets have; this module only adds the typed entry point that the workflow and
fine-tuning call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from genesis.data.fetch import FetchSettings, fetch_dataset
from genesis.data.sources import RELEASED_DEFAULT, RELEASED_NNUNET
from genesis.errors import ConfigError

ReleasedKind = Literal["pt", "h5", "nnunet"]

#: Kind -> file name in the authors' repository.
RELEASED_FILES: dict[str, str] = {
    "pt": RELEASED_DEFAULT[0],
    "h5": RELEASED_DEFAULT[1],
    "nnunet": RELEASED_NNUNET,
}


def released_file(kind: ReleasedKind, output: Path, settings: FetchSettings) -> Path:
    """Fetch (or find, complete) one released file; return ``output/released/<file>``.

    ``output`` is the data folder. A file already there is taken as it is; otherwise it is
    downloaded and checked, or copied from ``settings.local_path``.
    """
    try:
        name = RELEASED_FILES[kind]
    except KeyError:
        raise ConfigError(
            f"released file kind must be one of {', '.join(RELEASED_FILES)}, got {kind!r}"
        ) from None
    [path] = fetch_dataset("released", Path(output), settings, [name])
    return path
