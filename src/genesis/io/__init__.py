"""Image readers and writers, and index <-> world geometry. Knows no models."""

from genesis.io.geometry import Geometry, voxel_to_world, world_to_voxel
from genesis.io.metaimage import save_metaimage
from genesis.io.volume import Volume, load_volume, save_nifti

__all__ = [
    "Geometry",
    "Volume",
    "load_volume",
    "save_metaimage",
    "save_nifti",
    "voxel_to_world",
    "world_to_voxel",
]
