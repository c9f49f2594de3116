"""The registry of public data: download URLs, pinned checksums and on-disk layout.

Facts §7. Each remote file knows where it ends up under the data folder, so that the
layout matches what the phantoms (``genesis synth``) produce::

    DIR/luna16/subset{k}/*.mhd + *.raw      (subset{k}.zip, Zenodo)
    DIR/luna16/annotations.csv
    DIR/luna16/candidates_V2.csv            (moved out of candidates_V2.zip's folder)
    DIR/Task03_Liver/{dataset.json, imagesTr, labelsTr, imagesTs}
    DIR/Task01_BrainTumour/{...}
    DIR/LiTS, DIR/BraTS2018                 (registration required: local copies only)
    DIR/released/Genesis_Chest_CT.{pt,h5}   (the authors' weights, Hugging Face)
    DIR/released/genesis_nnunet_luna16_006.model   (only on request; needs nnU-Net v1)

Zenodo's LUNA16 md5 sums are not known offline, so their registry entry is ``None``:
the fetcher then uses a checksum pinned in the settings, or asks Zenodo's record API.
Likewise the released models' sha256 sums are not pinned here: the fetcher uses a pin
from the settings, or the LFS sha256 the Hugging Face hub's API lists for the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from genesis.errors import ConfigError

ZENODO_FILE_URL = "https://zenodo.org/records/{record}/files/{name}?download=1"
MSD_BASE_URL = "https://msd-for-monai.s3-us-west-2.amazonaws.com/"
HF_FILE_URL = "https://huggingface.co/{repo}/resolve/{revision}/{name}"

#: The authors' Hugging Face repository and the revision its files are taken from.
RELEASED_REPO = "MrGiovanni/ModelsGenesis"
RELEASED_REVISION = "main"
#: Released files fetched when none are named (the nnU-Net model only on request).
RELEASED_DEFAULT = ("Genesis_Chest_CT.pt", "Genesis_Chest_CT.h5")
RELEASED_NNUNET = "genesis_nnunet_luna16_006.model"

#: LUNA16 subsets per Zenodo record: part 1 holds subsets 0-6, part 2 subsets 7-9.
LUNA16_RECORDS = {"3723295": range(0, 7), "4121926": range(7, 10)}

Kind = Literal["file", "zip", "tar"]


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file and where its content goes under the data folder.

    ``member`` is the path inside the archive that becomes ``target`` (``None``: the whole
    archive); ``record`` is the Zenodo record whose API lists the file's md5; ``hub`` is
    the Hugging Face repository (``owner/name``) whose API lists the file's LFS sha256 at
    ``RELEASED_REVISION``; ``is_dir`` says whether ``target`` is a folder (then it gets a
    completion marker).
    """

    name: str
    url: str
    md5: str | None
    kind: Kind
    target: str
    member: str | None = None
    record: str | None = None
    is_dir: bool = False
    hub: str | None = None


@dataclass(frozen=True)
class Source:
    """A dataset the ``genesis fetch`` command knows.

    ``target`` is its folder under the data folder; ``registration`` marks data that must
    come from a local copy because its licence forbids redistribution; ``default_files``
    are the files fetched when none are named (``None``: all of them).
    """

    name: str
    target: str
    files: tuple[RemoteFile, ...] = ()
    registration: bool = False
    description: str = ""
    default_files: tuple[str, ...] | None = None

    def file(self, name: str) -> RemoteFile:
        for remote in self.files:
            if remote.name == name:
                return remote
        raise ConfigError(
            f"fetch.files: {self.name} has no file {name!r}; "
            f"known: {', '.join(f.name for f in self.files)}"
        )


def _zenodo(
    record: str, name: str, kind: Kind, target: str, member: str | None = None, is_dir: bool = False
) -> RemoteFile:
    url = ZENODO_FILE_URL.format(record=record, name=name)
    return RemoteFile(name, url, None, kind, target, member, record, is_dir)


def _luna16_files() -> tuple[RemoteFile, ...]:
    files = [
        _zenodo("3723295", "annotations.csv", "file", "luna16/annotations.csv"),
        _zenodo(
            "3723295",
            "candidates_V2.zip",
            "zip",
            "luna16/candidates_V2.csv",
            member="candidates_V2/candidates_V2.csv",
        ),
    ]
    for record, subsets in LUNA16_RECORDS.items():
        files += [
            _zenodo(
                record,
                f"subset{k}.zip",
                "zip",
                f"luna16/subset{k}",
                member=f"subset{k}",
                is_dir=True,
            )
            for k in subsets
        ]
    return tuple(files)


def _msd(task: str, md5: str) -> RemoteFile:
    return RemoteFile(
        f"{task}.tar", f"{MSD_BASE_URL}{task}.tar", md5, "tar", task, member=task, is_dir=True
    )


def _released(name: str) -> RemoteFile:
    url = HF_FILE_URL.format(repo=RELEASED_REPO, revision=RELEASED_REVISION, name=name)
    return RemoteFile(name, url, None, "file", f"released/{name}", hub=RELEASED_REPO)


SOURCES: dict[str, Source] = {
    "luna16": Source(
        "luna16",
        "luna16",
        _luna16_files(),
        description="LUNA16 chest CT (Zenodo 3723295 + 4121926)",
    ),
    "liver": Source(
        "liver",
        "Task03_Liver",
        (_msd("Task03_Liver", "a90ec6c4aa7f6a3d087205e23d4e6397"),),
        description="Medical Segmentation Decathlon Task03_Liver (LiTS-derived)",
    ),
    "brain": Source(
        "brain",
        "Task01_BrainTumour",
        (_msd("Task01_BrainTumour", "240a19d752f0d9e9101544901065d872"),),
        description="Medical Segmentation Decathlon Task01_BrainTumour (BraTS-derived)",
    ),
    "lits": Source(
        "lits",
        "LiTS",
        registration=True,
        description="LiTS 2017 original (volume-N.nii, segmentation-N.nii)",
    ),
    "brats2018": Source(
        "brats2018",
        "BraTS2018",
        registration=True,
        description="BraTS 2018 ({HGG,LGG}/Brats18_*/...)",
    ),
    "released": Source(
        "released",
        "released",
        tuple(_released(n) for n in (*RELEASED_DEFAULT, RELEASED_NNUNET)),
        description=f"the authors' released models ({RELEASED_REPO} on Hugging Face)",
        default_files=RELEASED_DEFAULT,
    ),
}


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(SOURCES)}") from None
