"""Build the Keras release's 3D U-Net in tf-keras and write a small test fixture.

The Models Genesis Keras release (``Genesis_Chest_CT.h5``) is a different network from
the torch release: depth 4, up-sampling instead of transposed convolutions, Keras batch
norm (epsilon 1e-3), layers named ``depth_{k}_conv/_bn/_relu``. ``genesis.models.keras_unet``
re-implements it in torch and ``genesis.models.keras_h5`` reads its weights with h5py; this
script is the independent reference they are tested against. It builds the architecture
from its description (not from the authors' code), gives it random but non-trivial
weights (conv biases, batch-norm gammas, betas and moving statistics all away from their
initial values, so a mix-up of any of them changes the output), saves it with the legacy
``save_weights(... .h5)`` and records Keras's own inference on a fixed input:

- ``keras_unet_w{width}.h5``: the weights, in Keras 2's legacy HDF5 layout;
- ``keras_unet_w{width}.npz``: ``input`` (2, 1, 32, 32, 16) channels-first, float16 values
  (exact in float32, half the bytes), and Keras's ``output`` (after the sigmoid),
  channels-first float32, computed with ``training=False``. The weights keep the output
  away from 0 and 1, so the sigmoid does not hide differences in the logits.

The release builds the model channels-first (``(1, 64, 64, 32)`` input, batch norm on
axis 1), but TensorFlow's CPU kernels for Conv3D and MaxPool3D only take channels-last.
This script therefore builds it channels-last (batch norm on axis -1, concatenation on
the last axis) and transposes the input and outputs. The weight file is the same either
way: Keras stores a Conv3D kernel as (kd, kh, kw, in, out) whatever the data format, the
batch-norm vectors are per channel, and layer names and order do not depend on it.

It needs TensorFlow, which stays out of the project's lock file, its venv and CI. Run it
in a separate environment::

    python3.11 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 h5py
    /tmp/tfenv/bin/python tools/make_keras_fixture.py               # width 2 fixture
    /tmp/tfenv/bin/python tools/make_keras_fixture.py --width 32 --out-dir /tmp/k32
    /tmp/tfenv/bin/python tools/make_keras_fixture.py --check-load saved.h5

``--check-load`` loads a file written by ``genesis.models.keras_h5.save_keras_weights``
with Keras's own ``load_weights`` and compares Keras's output on the fixture's input with
the fixture's recorded output: the proof that Keras users can read what we write.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import tf_keras as keras  # after the environment settings above

#: Encoder levels; the decoder has one fewer.
DEPTH = 4
#: The fixture's input, channels-first (N, C, X, Y, Z): divisible by 16, 16 and 8.
INPUT_SHAPE = (2, 1, 32, 32, 16)


def conv_block(x, filters: int, index: int):
    """Conv3D 3x3x3 'same' -> BatchNormalization -> ReLU, named ``depth_{index}_*``."""
    x = keras.layers.Conv3D(filters, 3, padding="same", name=f"depth_{index}_conv")(x)
    x = keras.layers.BatchNormalization(axis=-1, name=f"depth_{index}_bn")(x)
    return keras.layers.Activation("relu", name=f"depth_{index}_relu")(x)


def build(width: int, in_channels: int = 1, out_channels: int = 1) -> keras.Model:
    """The Keras release's U-Net at base ``width``, channels-last (see the module docs)."""
    inputs = keras.Input((None, None, None, in_channels))
    x = inputs
    index = 0
    skips = []
    for depth in range(DEPTH):
        x = conv_block(x, width * 2**depth, index)
        x = conv_block(x, 2 * width * 2**depth, index + 1)
        index += 2
        skips.append(x)
        if depth < DEPTH - 1:
            x = keras.layers.MaxPooling3D(2)(x)
    for depth in range(DEPTH - 2, -1, -1):
        skip = skips[depth]
        x = keras.layers.UpSampling3D(2)(x)
        x = keras.layers.Concatenate(axis=-1)([x, skip])
        for _ in range(2):
            x = conv_block(x, skip.shape[-1], index)
            index += 1
    logits = keras.layers.Conv3D(out_channels, 1)(x)  # the automatic name: conv3d
    outputs = keras.layers.Activation("sigmoid")(logits)
    return keras.Model(inputs, outputs)


def randomise(model: keras.Model, calibration: np.ndarray, rng: np.random.Generator) -> None:
    """Non-trivial weights whose activations neither explode nor vanish over 15 convs.

    Each batch norm's moving statistics are the statistics of its actual input on a
    calibration batch (computed after the earlier layers were set), then perturbed, so
    every layer normalises to roughly unit scale but not exactly (a model that used batch
    statistics instead would give a different output).
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv3D):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0.0, 0.05, bias.shape).astype(np.float32)])
        elif isinstance(layer, keras.layers.BatchNormalization):
            probe = keras.Model(model.inputs, layer.input)
            features = probe(calibration, training=False).numpy()
            mean = features.mean(axis=(0, 1, 2, 3))
            var = features.var(axis=(0, 1, 2, 3))
            n = mean.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, n).astype(np.float32),  # gamma
                    rng.normal(0.0, 0.2, n).astype(np.float32),  # beta
                    (mean + 0.2 * np.sqrt(var) * rng.standard_normal(n)).astype(np.float32),
                    (var * rng.uniform(0.5, 2.0, n) + 1e-2).astype(np.float32),
                ]
            )


def to_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def to_first(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


def infer(model: keras.Model, x_first: np.ndarray) -> np.ndarray:
    """Keras's output, channels-first, in inference mode (moving statistics)."""
    return to_first(model(to_last(x_first), training=False).numpy())


def report_counts(model: keras.Model) -> None:
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = model.count_params()
    print(f"parameters: total {total}, trainable {trainable}, non-trainable {total - trainable}")


def make(width: int, out_dir: Path, seed: int) -> None:
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = build(width)
    x = rng.standard_normal(INPUT_SHAPE).astype(np.float16)
    calibration = to_last(rng.standard_normal(INPUT_SHAPE).astype(np.float32))
    randomise(model, calibration, rng)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"keras_unet_w{width}"
    model.save_weights(f"{stem}.h5")
    output = infer(model, x.astype(np.float32))
    np.savez_compressed(f"{stem}.npz", input=x, output=output)
    report_counts(model)
    print(
        f"output: mean {output.mean():.4f}, std {output.std():.4f}, "
        f"range [{output.min():.4f}, {output.max():.4f}]"
    )
    print(
        f"wrote {stem}.h5 ({Path(f'{stem}.h5').stat().st_size} bytes) and "
        f"{stem}.npz ({Path(f'{stem}.npz').stat().st_size} bytes)"
    )


def check_load(path: Path, width: int, npz: Path) -> int:
    model = build(width)
    model.load_weights(str(path))
    data = np.load(npz)
    output = infer(model, data["input"].astype(np.float32))
    diff = np.abs(output - data["output"]).max()
    print(f"Keras load_weights({path}): max |difference| from {npz} = {diff:.3g}")
    return 0 if diff < 1e-5 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=2, help="base filters (release: 32)")
    parser.add_argument("--out-dir", type=Path, default=Path("tests/fixtures/keras"))
    parser.add_argument("--seed", type=int, default=20190913)
    parser.add_argument(
        "--check-load",
        type=Path,
        metavar="H5",
        help="load this file with Keras and compare with the fixture's npz",
    )
    args = parser.parse_args(argv)
    if args.check_load:
        npz = args.out_dir / f"keras_unet_w{args.width}.npz"
        return check_load(args.check_load, args.width, npz)
    make(args.width, args.out_dir, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
