"""The 3D U-Net and classifier: release names and shapes, sizes, batch-norm modes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from genesis.errors import ConfigError, InputError
from genesis.models import GenesisClassifier, InputShapeError, UNet3D, check_input_shape

# The released checkpoint's blocks and their conv1.weight shapes (facts §3), written out
# here rather than derived from the model, so a wrong model cannot pass.
RELEASE_BLOCKS: dict[str, tuple[int, ...]] = {
    "down_tr64.ops.0": (32, 1, 3, 3, 3),
    "down_tr64.ops.1": (64, 32, 3, 3, 3),
    "down_tr128.ops.0": (64, 64, 3, 3, 3),
    "down_tr128.ops.1": (128, 64, 3, 3, 3),
    "down_tr256.ops.0": (128, 128, 3, 3, 3),
    "down_tr256.ops.1": (256, 128, 3, 3, 3),
    "down_tr512.ops.0": (256, 256, 3, 3, 3),
    "down_tr512.ops.1": (512, 256, 3, 3, 3),
    "up_tr256.ops.0": (256, 768, 3, 3, 3),
    "up_tr256.ops.1": (256, 256, 3, 3, 3),
    "up_tr128.ops.0": (128, 384, 3, 3, 3),
    "up_tr128.ops.1": (128, 128, 3, 3, 3),
    "up_tr64.ops.0": (64, 192, 3, 3, 3),
    "up_tr64.ops.1": (64, 64, 3, 3, 3),
}
RELEASE_OTHERS: dict[str, tuple[int, ...]] = {
    "up_tr256.up_conv.weight": (512, 512, 2, 2, 2),
    "up_tr256.up_conv.bias": (512,),
    "up_tr128.up_conv.weight": (256, 256, 2, 2, 2),
    "up_tr128.up_conv.bias": (256,),
    "up_tr64.up_conv.weight": (128, 128, 2, 2, 2),
    "up_tr64.up_conv.bias": (128,),
    "out_tr.final_conv.weight": (1, 64, 1, 1, 1),
    "out_tr.final_conv.bias": (1,),
}
RELEASE_PARAMETERS = 19_073_665


def release_table() -> dict[str, tuple[int, ...]]:
    table = {}
    for block, weight in RELEASE_BLOCKS.items():
        out = (weight[0],)
        table |= {
            f"{block}.conv1.weight": weight,
            f"{block}.conv1.bias": out,
            f"{block}.bn1.weight": out,
            f"{block}.bn1.bias": out,
            f"{block}.bn1.running_mean": out,
            f"{block}.bn1.running_var": out,
            f"{block}.bn1.num_batches_tracked": (),
        }
    return table | RELEASE_OTHERS


def shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("batch_stats", [False, True])
def test_width_32_has_exactly_the_release_names_and_shapes(batch_stats: bool) -> None:
    with torch.device("meta"):
        model = UNet3D(batch_stats=batch_stats)
    assert len(release_table()) == 106
    assert shapes(model) == release_table()
    assert sum(p.numel() for p in model.parameters()) == RELEASE_PARAMETERS


def test_width_scales_channels_and_keeps_names() -> None:
    model = UNet3D(width=8)
    got = shapes(model)
    assert got.keys() == release_table().keys()
    assert got["down_tr64.ops.0.conv1.weight"] == (8, 1, 3, 3, 3)
    assert got["up_tr256.ops.0.conv1.weight"] == (64, 192, 3, 3, 3)
    assert got["out_tr.final_conv.weight"] == (1, 16, 1, 1, 1)


def test_forward_shapes_at_width_8() -> None:
    torch.manual_seed(0)
    model = UNet3D(width=8).eval()
    out = model(torch.rand(2, 1, 32, 32, 16))
    assert out.shape == (2, 1, 32, 32, 16)
    assert out.min() >= 0 and out.max() <= 1
    logits = UNet3D(in_channels=2, out_channels=3, width=2, final_activation=None).eval()
    out = logits(torch.rand(1, 2, 16, 32, 8))
    assert out.shape == (1, 3, 16, 32, 8)
    assert out.min() < 0 or out.max() > 1  # no sigmoid


def test_bottleneck_shape() -> None:
    with torch.device("meta"):
        released = UNet3D()
        assert released.encode(torch.empty(2, 1, 64, 64, 32)).shape == (2, 512, 8, 8, 4)
    small = UNet3D(width=4).eval()
    assert small.encode(torch.rand(1, 1, 64, 64, 32)).shape == (1, 64, 8, 8, 4)


def _calls(model: nn.Module, run: Callable[[], object]) -> set[str]:
    """Names of the top-level modules that ran while calling ``run``."""
    called: set[str] = set()
    handles = [
        child.register_forward_hook(lambda *_, name=name: called.add(name))
        for name, child in model.named_children()
    ]
    run()
    for handle in handles:
        handle.remove()
    return called


def test_encode_does_not_run_the_decoder() -> None:
    model = UNet3D(width=2).eval()
    x = torch.rand(1, 1, 16, 16, 8)
    assert _calls(model, lambda: model.encode(x)) == {
        "down_tr64",
        "down_tr128",
        "down_tr256",
        "down_tr512",
    }
    assert "out_tr" in _calls(model, lambda: model(x))


def test_classifier_is_encoder_plus_head_without_decoder() -> None:
    clf = GenesisClassifier(n_classes=3, width=4, hidden=16).eval()
    names = {name for name, _ in clf.named_modules()}
    assert not any(name.startswith(("up_tr", "out_tr")) for name in names)
    x = torch.rand(2, 1, 32, 32, 16)
    logits = clf(x)
    assert logits.shape == (2, 3)
    assert _calls(clf, lambda: clf(x)) == {
        "down_tr64",
        "down_tr128",
        "down_tr256",
        "down_tr512",
        "fc1",
        "fc2",
    }
    unet_encoder = {k: v for k, v in shapes(UNet3D(width=4)).items() if k.startswith("down")}
    assert {k: v for k, v in shapes(clf).items() if k.startswith("down")} == unet_encoder
    head = {k: v for k, v in shapes(clf).items() if not k.startswith("down")}
    assert head == {
        "fc1.weight": (16, 64),
        "fc1.bias": (16,),
        "fc2.weight": (3, 16),
        "fc2.bias": (3,),
    }


def test_classifier_head_at_release_width() -> None:
    with torch.device("meta"):
        clf = GenesisClassifier()
    assert shapes(clf)["fc1.weight"] == (1024, 512)
    assert shapes(clf)["fc2.weight"] == (1, 1024)


@pytest.mark.parametrize(
    "shape", [(60, 64, 32), (64, 64, 36), (64, 8, 32), (0, 16, 8), (64, 64), (64, 64, 32, 1)]
)
def test_bad_spatial_sizes_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(InputShapeError) as caught:
        check_input_shape(shape)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, InputError)
    assert str(shape) in str(caught.value) or "x".join(map(str, shape)) in str(caught.value)
    assert "16" in str(caught.value) and "8" in str(caught.value)


@pytest.mark.parametrize("shape", [(16, 16, 8), (64, 64, 32), (128, 256, 64), (16, 32, 24)])
def test_good_spatial_sizes_pass(shape: tuple[int, ...]) -> None:
    check_input_shape(shape)


@pytest.mark.parametrize("shape", [(1, 16, 16, 8), (1, 2, 16, 16, 8), (1, 1, 24, 16, 8)])
def test_forward_and_encode_refuse_bad_tensors(shape: tuple[int, ...]) -> None:
    model = UNet3D(width=2)
    for call in (model, model.encode, GenesisClassifier(width=2, hidden=4)):
        with pytest.raises(InputShapeError, match=r"expected|not accepted"):
            call(torch.zeros(shape))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"width": 0},
        {"in_channels": -1},
        {"out_channels": 1.5},
        {"final_activation": "softmax"},
        {"width": True},
    ],
)
def test_bad_constructor_arguments_name_the_parameter(kwargs: dict[str, object]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ConfigError, match=name):
        UNet3D(**kwargs)  # type: ignore[arg-type]


def test_batch_stats_gives_the_same_output_in_train_and_eval() -> None:
    torch.manual_seed(1)
    x = torch.rand(3, 1, 16, 16, 8)
    model = UNet3D(width=4, batch_stats=True)
    train_out = model.train()(x)
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    eval_out = model.eval()(x)
    torch.testing.assert_close(eval_out, train_out, rtol=0, atol=1e-6)
    # Evaluation never changes the buffers; training did update them.
    for key, value in model.state_dict().items():
        if "running" in key:
            assert torch.equal(value, buffers[key])
    assert not torch.equal(buffers["down_tr64.ops.0.bn1.running_mean"], torch.zeros(4))


def test_default_batch_norm_uses_running_statistics_in_eval() -> None:
    torch.manual_seed(1)
    x = torch.rand(3, 1, 16, 16, 8)
    model = UNet3D(width=4)
    train_out = model.train()(x)
    eval_out = model.eval()(x)
    assert (eval_out - train_out).abs().max() > 1e-3
    # Per-sample evaluation: a sample's output does not depend on the rest of the batch.
    torch.testing.assert_close(model(x[:1]), eval_out[:1], rtol=0, atol=1e-6)


def _reference_forward(model: UNet3D, x: Tensor) -> Tensor:
    """An independent functional U-Net from the facts, reading the model's parameters."""
    p = dict(model.named_parameters())

    def block(name: str, h: Tensor) -> Tensor:
        h = F.conv3d(h, p[f"{name}.conv1.weight"], p[f"{name}.conv1.bias"], padding=1)
        h = F.batch_norm(
            h, None, None, p[f"{name}.bn1.weight"], p[f"{name}.bn1.bias"], training=True
        )
        return F.relu(h)

    skips = []
    for depth, level in enumerate(("down_tr64", "down_tr128", "down_tr256", "down_tr512")):
        x = x if depth == 0 else F.max_pool3d(x, 2)
        x = block(f"{level}.ops.1", block(f"{level}.ops.0", x))
        skips.append(x)
    x = skips.pop()
    for level in ("up_tr256", "up_tr128", "up_tr64"):
        up = F.conv_transpose3d(
            x, p[f"{level}.up_conv.weight"], p[f"{level}.up_conv.bias"], stride=2
        )
        x = torch.cat((up, skips.pop()), dim=1)
        x = block(f"{level}.ops.1", block(f"{level}.ops.0", x))
    x = F.conv3d(x, p["out_tr.final_conv.weight"], p["out_tr.final_conv.bias"])
    return torch.sigmoid(x)


def test_forward_matches_an_independent_reference() -> None:
    torch.manual_seed(2)
    model = UNet3D(width=2, batch_stats=True).eval()
    x = torch.rand(2, 1, 16, 16, 8)
    torch.testing.assert_close(model(x), _reference_forward(model, x))
