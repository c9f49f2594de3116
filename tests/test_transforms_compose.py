"""GenesisTransform: order, rates over 10,000 samples, replay, identity, devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genesis.transforms import (
    DISTORTIONS,
    GenesisTransform,
    TransformSettings,
    apply_flip,
    apply_inpaint,
    apply_local_shuffle,
    apply_nonlinear,
    apply_outpaint,
)

SHAPE = (20, 20, 14)  # the smallest cube every transformation fits (out-painting needs 14)


def cubes(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 1, *SHAPE), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_input_untouched_and_seeded() -> None:
    transform = GenesisTransform(TransformSettings())
    x = cubes()
    before = x.clone()
    inputs, targets = transform(x, torch.Generator().manual_seed(1))
    again = transform(x, torch.Generator().manual_seed(1))
    other = transform(x, torch.Generator().manual_seed(2))
    assert inputs.shape == targets.shape == x.shape and inputs.dtype == x.dtype
    assert torch.equal(x, before)
    assert torch.equal(inputs, again[0]) and torch.equal(targets, again[1])
    assert not torch.equal(inputs, other[0])


def test_apply_replays_the_ops_in_order() -> None:
    """flip both, then shuffle, non-linear and painting on the input only."""
    transform = GenesisTransform(TransformSettings(local_shuffle_blocks=300))
    x = cubes(8, seed=3)
    params = transform.sample(x.shape, torch.Generator().manual_seed(4))
    inputs, targets = transform.apply(x, params)
    expected_target = apply_flip(x, params.flip)
    expected = apply_outpaint(
        apply_inpaint(
            apply_nonlinear(
                apply_local_shuffle(expected_target, params.local_shuffle), params.nonlinear
            ),
            params.inpainting,
        ),
        params.outpainting,
    )
    assert torch.equal(targets, expected_target) and torch.equal(inputs, expected)
    assert torch.equal(transform(x, torch.Generator().manual_seed(4))[0], inputs)


def test_zero_rates_are_the_identity() -> None:
    settings = TransformSettings(flip_rate=0, local_shuffle_rate=0, nonlinear_rate=0, paint_rate=0)
    x = cubes()
    inputs, targets = GenesisTransform(settings)(x, torch.Generator().manual_seed(5))
    assert torch.equal(inputs, x) and torch.equal(targets, x)
    assert inputs.data_ptr() != x.data_ptr() and inputs.data_ptr() != targets.data_ptr()


def test_nothing_enabled_is_the_identity() -> None:
    x = cubes()
    inputs, targets = GenesisTransform(TransformSettings(enabled=()))(
        x, torch.Generator().manual_seed(6)
    )
    assert torch.equal(inputs, x) and torch.equal(targets, x)


def test_undistorted_samples_have_input_equal_to_target() -> None:
    transform = GenesisTransform(
        TransformSettings(local_shuffle_rate=0.3, nonlinear_rate=0.3, paint_rate=0.3)
    )
    x = cubes(24, seed=7)
    params = transform.sample(x.shape, torch.Generator().manual_seed(8))
    inputs, targets = transform.apply(x, params)
    same = (inputs == targets).view(24, -1).all(dim=1)
    assert (~params.distorted).any() and torch.equal(same, ~params.distorted)


def test_rates_over_10000_samples_are_within_4_sigma() -> None:
    n = 10_000
    settings = TransformSettings()
    applied = GenesisTransform(settings).decide(n, torch.Generator().manual_seed(9))
    painted = settings.paint_rate
    expected = {
        "flip": settings.flip_rate,
        "local_shuffle": settings.local_shuffle_rate,
        "nonlinear": settings.nonlinear_rate,
        "inpainting": painted * settings.inpaint_rate,
        "outpainting": painted * (1 - settings.inpaint_rate),
    }
    for name, rate in expected.items():
        share = applied[name].float().mean().item()
        assert abs(share - rate) <= 4 * np.sqrt(rate * (1 - rate) / n), (name, share)
    assert not (applied["inpainting"] & applied["outpainting"]).any()
    undistorted = 1 - torch.stack([applied[d] for d in DISTORTIONS]).any(dim=0).float()
    rate = 0.5 * 0.1 * 0.1  # the paper's "about 0.5%" pure autoencoding
    assert abs(undistorted.mean().item() - rate) <= 4 * np.sqrt(rate * (1 - rate) / n)


def test_applied_share_on_real_cubes() -> None:
    """The apply masks really drive the ops: changed samples follow the masks."""
    transform = GenesisTransform(TransformSettings(local_shuffle_blocks=200))
    x = cubes(64, seed=10)
    params = transform.sample(x.shape, torch.Generator().manual_seed(11))
    shuffled = apply_local_shuffle(x, params.local_shuffle)
    changed = (shuffled != x).view(64, -1).any(dim=1)
    assert torch.equal(changed, params.applied["local_shuffle"])


def test_half_precision_and_non_contiguous_input() -> None:
    x = cubes(4, seed=12).half().transpose(2, 3)  # (4, 1, 20, 20, 14) non-contiguous
    inputs, _ = GenesisTransform(TransformSettings())(x, torch.Generator().manual_seed(13))
    assert inputs.dtype == torch.float16 and inputs.shape == x.shape
    assert ((inputs >= 0) & (inputs <= 1)).all()
    noise = GenesisTransform(TransformSettings(enabled=("outpainting",), paint_rate=1))(
        torch.full((64, 1, *SHAPE), 2.0, dtype=torch.float16), torch.Generator()
    )[0]
    assert noise[noise < 2].max() < 1  # float16 noise stays below 1 too


def test_bfloat16_takes_the_torch_paths_on_cpu() -> None:
    """NumPy has no bfloat16: such cubes skip the NumPy fast paths and give the float32
    result, rounded."""
    x = cubes(6, seed=14)
    transform = GenesisTransform(TransformSettings())
    params = transform.sample(x.shape, torch.Generator().manual_seed(15))
    inputs, targets = transform.apply(x.bfloat16(), params)
    expected_inputs, expected_targets = transform.apply(x.bfloat16().float(), params)
    assert inputs.dtype == targets.dtype == torch.bfloat16
    assert torch.equal(targets, expected_targets.bfloat16())
    assert torch.allclose(inputs.float(), expected_inputs, atol=1e-2, rtol=0)


def test_bad_cubes() -> None:
    transform = GenesisTransform(TransformSettings())
    with pytest.raises(ValueError, match=r"cubes must have shape \(N, 1, X, Y, Z\)"):
        transform(torch.zeros((2, 20, 20, 14)), torch.Generator())
    with pytest.raises(ValueError, match="cubes must be a floating tensor"):
        transform(torch.zeros((2, 1, 20, 20, 14), dtype=torch.long), torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_cubes_with_cpu_or_cuda_generator() -> None:
    transform = GenesisTransform(TransformSettings(local_shuffle_blocks=500))
    x = cubes(4, seed=14)
    cpu = transform(x, torch.Generator().manual_seed(15))
    gpu = transform(x.cuda(), torch.Generator().manual_seed(15))
    assert gpu[0].is_cuda and torch.allclose(gpu[0].cpu(), cpu[0], atol=1e-6)
    assert torch.equal(gpu[1].cpu(), cpu[1])
    on_device = transform(x.cuda(), torch.Generator(device="cuda").manual_seed(15))
    assert on_device[0].is_cuda and on_device[0].shape == x.shape


def test_in_place_steps_tell_autograd_they_wrote() -> None:
    """The CPU steps write through NumPy views, which torch cannot see: they must bump the
    tensor's version, so a graph that saved the cubes fails loudly instead of giving a
    silently wrong gradient, as with any torch in-place op."""
    from genesis.transforms import (
        ShuffleParams,
        apply_inpaint_,
        apply_local_shuffle_,
        apply_nonlinear_,
        sample_inpaint,
        sample_nonlinear,
    )

    x, generator = cubes(4, seed=16), torch.Generator().manual_seed(17)
    steps = [
        (
            apply_local_shuffle_,
            ShuffleParams(
                samples=torch.arange(4),
                sizes=torch.tensor([2, 2, 1]).expand(4, 3, 3),
                corners=torch.zeros((4, 3, 3), dtype=torch.long),
                seed=1,
            ),
        ),
        (apply_nonlinear_, sample_nonlinear(4, generator)),
        (apply_inpaint_, sample_inpaint(4, SHAPE, generator)),
    ]
    for step, params in steps:
        work = x.clone()
        weight = torch.ones((), requires_grad=True)
        saved = (weight * work).sum()  # keeps ``work`` for the backward pass
        step(work, params)
        assert not torch.equal(work, x), step.__name__
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            saved.backward()


def test_repeated_samples_and_wrong_flip_shapes_are_refused() -> None:
    from genesis.transforms import (
        FlipParams,
        NonlinearParams,
        ShuffleParams,
        apply_local_shuffle_,
        apply_nonlinear_,
    )

    x = cubes(3, seed=19)
    twice = ShuffleParams(
        samples=torch.tensor([1, 1]),
        sizes=torch.ones((2, 4, 3), dtype=torch.long),
        corners=torch.zeros((2, 4, 3), dtype=torch.long),
        seed=2,
    )
    with pytest.raises(ValueError, match="must be distinct"):
        apply_local_shuffle_(x.clone(), twice)
    with pytest.raises(ValueError, match="must be distinct"):
        apply_nonlinear_(
            x.clone(),
            NonlinearParams(
                samples=torch.tensor([0, 0]),
                controls=torch.full((2, 2, 2), 0.5),
                invert=torch.zeros(2, dtype=torch.bool),
            ),
        )
    with pytest.raises(ValueError, match=r"flip axes must have shape \(3, 3\)"):
        apply_flip(x, FlipParams(axes=torch.zeros((2, 3), dtype=torch.bool)))
