"""Settings of the Models Genesis transformations, and the paper's ablation variants.

Defaults are the release's rates and ranges (facts §2). Building a ``TransformSettings``
validates it, so a bad config section fails with a ``ConfigError`` naming the key before any
cube is transformed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from genesis.errors import ConfigError
from genesis.transforms._shape import MAX_BOXES

SECTION = "transforms"
TRANSFORMS = ("flip", "local_shuffle", "nonlinear", "inpainting", "outpainting")
VARIANTS = ("all", "nonlinear", "local_shuffle", "inpainting", "outpainting")


@dataclass(frozen=True)
class TransformSettings:
    """Rates (per-sample probabilities), counts and ranges of the four transformations.

    ``inpaint_rate`` is the share of painted samples that are in-painted; the rest are
    out-painted. ``enabled`` switches transformations on and off (the ablation variants).
    """

    flip_rate: float = 0.4
    max_flips: int = 3
    local_shuffle_rate: float = 0.5
    local_shuffle_blocks: int = 10_000
    nonlinear_rate: float = 0.9
    invert_rate: float = 0.5
    bezier_points: int = 4096
    paint_rate: float = 0.9
    inpaint_rate: float = 0.2
    inpaint_max_holes: int = 5
    inpaint_continue_rate: float = 0.95
    outpaint_max_windows: int = 5
    outpaint_continue_rate: float = 0.95
    paint_margin: int = 3
    enabled: tuple[str, ...] = TRANSFORMS

    def __post_init__(self) -> None:
        validate(self)


_RATES = (
    "flip_rate",
    "local_shuffle_rate",
    "nonlinear_rate",
    "invert_rate",
    "paint_rate",
    "inpaint_rate",
    "inpaint_continue_rate",
    "outpaint_continue_rate",
)
_MINIMUMS = {
    "max_flips": 1,
    "local_shuffle_blocks": 1,
    "bezier_points": 2,
    "inpaint_max_holes": 1,
    "outpaint_max_windows": 1,
    "paint_margin": 0,
}


def validate(settings: TransformSettings) -> None:
    """Raise ConfigError naming the key, the allowed values and the value received."""
    for name in _RATES:
        value = getattr(settings, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (0.0 <= value <= 1.0)
        ):
            raise ConfigError(f"{SECTION}.{name} must be a number in [0, 1], got {value!r}")
    for name, minimum in _MINIMUMS.items():
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{SECTION}.{name} must be an integer >= {minimum}, got {value!r}")
    for name in ("inpaint_max_holes", "outpaint_max_windows"):
        if getattr(settings, name) > MAX_BOXES:
            raise ConfigError(
                f"{SECTION}.{name} must be at most {MAX_BOXES} (one bit per box "
                f"in a 64-bit mask), got {getattr(settings, name)!r}"
            )
    enabled = settings.enabled
    if isinstance(enabled, str) or not isinstance(enabled, tuple | list):
        raise ConfigError(
            f"{SECTION}.enabled must be a list of names from {list(TRANSFORMS)}, got {enabled!r}"
        )
    for name in enabled:
        if name not in TRANSFORMS:
            raise ConfigError(
                f"{SECTION}.enabled: unknown transform {name!r}; allowed: {', '.join(TRANSFORMS)}"
            )
    if len(set(enabled)) != len(enabled):
        raise ConfigError(f"{SECTION}.enabled lists a transform twice: {list(enabled)}")


def settings_for_variant(variant: str, base: TransformSettings | None = None) -> TransformSettings:
    """Settings of a pretraining variant: ``all``, or one transformation alone (ablation).

    Flip stays on in every variant: it moves input and target together, so it is data
    augmentation, not a distortion to learn from; switching it off would confound the
    ablation with a loss of augmentation. Rates keep their ``base`` values, so e.g. the
    ``nonlinear`` variant distorts 90% of samples and leaves 10% as pure autoencoding.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    base = base or TransformSettings()
    enabled = TRANSFORMS if variant == "all" else ("flip", variant)
    return dataclasses.replace(base, enabled=enabled)
