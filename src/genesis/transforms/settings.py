"""Settings of the Models Genesis transformations, and the paper's ablation variants.

Defaults are the release's rates and ranges (facts §2). Building a ``TransformSettings``
validates it, so a bad config section fails with a ``ConfigError`` naming the key before any
cube is transformed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from genesis.errors import ConfigError
from genesis.settings import check_bounds, setting
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

    flip_rate: float = setting(
        0.4,
        "Probability of the first flip and of each further flip (release: 0.4).",
        bounds="[0, 1]",
    )
    max_flips: int = setting(
        3,
        "Most flips per sample, each along a random spatial axis (release: 3).",
        bounds="[1, inf)",
    )
    local_shuffle_rate: float = setting(
        0.5,
        "Probability of local pixel shuffling (release: 0.5).",
        bounds="[0, 1]",
    )
    local_shuffle_blocks: int = setting(
        10_000,
        "Blocks shuffled per sample, each up to a tenth of the cube along each axis (release: "
        "10,000).",
        bounds="[1, inf)",
    )
    nonlinear_rate: float = setting(
        0.9,
        "Probability of the Bézier intensity map (release: 0.9).",
        bounds="[0, 1]",
    )
    invert_rate: float = setting(
        0.5,
        "Share of intensity maps that are decreasing (an intensity inversion) (release: 0.5).",
        bounds="[0, 1]",
    )
    bezier_points: int = setting(
        4096,
        "Points sampled on each Bézier curve for the lookup. The release uses 100,000; 4,096 "
        "deviates from it by about 1e-5, below float16 resolution.",
        bounds="[2, inf)",
    )
    paint_rate: float = setting(
        0.9,
        "Probability of painting (release: 0.9).",
        bounds="[0, 1]",
    )
    inpaint_rate: float = setting(
        0.2,
        "Share of painted samples that are in-painted; the rest are out-painted (release: 0.2 / "
        "0.8).",
        bounds="[0, 1]",
    )
    inpaint_max_holes: int = setting(
        5,
        "Most noise-filled holes per in-painted sample (release: 5; at most 63: one bit per "
        "box in a 64-bit mask).",
        bounds=f"[1, {MAX_BOXES}]",
    )
    inpaint_continue_rate: float = setting(
        0.95,
        "After the first hole, another while rand < this (release: 0.95).",
        bounds="[0, 1]",
    )
    outpaint_max_windows: int = setting(
        5,
        "Most image windows kept per out-painted sample: one plus up to 4 more (release: 5; at "
        "most 63: one bit per box in a 64-bit mask).",
        bounds=f"[1, {MAX_BOXES}]",
    )
    outpaint_continue_rate: float = setting(
        0.95,
        "After the first window, another while rand < this (release: 0.95).",
        bounds="[0, 1]",
    )
    paint_margin: int = setting(
        3,
        "Voxels kept between a hole or window and the cube faces (release: 3).",
        bounds="[0, inf)",
    )
    enabled: tuple[str, ...] = setting(
        TRANSFORMS,
        "Transformations switched on; the workflow sets it from the pretraining variant.",
    )

    def __post_init__(self) -> None:
        validate(self)


def validate(settings: TransformSettings) -> None:
    """Raise ConfigError naming the key, the allowed values and the value received."""
    check_bounds(settings, SECTION)
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
