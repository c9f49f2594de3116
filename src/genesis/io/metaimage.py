"""MetaImage (``.mhd`` + ``.raw``, ``.mha``): header checks before ITK, and an atomic writer.

SimpleITK reports a missing or truncated ``.raw`` with a long C++ message (or, for some
versions, reads garbage). LUNA16 downloads are often partial, so the header is parsed here
and the data size checked first; the user then gets one line naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genesis.atomic import atomic_path
from genesis.errors import InputError
from genesis.io.geometry import HasGeometry

#: Bytes per element of each MetaIO ElementType (MetaIO's MET_ValueTypeSize).
ELEMENT_BYTES: dict[str, int] = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG": 4,
    "MET_ULONG": 4,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}

#: ElementType written for each NumPy dtype.
ELEMENT_TYPES: dict[np.dtype, str] = {
    np.dtype(np.int8): "MET_CHAR",
    np.dtype(np.uint8): "MET_UCHAR",
    np.dtype(np.int16): "MET_SHORT",
    np.dtype(np.uint16): "MET_USHORT",
    np.dtype(np.int32): "MET_INT",
    np.dtype(np.uint32): "MET_UINT",
    np.dtype(np.float32): "MET_FLOAT",
    np.dtype(np.float64): "MET_DOUBLE",
}

_MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class MetaHeader:
    """The header fields needed to locate and size the voxel data."""

    fields: dict[str, str]
    data_offset: int  # bytes before the data in the .mha itself (LOCAL data only)


def read_header(path: Path) -> MetaHeader:
    """Parse ``key = value`` lines up to and including ``ElementDataFile``."""
    with path.open("rb") as handle:
        head = handle.read(_MAX_HEADER_BYTES)
    fields: dict[str, str] = {}
    offset = 0
    for raw_line in head.splitlines(keepends=True):
        offset += len(raw_line)
        line = raw_line.decode("latin-1").strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().replace("_", "").isalnum():
            raise InputError(path, f"not a MetaImage header (bad line {line[:40]!r})")
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            return MetaHeader(fields, offset)
    raise InputError(path, "not a MetaImage header: no ElementDataFile line")


def check_metaimage(path: Path) -> None:
    """Raise ``InputError`` if the header is malformed or the voxel data is missing/short."""
    header = read_header(path)
    fields = header.fields
    try:
        ndims = int(fields["NDims"])
        dims = [int(v) for v in fields["DimSize"].split()]
    except (KeyError, ValueError) as error:
        raise InputError(path, f"MetaImage header lacks a valid NDims/DimSize ({error})") from None
    if len(dims) != ndims or min(dims, default=0) < 1:
        raise InputError(path, f"DimSize {dims} does not match NDims = {ndims}")
    element = fields.get("ElementType", "")
    if element not in ELEMENT_BYTES:
        raise InputError(path, f"unsupported or missing ElementType {element!r}")
    data_name = fields["ElementDataFile"]
    if data_name == "LOCAL":
        data_path, available = path, path.stat().st_size - header.data_offset
    elif data_name.upper().startswith("LIST") or "%" in data_name:
        return  # one file per slice; SimpleITK checks those itself
    else:
        data_path = path.parent / data_name
        if not data_path.is_file():
            raise InputError(path, f"ElementDataFile {data_name} does not exist next to it")
        available = data_path.stat().st_size
    if fields.get("CompressedData", "False").lower() == "true":
        return  # zlib stream: its length is not known from the header; ITK checks it
    channels = int(fields.get("ElementNumberOfChannels", "1"))
    needed = int(np.prod(dims)) * channels * ELEMENT_BYTES[element]
    skip = int(fields.get("HeaderSize", "0"))
    if skip > 0:
        needed += skip
    if available < needed or (skip == 0 and data_name != "LOCAL" and available != needed):
        raise InputError(
            path,
            f"{data_path.name} holds {available} bytes but DimSize {dims} x {element} needs "
            f"{needed}: truncated or corrupt download",
        )


def orientation_code(direction: np.ndarray) -> str:
    """ITK's three-letter AnatomicalOrientation for a direction matrix (identity -> RAI)."""
    letters = (("L", "R"), ("P", "A"), ("S", "I"))
    code = ""
    for column in np.asarray(direction, float).T:
        axis = int(np.argmax(np.abs(column)))
        code += letters[axis][int(column[axis] > 0)]
    return code


def save_metaimage(
    path: str | Path,
    data: np.ndarray,
    *,
    spacing: tuple[float, float, float] | None = None,
    origin: tuple[float, float, float] | None = None,
    direction: np.ndarray | None = None,
    like: HasGeometry | None = None,
) -> None:
    """Write a 3D (x, y, z) array as ``path`` (.mhd) plus ``.raw``, both atomically.

    Geometry comes from ``like`` (a ``Volume`` or ``Geometry``) or from ``spacing``,
    ``origin`` and ``direction`` (LPS). The dtype is kept (LUNA16 uses int16, MET_SHORT).
    Both files go to temporaries first; the ``.raw`` is renamed into place before the
    header, so a visible ``.mhd`` always has its complete data file.
    """
    path = Path(path)
    if like is not None:
        spacing, origin, direction = like.spacing, like.origin, like.direction
    if spacing is None or origin is None:
        raise ValueError("save_metaimage needs like= or both spacing= and origin=")
    if path.suffix != ".mhd":
        raise InputError(path, "save_metaimage writes .mhd files only")
    if data.ndim != 3:
        raise InputError(path, f"save_metaimage needs a 3D (x, y, z) array, got shape {data.shape}")
    dtype = np.dtype(data.dtype)
    if dtype not in ELEMENT_TYPES:
        raise InputError(path, f"cannot write dtype {dtype} as MetaImage")
    direction = np.eye(3) if direction is None else np.asarray(direction, float)
    raw_path = path.with_suffix(".raw")
    # MetaIO stores x fastest, then y, then z: Fortran order of an (x, y, z) array.
    payload = np.asarray(data, dtype=dtype.newbyteorder("<")).tobytes(order="F")
    header = _header_text(data.shape, dtype, spacing, origin, direction, raw_path.name)
    # Contexts exit in reverse order: the raw is renamed first, the header last.
    with atomic_path(path) as header_tmp, atomic_path(raw_path) as raw_tmp:
        raw_tmp.write_bytes(payload)
        header_tmp.write_text(header)


def _header_text(
    shape: tuple[int, ...],
    dtype: np.dtype,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    direction: np.ndarray,
    raw_name: str,
) -> str:
    def numbers(values: object) -> str:
        return " ".join(f"{float(v):.10g}" for v in np.ravel(values))

    # TransformMatrix lists the direction column of axis 0 first (ITK's MetaImageIO order).
    lines = [
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CompressedData = False",
        f"TransformMatrix = {numbers(direction.T)}",
        f"Offset = {numbers(origin)}",
        "CenterOfRotation = 0 0 0",
        f"AnatomicalOrientation = {orientation_code(direction)}",
        f"ElementSpacing = {numbers(spacing)}",
        f"DimSize = {' '.join(str(int(s)) for s in shape)}",
        f"ElementType = {ELEMENT_TYPES[dtype]}",
        f"ElementDataFile = {raw_name}",
    ]
    return "\n".join(lines) + "\n"
