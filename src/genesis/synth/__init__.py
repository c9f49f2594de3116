"""Deterministic phantoms in the real on-disk layouts (LUNA16, MSD Task03, MSD Task01).

They let the whole workflow run, and be tested, without downloading the datasets: every
later stage reads them with the same code as the real data.
"""

from genesis.synth.brain import BrainSettings, synthesize_brain
from genesis.synth.liver import LiverSettings, synthesize_liver
from genesis.synth.luna16 import Luna16Settings, synthesize_luna16

#: ``genesis synth <name>``: the writer for each dataset.
SYNTHESIZERS = {
    "luna16": synthesize_luna16,
    "liver": synthesize_liver,
    "brain": synthesize_brain,
}

__all__ = [
    "SYNTHESIZERS",
    "BrainSettings",
    "LiverSettings",
    "Luna16Settings",
    "synthesize_brain",
    "synthesize_liver",
    "synthesize_luna16",
]
