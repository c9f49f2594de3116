"""Checks on phantom settings that a field's own bounds cannot express."""

from __future__ import annotations

from collections.abc import Sequence

from genesis.errors import ConfigError


def check_shape(key: str, shape: Sequence[int], minimum: Sequence[int]) -> None:
    """A volume shape (x, y, z) no smaller than ``minimum`` along each axis."""
    if any(n < m for n, m in zip(shape, minimum, strict=True)):
        raise ConfigError(f"{key} must be at least {list(minimum)}, got {list(shape)}")
