"""Which input sizes the 3D U-Net accepts, checked before any convolution runs.

Three max-poolings halve every axis three times, and the decoder concatenates each
upsampled map with the encoder map of the same level, so odd sizes would break the
concatenation deep inside the network with an opaque error. The paper asks for more
than the bare minimum: x and y divisible by 16, z by 8 (64x64x32 cubes), and we keep its
rule so that every size used here also works with the released weights' protocol.
"""

from __future__ import annotations

from collections.abc import Sequence

from genesis.errors import InputError

#: Required divisors of the spatial axes (x, y, z).
SPATIAL_DIVISORS: tuple[int, int, int] = (16, 16, 8)


class InputShapeError(InputError, ValueError):
    """A tensor or patch size the U-Net cannot take; also a ``ValueError`` for callers."""

    def __init__(self, problem: str) -> None:
        super().__init__(None, problem)


def check_input_shape(shape: Sequence[int]) -> None:
    """Refuse spatial sizes (x, y, z) that are not divisible by (16, 16, 8).

    Raises:
        InputShapeError: naming the shape and the rule, e.g. for (60, 64, 32).
    """
    dims = tuple(int(n) for n in shape)
    rule = "x and y must be positive multiples of 16 and z a positive multiple of 8 (e.g. 64x64x32)"
    if len(dims) != 3:
        raise InputShapeError(f"expected 3 spatial sizes (x, y, z), got {dims}; {rule}")
    bad = [
        f"{axis}={n}"
        for axis, n, k in zip("xyz", dims, SPATIAL_DIVISORS, strict=True)
        if n <= 0 or n % k
    ]
    if bad:
        raise InputShapeError(
            f"input size {'x'.join(map(str, dims))} is not accepted by the 3D U-Net: "
            f"{rule}; offending: {', '.join(bad)}"
        )


def check_input_tensor_shape(shape: Sequence[int], in_channels: int) -> None:
    """Check a full (N, C, X, Y, Z) tensor shape: five axes, the channel count, the sizes."""
    dims = tuple(int(n) for n in shape)
    if len(dims) != 5:
        raise InputShapeError(f"expected a (N, C, X, Y, Z) tensor, got shape {dims}")
    if dims[1] != in_channels:
        raise InputShapeError(
            f"expected {in_channels} input channel(s), got shape {dims} with {dims[1]}"
        )
    check_input_shape(dims[2:])
