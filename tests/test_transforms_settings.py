"""Settings, variants and argument validation of the Models Genesis transforms."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from genesis.errors import ConfigError
from genesis.settings import from_mapping, to_mapping
from genesis.transforms import (
    TRANSFORMS,
    VARIANTS,
    GenesisTransform,
    TransformSettings,
    settings_for_variant,
)


def test_defaults_are_the_release_rates() -> None:
    s = TransformSettings()
    assert (s.flip_rate, s.local_shuffle_rate, s.nonlinear_rate, s.paint_rate, s.inpaint_rate) == (
        0.4,
        0.5,
        0.9,
        0.9,
        0.2,
    )
    assert (
        s.max_flips,
        s.local_shuffle_blocks,
        s.inpaint_max_holes,
        s.outpaint_max_windows,
        s.paint_margin,
    ) == (3, 10_000, 5, 5, 3)
    assert s.inpaint_continue_rate == s.outpaint_continue_rate == 0.95
    assert s.enabled == TRANSFORMS


def test_from_mapping_round_trip() -> None:
    s = from_mapping(
        TransformSettings, {"flip_rate": 0, "enabled": ["flip", "nonlinear"]}, "transforms"
    )
    assert s.flip_rate == 0.0 and s.enabled == ("flip", "nonlinear")
    assert from_mapping(TransformSettings, to_mapping(s), "transforms") == s


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("flip_rate", 1.5, "transforms.flip_rate must be a finite number in [0, 1], got 1.5"),
        ("paint_rate", -0.1, "transforms.paint_rate must be a finite number in [0, 1], got -0.1"),
        (
            "inpaint_rate",
            True,
            "transforms.inpaint_rate must be a finite number in [0, 1], got True",
        ),
        ("local_shuffle_blocks", 0, "transforms.local_shuffle_blocks must be an integer >= 1"),
        ("bezier_points", 1, "transforms.bezier_points must be an integer >= 2, got 1"),
        ("paint_margin", -1, "transforms.paint_margin must be an integer >= 0, got -1"),
        (
            "inpaint_max_holes",
            64,
            "transforms.inpaint_max_holes must be an integer in [1, 63], got 64",
        ),
        (
            "outpaint_max_windows",
            99,
            "transforms.outpaint_max_windows must be an integer in [1, 63], got 99",
        ),
        ("enabled", ("flip", "blur"), "unknown transform 'blur'; allowed: flip, local_shuffle"),
        ("enabled", ("flip", "flip"), "transforms.enabled lists a transform twice"),
        ("enabled", "flip", "transforms.enabled must be a list of names"),
    ],
)
def test_bad_settings_name_key_allowed_values_and_value(
    key: str, value: object, expected: str
) -> None:
    with pytest.raises(
        ConfigError,
        match=expected.replace("[", r"\[")
        .replace("]", r"\]")
        .replace("(", r"\(")
        .replace(")", r"\)"),
    ):
        TransformSettings(**{key: value})


def test_transform_validates_its_argument() -> None:
    with pytest.raises(ConfigError, match="expected TransformSettings, got dict"):
        GenesisTransform({"flip_rate": 0.4})  # type: ignore[arg-type]
    broken = TransformSettings()
    object.__setattr__(broken, "nonlinear_rate", 2.0)  # bypass the frozen dataclass
    with pytest.raises(ConfigError, match="nonlinear_rate"):
        GenesisTransform(broken)


@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_keep_flip_and_switch_on_one_transform(variant: str) -> None:
    base = TransformSettings(nonlinear_rate=0.7)
    s = settings_for_variant(variant, base)
    assert "flip" in s.enabled and s.nonlinear_rate == 0.7
    if variant == "all":
        assert s.enabled == TRANSFORMS
    else:
        assert s.enabled == ("flip", variant)
    assert dataclasses.replace(s, enabled=base.enabled) == base


def test_unknown_variant() -> None:
    with pytest.raises(ConfigError, match=r"variant must be one of \['all', 'nonlinear'"):
        settings_for_variant("rubik")


def test_only_the_variant_transform_is_applied() -> None:
    generator = torch.Generator().manual_seed(0)
    for variant in VARIANTS[1:]:
        applied = GenesisTransform(settings_for_variant(variant)).decide(2000, generator)
        for name, mask in applied.items():
            assert bool(mask.any()) == (name in (variant, "flip")), (variant, name)
    # Painting alone: every painted sample gets the enabled kind of painting.
    applied = GenesisTransform(settings_for_variant("inpainting")).decide(2000, generator)
    assert abs(applied["inpainting"].float().mean().item() - 0.9) < 0.03
