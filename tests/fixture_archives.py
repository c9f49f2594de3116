"""Small tar archives built in memory, for the download and extraction tests."""

from __future__ import annotations

import io
import tarfile


def tar_bytes(
    entries: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None, mode: str = "w"
) -> bytes:
    """A tar holding ``entries`` (name -> content) and ``links`` (name -> (type, target))."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as bundle:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            bundle.addfile(info)
    return buffer.getvalue()
