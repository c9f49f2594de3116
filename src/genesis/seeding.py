"""One place that derives seeds, so every random step traces back to a config seed."""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(base_seed: int, *labels: object) -> int:
    """A stable 63-bit seed for a labelled sub-stream (e.g. ``derive_seed(7, "scan", uid)``).

    Uses a hash rather than ``base_seed + i`` so that neighbouring streams are unrelated
    and the result does not depend on Python's randomised ``hash()``.
    """
    text = "/".join([str(base_seed), *map(str, labels)])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def numpy_rng(base_seed: int, *labels: object) -> np.random.Generator:
    """A NumPy generator for the labelled sub-stream."""
    return np.random.default_rng(derive_seed(base_seed, *labels))


def set_determinism(seed: int) -> None:
    """Seed torch, and ask it for deterministic CPU kernels.

    Does not cover: non-deterministic CUDA kernels (atomics in some backward passes),
    DataLoader worker order when ``num_workers > 0`` without a worker_init_fn, and
    different results across torch versions or CPU instruction sets.
    """
    import torch

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
