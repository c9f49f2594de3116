"""world_to_voxel / voxel_to_world honour spacing, origin and the direction matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from genesis.io import Geometry, load_volume, save_metaimage, voxel_to_world, world_to_voxel

FLIPPED = np.diag([-1.0, -1.0, 1.0])


@pytest.mark.parametrize("direction", [np.eye(3), FLIPPED])
def test_round_trip(direction: np.ndarray) -> None:
    geometry = Geometry((0.7, 0.7, 2.5), (-180.0, -190.0, -350.0), direction)
    index = np.random.default_rng(0).uniform(0, 100, size=(50, 3))
    world = voxel_to_world(index, geometry)
    assert world.shape == (50, 3)
    np.testing.assert_allclose(world_to_voxel(world, geometry), index, atol=1e-9)


def test_flipped_direction_changes_the_mapping() -> None:
    geometry = Geometry((2.0, 2.0, 3.0), (100.0, 50.0, -300.0), FLIPPED)
    world = voxel_to_world(np.array([10.0, 20.0, 5.0]), geometry)
    # x and y run towards negative world coordinates; z does not.
    np.testing.assert_allclose(world, [100.0 - 20.0, 50.0 - 40.0, -300.0 + 15.0])
    ignored = (world - np.array(geometry.origin)) / np.array(geometry.spacing)
    assert not np.allclose(ignored, [10.0, 20.0, 5.0])


def test_agrees_with_simpleitk(tmp_path: Path) -> None:
    angle = np.deg2rad(20)
    direction = (
        np.array(
            [[np.cos(angle), 0, np.sin(angle)], [0, -1, 0], [-np.sin(angle), 0, np.cos(angle)]]
        )
        @ FLIPPED
    )
    path = tmp_path / "scan.mhd"
    save_metaimage(
        path,
        np.zeros((8, 9, 10), np.int16),
        spacing=(0.6, 0.9, 2.0),
        origin=(-10.0, 20.0, -300.0),
        direction=direction,
    )
    image = sitk.ReadImage(str(path))
    volume = load_volume(path)
    index = np.array([[1.5, 2.0, 3.25], [7.0, 0.0, 9.0]])
    expected = [image.TransformContinuousIndexToPhysicalPoint(tuple(i)) for i in index]
    np.testing.assert_allclose(voxel_to_world(index, volume), expected, atol=1e-6)
    np.testing.assert_allclose(world_to_voxel(np.array(expected), volume), index, atol=1e-6)
    np.testing.assert_allclose(volume.affine[:3, 3], volume.origin)


def test_single_point_keeps_its_shape() -> None:
    geometry = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    assert world_to_voxel(np.array([1.0, 2.0, 3.0]), geometry).shape == (3,)
