"""Checks on phantom settings that ``from_mapping``'s type checks cannot express."""

from __future__ import annotations

from collections.abc import Sequence

from genesis.errors import ConfigError


def check_range(
    key: str, pair: Sequence[float], minimum: float, maximum: float | None = None
) -> None:
    """``pair`` is (low, high) with minimum <= low <= high (<= maximum)."""
    low, high = pair
    if low > high:
        raise ConfigError(f"{key} must be [low, high] with low <= high, got {list(pair)}")
    if low < minimum or (maximum is not None and high > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{key} must be {bound}, got {list(pair) if low != high else low}")


def check_shape(key: str, shape: Sequence[int], minimum: Sequence[int]) -> None:
    """A volume shape (x, y, z) no smaller than ``minimum`` along each axis."""
    if any(n < m for n, m in zip(shape, minimum, strict=True)):
        raise ConfigError(f"{key} must be at least {list(minimum)}, got {list(shape)}")


def check_value(key: str, value: float, minimum: float, maximum: float | None = None) -> None:
    """A single number within [minimum, maximum]."""
    check_range(key, (value, value), minimum, maximum)
