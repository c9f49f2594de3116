"""The four Models Genesis transformations, batched in torch (facts §2).

``GenesisTransform(settings)(cubes, generator) -> (inputs, targets)`` is what pretraining
uses; the individual ops (``flip``, ``local_pixel_shuffle``, ``nonlinear``, ``inpaint``,
``outpaint``) take per-sample ``apply`` masks so a figure can show each one alone. Each op
also splits into ``sample_*`` (draw parameters) and ``apply_*`` (pure application); the
distortions also have ``apply_*_``, which overwrite the cubes they are given (no copy).

The functions ``flip`` and ``nonlinear`` shadow their modules as attributes of this package:
import from the modules with ``from genesis.transforms.nonlinear import lookup``, not
``import genesis.transforms.nonlinear as m``.
"""

from genesis.transforms.compose import DISTORTIONS, GenesisParams, GenesisTransform
from genesis.transforms.flip import FlipParams, apply_flip, flip, sample_flip
from genesis.transforms.local_shuffle import (
    ShuffleParams,
    apply_local_shuffle,
    apply_local_shuffle_,
    local_pixel_shuffle,
    sample_local_shuffle,
)
from genesis.transforms.nonlinear import (
    NonlinearParams,
    apply_nonlinear,
    apply_nonlinear_,
    bezier_curves,
    nonlinear,
    sample_nonlinear,
)
from genesis.transforms.painting import (
    PaintParams,
    apply_inpaint,
    apply_inpaint_,
    apply_outpaint,
    apply_outpaint_,
    box_mask,
    inpaint,
    outpaint,
    sample_inpaint,
    sample_outpaint,
)
from genesis.transforms.settings import (
    TRANSFORMS,
    VARIANTS,
    TransformSettings,
    settings_for_variant,
)

__all__ = [
    "DISTORTIONS",
    "TRANSFORMS",
    "VARIANTS",
    "FlipParams",
    "GenesisParams",
    "GenesisTransform",
    "NonlinearParams",
    "PaintParams",
    "ShuffleParams",
    "TransformSettings",
    "apply_flip",
    "apply_inpaint",
    "apply_inpaint_",
    "apply_local_shuffle",
    "apply_local_shuffle_",
    "apply_nonlinear",
    "apply_nonlinear_",
    "apply_outpaint",
    "apply_outpaint_",
    "bezier_curves",
    "box_mask",
    "flip",
    "inpaint",
    "local_pixel_shuffle",
    "nonlinear",
    "outpaint",
    "sample_flip",
    "sample_inpaint",
    "sample_local_shuffle",
    "sample_nonlinear",
    "sample_outpaint",
    "settings_for_variant",
]
