"""Random draws for the batched transforms, all from one explicit ``torch.Generator``.

Every draw happens on the generator's device and the parameters are moved to the cube's
device when applied. A CPU generator therefore works with CUDA cubes and gives the same
transformed pairs on either device (the Bezier lookup up to float rounding); a generator on
the cube's device avoids the transfer of the two large draws (shuffling keys, painting
noise) and is the fast choice on a GPU.
"""

from __future__ import annotations

import numpy as np
import torch

from genesis.transforms._shape import as_bool_mask

# Sub-generator seeds stay below 2**62 so they fit torch's signed 64-bit seed on any device.
_SEED_LIMIT = 2**62


def uniform(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """Uniform float32 in [0, 1) on the generator's device."""
    return torch.rand(shape, generator=generator, device=generator.device)


def uniform_numpy(
    generator: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype = torch.float32
) -> np.ndarray:
    """The same draw as ``uniform`` (or a float64 one), as a NumPy array on CPU.

    The parameters of a batch are a few hundred numbers: after the draw, NumPy does their
    arithmetic at a fraction of torch's per-op overhead, and ``on_device`` puts the
    results where the generator lives. The draws, and so the random streams, are torch's.
    """
    return (
        torch.rand(shape, generator=generator, device=generator.device, dtype=dtype).cpu().numpy()
    )


def on_device(array: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """A NumPy parameter array as a tensor on the generator's device (free on CPU)."""
    return torch.from_numpy(np.ascontiguousarray(array)).to(generator.device)


def randint(generator: torch.Generator, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Integers uniform in [low, high], bounds inclusive and broadcast elementwise.

    ``torch.randint`` takes only scalar bounds; scaling one uniform draw per element lets
    every block or box have its own range in a single call.
    """
    low, high = torch.broadcast_tensors(low, high)
    draw = torch.rand(low.shape, generator=generator, device=generator.device, dtype=torch.float64)
    value = low + (draw * (high - low + 1)).floor().long()
    return torch.minimum(value, high)


def randint_numpy(
    generator: torch.Generator, low: np.ndarray | int, high: np.ndarray | int
) -> np.ndarray:
    """``randint`` with NumPy bounds and result: the same draw, the same integers."""
    low, high = np.broadcast_arrays(
        np.asarray(low, dtype=np.int64), np.asarray(high, dtype=np.int64)
    )
    draw = uniform_numpy(generator, low.shape, torch.float64)
    return np.minimum(low + np.floor(draw * (high - low + 1)).astype(np.int64), high)


# Words per NumPy draw when filling a buffer: 64 KiB temporaries come from the heap's free
# lists, where one multi-megabyte draw would page-fault on fresh memory every time.
_DRAW = 8192


def random_words(seed: int, count: int, out: np.ndarray | None = None) -> np.ndarray:
    """``count`` uniform 64-bit words (uint64) of a NumPy SFC64 stream seeded by ``seed``,
    in ``out[:count]`` when given (the same words, drawn in pieces).

    The large CPU draws (shuffling blocks and sort keys, painting noise) come from here, with
    a seed drawn from the torch generator (``sub_seed``): several times faster than torch's
    CPU generator, and replayable from one integer.
    """
    bits = np.random.SFC64(seed)
    if out is None:
        return bits.random_raw(count)
    for first in range(0, count, _DRAW):
        out[first : first + _DRAW] = bits.random_raw(min(_DRAW, count - first))
    return out[:count]


def below_(words: np.ndarray, span: np.ndarray, *, low_half: bool = False) -> np.ndarray:
    """Integers uniform in [0, span) from uniform 32-bit words: (word * span) >> 32, whose
    bias for spans of at most a few hundred is below 1e-7, with no rejection loop.

    ``words`` (uint64) holds the words (< 2**32), or with ``low_half`` full 64-bit words
    whose low halves are used; either way it is overwritten with the result.
    """
    if low_half:
        words &= np.uint64(2**32 - 1)
    words *= span
    words >>= np.uint64(32)
    return words


def continuing(
    generator: torch.Generator, n: int, count: int, rate: float, first: np.ndarray | None
) -> np.ndarray:
    """(n, count) bool: repetition k happens while every draw up to k was below ``rate``.

    This is the release's "repeat up to ``count`` times while rand < rate" loop, drawn for
    the whole batch at once. ``first`` forces (True) or suppresses (False) the first
    repetition per sample instead of drawing it; None draws it like the others.
    """
    draws = uniform_numpy(generator, (n, count)) < np.float32(rate)
    if first is not None:
        draws[:, 0] = first
    return np.logical_and.accumulate(draws, axis=1)


def sub_seed(generator: torch.Generator) -> int:
    """A seed for a sub-generator, so a large draw can be replayed from one integer."""
    value = torch.randint(0, _SEED_LIMIT, (1,), generator=generator, device=generator.device)
    return int(value.item())


def sub_generator(seed: int, device: torch.device) -> torch.Generator:
    """A fresh generator for a replayable large draw (shuffling keys, painting noise)."""
    return torch.Generator(device=device).manual_seed(seed)


def selected(apply: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    """Indices (on ``device``) of the samples an op applies to; None means all of them."""
    if apply is None:
        return torch.arange(n, device=device)
    return torch.nonzero(as_bool_mask(apply, n).to(device), as_tuple=False).flatten()
