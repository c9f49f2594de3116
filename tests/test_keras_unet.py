"""The Keras release's U-Net in torch and its HDF5 weights, checked against tf-keras.

The fixture (``tests/fixtures/keras``) was written by ``tools/make_keras_fixture.py`` with
tf-keras 2.21: a width-2 model with random non-trivial weights, saved with Keras's legacy
``save_weights(.h5)``, and Keras's own output on a fixed input. TensorFlow is never
imported here.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from genesis.errors import ConfigError, InputError, WeightsError
from genesis.models import UNet3D
from genesis.models.keras_h5 import (
    KERAS_FORMAT,
    load_keras_weights,
    read_keras_h5,
    save_keras_weights,
)
from genesis.models.keras_unet import (
    ENCODER_PREFIXES,
    HEAD,
    KerasClassifier,
    KerasUNet3D,
)
from genesis.models.shapes import InputShapeError

FIXTURES = Path(__file__).parent / "fixtures" / "keras"
H5 = FIXTURES / "keras_unet_w2.h5"
NPZ = FIXTURES / "keras_unet_w2.npz"
WIDTH = 2
# What tf-keras 2.21's model.summary() reports for the release's build at width 32
# (tools/make_keras_fixture.py --width 32): total 16,324,929 parameters, of which
# 16,320,257 trainable and 4,672 non-trainable (the batch norms' moving mean and variance).
KERAS_W32_TRAINABLE = 16_320_257
KERAS_W32_NON_TRAINABLE = 4_672
# Torch float32 against Keras float32: the summation order differs (measured 4e-6).
ATOL = 2e-5


def keras_input() -> torch.Tensor:
    return torch.from_numpy(np.load(NPZ)["input"].astype(np.float32))


def keras_output() -> np.ndarray:
    return np.load(NPZ)["output"]


def loaded_unet(**kwargs: object) -> KerasUNet3D:
    model = KerasUNet3D(width=WIDTH, **kwargs).eval()
    load_keras_weights(model, H5)
    return model


def raw_names(path: Path) -> list[tuple[str, list[str]]]:
    """Each layer and its weight names as stored, decoded (tf-keras writes str, we bytes)."""

    def text(values: np.ndarray) -> list[str]:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in values]

    with h5py.File(path, "r") as handle:
        return [
            (name, text(handle[name].attrs["weight_names"]))
            for name in text(handle.attrs["layer_names"])
        ]


def assert_one_line(error: pytest.ExceptionInfo[BaseException], *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


def test_fixture_output_matches_keras() -> None:
    model = KerasUNet3D(width=WIDTH).eval()
    report = load_keras_weights(model, H5)
    assert report.format == KERAS_FORMAT and report.path == H5
    assert len(report.loaded) == 14 * 6 + 2 and report.skipped == ()
    assert all(key.endswith("num_batches_tracked") for key in report.kept)
    with torch.no_grad():
        out = model(keras_input()).numpy()
    np.testing.assert_allclose(out, keras_output(), rtol=0, atol=ATOL)
    # The moving statistics matter: batch statistics give a clearly different output.
    batch_stats = loaded_unet(batch_stats=True)
    with torch.no_grad():
        assert np.abs(batch_stats(keras_input()).numpy() - keras_output()).max() > 0.1


def test_logits_without_final_activation() -> None:
    logits_model = loaded_unet(final_activation=None)
    with torch.no_grad():
        logits = logits_model(keras_input())
    np.testing.assert_allclose(torch.sigmoid(logits).numpy(), keras_output(), atol=ATOL)


def test_read_keras_h5_lists_every_layer() -> None:
    layers = read_keras_h5(H5)
    assert len(layers) == 54  # input, 14 x (conv, bn, relu), 3 pools, 3 x (up, concat), 2
    assert list(layers)[:4] == ["input_1", "depth_0_conv", "depth_0_bn", "depth_0_relu"]
    assert layers["depth_0_relu"] == {} and layers["activation"] == {}
    assert list(layers["depth_0_bn"]) == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert layers["depth_0_conv"]["kernel"].shape == (3, 3, 3, 1, WIDTH)
    assert layers["conv3d"]["kernel"].shape == (1, 1, 1, 2 * WIDTH, 1)


def test_full_model_save_layout_is_read(tmp_path: Path) -> None:
    """``model.save`` puts the same layout under ``model_weights``."""
    path = tmp_path / "full.h5"
    with h5py.File(H5, "r") as source, h5py.File(path, "w") as target:
        group = target.create_group("model_weights")
        for key, value in source.attrs.items():
            group.attrs[key] = value
        for name in source:
            source.copy(source[name], group, name=name)
    model = KerasUNet3D(width=WIDTH)
    load_keras_weights(model, path)
    reference = loaded_unet()
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_save_round_trip_is_exact_and_keeps_keras_names(tmp_path: Path) -> None:
    source = loaded_unet()
    path = save_keras_weights(source, tmp_path / "saved.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved.h5"]  # no temporary left
    assert raw_names(path) == raw_names(H5)
    with h5py.File(path, "r") as handle:
        assert handle.attrs["backend"] == b"tensorflow"
        assert handle.attrs["layer_names"].dtype.kind == "S"  # bytes: Keras 2.2 decodes them
        assert "depth_0_conv/depth_0_conv/kernel:0" in handle
    original, saved = read_keras_h5(H5), read_keras_h5(path)
    for layer, weights in original.items():
        for name, array in weights.items():
            assert saved[layer][name].dtype == np.float32
            np.testing.assert_array_equal(saved[layer][name], array, err_msg=f"{layer}/{name}")
    target = KerasUNet3D(width=WIDTH)
    load_keras_weights(target, path)
    for key, value in source.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(target.state_dict()[key], value), key


def test_parameter_names_map_to_keras_layers() -> None:
    model = KerasUNet3D(width=WIDTH)
    modules = {key.rsplit(".", 1)[0] for key in model.state_dict()}
    expected = {f"blocks.{k}.{part}" for k in range(14) for part in ("conv", "bn")}
    assert modules == expected | {HEAD}
    assert tuple(f"blocks.{k}." for k in range(8)) == ENCODER_PREFIXES
    bn = model.blocks[0].bn
    assert bn.eps == pytest.approx(1e-3) and bn.momentum == pytest.approx(0.01)


def test_parameter_count_matches_keras_at_width_32() -> None:
    with torch.device("meta"):
        model = KerasUNet3D()
    trainable = sum(p.numel() for p in model.parameters())
    moving = sum(b.numel() for k, b in model.named_buffers() if "running" in k)
    assert trainable == KERAS_W32_TRAINABLE
    assert moving == KERAS_W32_NON_TRAINABLE


def test_public_surface() -> None:
    model = KerasUNet3D(width=WIDTH)
    assert model.config == {
        "in_channels": 1,
        "out_channels": 1,
        "width": WIDTH,
        "batch_stats": False,
        "final_activation": "sigmoid",
    }
    assert model.bottleneck_channels == 16 * WIDTH
    x = torch.rand(2, 1, 32, 32, 16)
    skips, bottleneck = model.encoder_features(x)
    assert [tuple(s.shape) for s in skips] == [
        (2, 4, 32, 32, 16),
        (2, 8, 16, 16, 8),
        (2, 16, 8, 8, 4),
    ]
    assert tuple(model.encode(x).shape) == tuple(bottleneck.shape) == (2, 32, 4, 4, 2)
    with pytest.raises(InputShapeError, match="offending: z=12"):
        model(torch.rand(1, 1, 32, 32, 12))
    with pytest.raises(InputShapeError, match="input channel"):
        model(torch.rand(1, 2, 32, 32, 16))
    with pytest.raises(ConfigError, match="final_activation"):
        KerasUNet3D(final_activation="softmax")
    with pytest.raises(ConfigError, match="width"):
        KerasUNet3D(width=0)


def test_encoder_only_into_classifier(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    classifier = KerasClassifier(n_classes=3, width=WIDTH, hidden=8).eval()
    head_before = {k: v.clone() for k, v in classifier.state_dict().items() if "fc" in k}
    with caplog.at_level(logging.INFO, logger="genesis.models.keras_h5"):
        report = load_keras_weights(classifier, H5, encoder_only=True)
    assert "loaded 48 tensors" in caplog.text
    assert report.encoder_only and len(report.loaded) == 8 * 6
    assert all(key.startswith(ENCODER_PREFIXES) for key in report.loaded)
    assert len(report.skipped) == 6 * 6 + 2  # the decoder's blocks and the head
    assert "conv3d/kernel" in report.skipped
    assert {k for k in report.kept if "fc" in k} == set(head_before)
    for key, value in head_before.items():
        assert torch.equal(classifier.state_dict()[key], value)
    x = keras_input()
    with torch.no_grad():
        assert torch.equal(classifier.encode(x), loaded_unet().encode(x))
        assert tuple(classifier(x).shape) == (2, 3)
    assert classifier.config["hidden"] == 8


def test_classifier_needs_encoder_only() -> None:
    with pytest.raises(WeightsError) as error:
        load_keras_weights(KerasClassifier(width=WIDTH), H5)
    assert_one_line(error, str(H5), "fc1 and fc2", "encoder_only=True")


def test_torch_release_model_is_refused() -> None:
    with pytest.raises(WeightsError) as error:
        load_keras_weights(UNet3D(width=WIDTH), H5)
    assert_one_line(error, str(H5), "UNet3D")


def test_wider_model_names_the_first_layer(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as error:
        load_keras_weights(KerasUNet3D(width=4), H5)
    assert_one_line(
        error,
        str(H5),
        "layer depth_0_conv (blocks.0.conv)",
        "(3, 3, 3, 1, 2) in the file but (3, 3, 3, 1, 4)",
        "set width",
    )
    with pytest.raises(WeightsError) as error:
        load_keras_weights(KerasUNet3D(width=WIDTH, in_channels=2), H5)
    assert_one_line(error, "layer depth_0_conv", "(3, 3, 3, 1, 2) in the file")
    with pytest.raises(WeightsError) as error:
        load_keras_weights(KerasUNet3D(width=WIDTH, out_channels=2), H5)
    assert_one_line(error, "layer conv3d (head)", "(1, 1, 1, 4, 1) in the file")


def edited_copy(tmp_path: Path, edit: Callable[[h5py.File], object]) -> Path:
    path = tmp_path / "edited.h5"
    shutil.copy(H5, path)
    with h5py.File(path, "r+") as handle:
        edit(handle)
    return path


def rename_layer(handle: h5py.File, old: str, new: str) -> None:
    handle.move(old, new)
    handle.attrs["layer_names"] = [new if n == old else n for n in handle.attrs["layer_names"]]


def test_renamed_layer_is_named(tmp_path: Path) -> None:
    path = edited_copy(tmp_path, lambda h: rename_layer(h, "depth_3_conv", "my_conv"))
    with pytest.raises(WeightsError) as error:
        load_keras_weights(KerasUNet3D(width=WIDTH), path)
    assert_one_line(
        error,
        str(path),
        "layer depth_3_conv (blocks.3.conv) is missing",
        "layers the model lacks: my_conv",
    )


def test_keras_22_head_name_is_recognised(tmp_path: Path) -> None:
    path = edited_copy(tmp_path, lambda h: rename_layer(h, "conv3d", "conv3d_1"))
    model = KerasUNet3D(width=WIDTH).eval()
    load_keras_weights(model, path)
    with torch.no_grad():
        np.testing.assert_allclose(model(keras_input()).numpy(), keras_output(), atol=ATOL)


def test_unexpected_layer_is_named(tmp_path: Path) -> None:
    def add_dense(handle: h5py.File) -> None:
        group = handle.create_group("dense")
        group.create_dataset("dense/kernel:0", data=np.zeros((4, 4), np.float32))
        group.attrs["weight_names"] = [b"dense/kernel:0"]
        handle.attrs["layer_names"] = [*handle.attrs["layer_names"], "dense"]

    path = edited_copy(tmp_path, add_dense)
    with pytest.raises(WeightsError) as error:
        load_keras_weights(KerasUNet3D(width=WIDTH), path)
    assert_one_line(error, str(path), "unexpected layer dense")
    load_keras_weights(KerasClassifier(width=WIDTH), path, encoder_only=True)


def test_missing_weight_is_named(tmp_path: Path) -> None:
    def drop(handle: h5py.File) -> None:
        group = handle["depth_9_bn"]
        del group["depth_9_bn/moving_variance:0"]
        group.attrs["weight_names"] = [n for n in group.attrs["weight_names"] if "var" not in n]

    path = edited_copy(tmp_path, drop)
    with pytest.raises(WeightsError) as error:
        load_keras_weights(KerasUNet3D(width=WIDTH), path)
    assert_one_line(error, str(path), "layer depth_9_bn (blocks.9.bn) lacks moving_variance")


def test_not_hdf5_and_truncated_files(tmp_path: Path) -> None:
    text = tmp_path / "weights.h5"
    text.write_text("not HDF5\n", encoding="utf-8")
    with pytest.raises(InputError) as error:
        load_keras_weights(KerasUNet3D(width=WIDTH), text)
    assert_one_line(
        error, str(text), "not a readable Keras HDF5 weights file", "signature not found"
    )
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(H5.read_bytes()[: H5.stat().st_size // 2])
    with pytest.raises(InputError) as error:
        load_keras_weights(KerasUNet3D(width=WIDTH), truncated)
    assert_one_line(error, str(truncated), "truncated file")
    with pytest.raises(InputError, match="not found"):
        read_keras_h5(tmp_path / "absent.h5")


def test_corrupt_layer_is_named(tmp_path: Path) -> None:
    with h5py.File(H5, "r") as handle:
        address = h5py.h5o.get_info(handle["depth_5_conv"].id).addr
    data = bytearray(H5.read_bytes())
    data[address : address + 64] = b"\xff" * 64  # the layer group's object header
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(InputError) as error:
        load_keras_weights(KerasUNet3D(width=WIDTH), corrupt)
    assert_one_line(error, str(corrupt), "(reading layer depth_5_conv)")


def test_not_keras_layout(tmp_path: Path) -> None:
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=np.zeros(3))
    with pytest.raises(InputError) as error:
        read_keras_h5(path)
    assert_one_line(error, str(path), "no 'layer_names' attribute")


def test_save_refuses_other_models(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="KerasUNet3D"):
        save_keras_weights(KerasClassifier(width=WIDTH), tmp_path / "x.h5")
    assert not list(tmp_path.iterdir())


def test_wrapped_model_loads() -> None:
    wrapped = nn.DataParallel(KerasUNet3D(width=WIDTH))
    report = load_keras_weights(wrapped, H5)
    assert len(report.loaded) == 86
