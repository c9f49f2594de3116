"""Reusable scratch buffers for the CPU transforms.

A fresh allocation of a few megabytes is returned to the operating system when freed, so
the next one page-faults on every 4 KiB it touches: for the transforms of one batch, about
as much time as the arithmetic. Intermediates are therefore kept per thread and reused.
The rule that keeps this safe: a private helper may hand a scratch buffer to its caller
(its docstring says so), who must be done with it before the next call that takes the same
name; a public transform never returns one, and its results are fresh tensors or the
caller's own cubes. CUDA has its own caching allocator, so this is for CPU tensors only.
"""

from __future__ import annotations

import threading

import torch

_local = threading.local()


def scratch(name: str, count: int, dtype: torch.dtype) -> torch.Tensor:
    """A 1-D CPU buffer of ``count`` elements, reused by the next call with the same name
    and dtype in this thread: its contents are undefined, and no public function may
    return it (see the module docstring)."""
    buffers: dict[tuple[str, torch.dtype], torch.Tensor] = _local.__dict__.setdefault("buffers", {})
    buffer = buffers.get((name, dtype))
    if buffer is None or buffer.numel() < count:  # grow by half at least: few regrowths
        buffer = torch.empty(
            max(count, 0 if buffer is None else buffer.numel() * 3 // 2), dtype=dtype
        )
        buffers[(name, dtype)] = buffer
    return buffer[:count]
