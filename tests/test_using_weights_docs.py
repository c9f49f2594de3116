"""docs/using-weights.md stays true: every ```python block of the page runs, in order.

Each block runs in a fresh namespace, as a reader would paste it, with the working
directory set to a temporary folder holding files at the paths the page uses:

- ``results/pretrain/all/weights.{pt,safetensors,json}``: ``save_weights`` of a
  ``UNet3D(width=OURS_WIDTH)`` at epoch 12, as ``genesis pretrain`` writes them;
- ``data/released/Genesis_Chest_CT.pt``: a checkpoint in the release's layout
  (``{"epoch", "state_dict", "optimizer_state_dict"}``, keys prefixed ``module.``) of a
  ``UNet3D(width=RELEASE_WIDTH)``;
- ``data/released/Genesis_Chest_CT.h5``: ``tests/fixtures/keras/keras_unet_w2.h5``, the
  Keras release's network at width 2 as tf-keras wrote it.

The one substitution, so that the blocks run in seconds on a CPU: in every block the text
``width=32`` (the released networks' width) is replaced by ``width=2`` (RELEASE_WIDTH, the
Keras fixture's width) before it runs. The page reads the width of our own weights from
``weights.json``, so those blocks follow OURS_WIDTH (deliberately another width) without
any substitution. Nothing else is changed: a block that raises, or whose asserts fail
because the API or its behaviour changed, fails its test.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import pytest
import torch

from genesis.models import UNet3D, save_weights

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "using-weights.md"
KERAS_FIXTURE = Path(__file__).parent / "fixtures" / "keras" / "keras_unet_w2.h5"

RELEASE_WIDTH = 2  # the Keras fixture's width; the PyTorch release file is made to match
OURS_WIDTH = 4  # differs from RELEASE_WIDTH, so a block that mixes them up fails
SUBSTITUTION = ("width=32", f"width={RELEASE_WIDTH}")
OURS = Path("results/pretrain/all/weights")
RELEASED_PT = Path("data/released/Genesis_Chest_CT.pt")
RELEASED_H5 = Path("data/released/Genesis_Chest_CT.h5")

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def blocks(language: str) -> list[str]:
    """The page's fenced blocks of one language, in order."""
    return [
        body for lang, body in FENCE.findall(PAGE.read_text(encoding="utf-8")) if lang == language
    ]


def runnable(code: str) -> str:
    return code.replace(*SUBSTITUTION)


def prepare_files(folder: Path) -> None:
    """The weight files at the page's paths, under ``folder``."""
    torch.manual_seed(0)
    (folder / OURS).parent.mkdir(parents=True)
    save_weights(
        UNet3D(width=OURS_WIDTH),
        folder / OURS,
        provenance={"stage": "pretrain", "variant": "all"},
        epoch=12,
    )

    (folder / RELEASED_PT).parent.mkdir(parents=True)
    release = UNet3D(width=RELEASE_WIDTH, batch_stats=True)
    optimizer = torch.optim.SGD(release.parameters(), lr=1.0, momentum=0.9)
    release.train()(torch.rand(2, 1, 32, 32, 16)).mean().backward()
    optimizer.step()
    torch.save(
        {
            "epoch": 40,
            "state_dict": {f"module.{k}": v for k, v in release.state_dict().items()},
            "optimizer_state_dict": optimizer.state_dict(),
        },
        folder / RELEASED_PT,
    )
    shutil.copyfile(KERAS_FIXTURE, folder / RELEASED_H5)


def run_block(index: int, folder: Path) -> str:
    """Execute block ``index`` in a fresh namespace inside ``folder``; its stdout."""
    code = runnable(blocks("python")[index])
    out = io.StringIO()
    with contextlib.chdir(folder), contextlib.redirect_stdout(out):
        exec(
            compile(code, f"{PAGE.name}, python block {index + 1}", "exec"),
            {"__name__": "__main__"},
        )
    return out.getvalue()


N_BLOCKS = len(blocks("python")) if PAGE.is_file() else 0


def test_the_page_documents_the_api() -> None:
    code = blocks("python")
    assert len(code) >= 6, (
        "one block per section: files, classifier, segmentation, Keras, inputs, strict loading"
    )
    text = "\n".join(code)
    for name in (
        "read_weights(",
        "encoder_only=True",
        "except_head=True",
        "batch_stats=True",
        "GenesisClassifier(",
        "KerasUNet3D(",
        "KerasClassifier(",
        "load_keras_weights(",
        "save_keras_weights(",
        "ct_window(",
        "mri_window(",
        "check_input_shape(",
        "WeightsError",
        "InputShapeError",
        str(RELEASED_PT),
        str(RELEASED_H5),
        f"{OURS}.pt",
        f"{OURS}.safetensors",
        f"{OURS}.json",
    ):
        assert name in text, name
    # The substitution must do something (the release width is written in the blocks)
    # and be complete, or the blocks would run at width 32 or test nothing of it.
    assert text.count(SUBSTITUTION[0]) >= 4
    assert "width=32" not in runnable(text)


@pytest.mark.parametrize("index", range(N_BLOCKS), ids=lambda i: f"block{i + 1}")
def test_block_runs(index: int, tmp_path: Path) -> None:
    prepare_files(tmp_path)
    run_block(index, tmp_path)


def test_the_documented_summary_is_what_load_weights_prints(tmp_path: Path) -> None:
    """The ```text summary under the classifier block is that block's output."""
    [summary] = [b for b in blocks("text") if b.startswith("loaded ")]
    [index] = [
        i
        for i, b in enumerate(blocks("python"))
        if "GenesisClassifier(" in b and "report.summary()" in b
    ]
    prepare_files(tmp_path)
    printed = run_block(index, tmp_path)
    assert " ".join(summary.split()) in " ".join(printed.split())
