"""Strict weight I/O: release layout, our files, safetensors, refusals, encoder-only."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from genesis.errors import InputError, WeightsError
from genesis.models import GenesisClassifier, LoadReport, UNet3D, load_weights, save_weights
from genesis.provenance import file_sha256

WIDTH = 4
ENCODER_KEYS = 8 * 7  # 8 blocks, 7 tensors each
CUBE = (2, 1, 16, 16, 8)


def trained_unet(seed: int = 0) -> UNet3D:
    """A small U-Net whose running statistics are no longer the defaults."""
    torch.manual_seed(seed)
    model = UNet3D(width=WIDTH)
    model.train()(torch.rand(*CUBE))
    return model.eval()


def fresh_unet(seed: int = 99) -> UNet3D:
    torch.manual_seed(seed)
    return UNet3D(width=WIDTH).eval()


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_save_then_load_round_trip(tmp_path: Path, suffix: str) -> None:
    source = trained_unet()
    paths = save_weights(source, tmp_path / "weights", provenance={"config_hash": "abc"}, epoch=3)
    assert [p.name for p in paths] == ["weights.pt", "weights.safetensors", "weights.json"]
    target = fresh_unet()
    x = torch.rand(*CUBE)
    assert not torch.equal(target(x), source(x))
    report = load_weights(target, tmp_path / f"weights{suffix}")
    assert isinstance(report, LoadReport)
    assert report.epoch == 3 and len(report.loaded) == 106
    assert report.skipped == () and report.kept == ()
    assert_same_state(target, source)
    assert torch.equal(target(x), source(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in sorted(paths)]


def test_saved_pt_is_in_the_release_layout(tmp_path: Path) -> None:
    source = trained_unet()
    save_weights(source, tmp_path / "w", provenance={}, epoch=5)
    raw = torch.load(tmp_path / "w.pt", weights_only=True)
    assert set(raw) == {"epoch", "state_dict"} and raw["epoch"] == 5
    assert list(raw["state_dict"]) == ["module." + k for k in source.state_dict()]


def test_sidecar_records_provenance_formats_and_hashes(tmp_path: Path) -> None:
    provenance = {"config_hash": "c0ffee", "data_manifest_sha256": "feed"}
    pt, st, sidecar = save_weights(
        trained_unet(), tmp_path / "w.pt", provenance=provenance, epoch=2
    )
    record = json.loads(sidecar.read_text())
    assert record["config_hash"] == "c0ffee" and record["data_manifest_sha256"] == "feed"
    weights = record["weights"]
    assert weights["epoch"] == 2 and weights["model"] == "UNet3D"
    assert weights["model_config"]["width"] == WIDTH
    assert weights["n_tensors"] == 106
    for path in (pt, st):
        assert weights["files"][path.name]["sha256"] == file_sha256(path)
        assert weights["files"][path.name]["format"]
    with pytest.raises(ValueError, match="weights"):
        save_weights(trained_unet(), tmp_path / "x", provenance={"weights": 1})


def test_a_release_style_checkpoint_loads(tmp_path: Path) -> None:
    source = trained_unet()
    optimizer = torch.optim.SGD(source.parameters(), lr=1.0, momentum=0.9)
    source.train()(torch.rand(*CUBE)).mean().backward()
    optimizer.step()
    source.eval()
    torch.save(
        {
            "epoch": 42,
            "state_dict": {"module." + k: v for k, v in source.state_dict().items()},
            "optimizer_state_dict": optimizer.state_dict(),
        },
        tmp_path / "Genesis_Chest_CT.pt",
    )
    target = fresh_unet()
    report = load_weights(target, tmp_path / "Genesis_Chest_CT.pt")
    assert report.format == "pt-checkpoint" and report.epoch == 42 and report.prefix_stripped
    assert_same_state(target, source)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_plain_state_dicts_load(tmp_path: Path, prefix: str) -> None:
    source = trained_unet()
    torch.save({prefix + k: v for k, v in source.state_dict().items()}, tmp_path / "sd.pth")
    target = fresh_unet()
    report = load_weights(target, tmp_path / "sd.pth")
    assert report.format == "pt-state-dict" and report.prefix_stripped == bool(prefix)
    assert_same_state(target, source)


def test_wrapped_models_save_and_load_without_double_prefix(tmp_path: Path) -> None:
    source = nn.DataParallel(trained_unet())
    save_weights(source, tmp_path / "w", provenance={})
    raw = torch.load(tmp_path / "w.pt", weights_only=True)["state_dict"]
    assert all(k.startswith("module.") and not k.startswith("module.module.") for k in raw)
    target = nn.DataParallel(fresh_unet())
    load_weights(target, tmp_path / "w.safetensors")
    assert_same_state(target, source)


def test_missing_extra_and_misshapen_keys_are_all_listed(tmp_path: Path) -> None:
    state = trained_unet().state_dict()
    del state["up_tr64.ops.1.bn1.running_var"]
    state["up_tr32.ops.0.conv1.weight"] = torch.zeros(2, 2, 3, 3, 3)
    state["out_tr.final_conv.weight"] = torch.zeros(2, 8, 1, 1, 1)
    torch.save({"epoch": 1, "state_dict": state}, tmp_path / "bad.pt")
    target = fresh_unet()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(WeightsError) as caught:
        load_weights(target, tmp_path / "bad.pt")
    message = str(caught.value)
    assert "1 missing: up_tr64.ops.1.bn1.running_var (8,)" in message
    assert "1 unexpected: up_tr32.ops.0.conv1.weight (2, 2, 3, 3, 3)" in message
    assert "out_tr.final_conv.weight file (2, 8, 1, 1, 1) vs model (1, 8, 1, 1, 1)" in message
    assert "bad.pt" in message and "\n" not in message
    for key, value in target.state_dict().items():  # nothing was half-loaded
        assert torch.equal(value, before[key]), key


def test_a_width_mismatch_is_explained(tmp_path: Path) -> None:
    save_weights(UNet3D(width=2), tmp_path / "w", provenance={})
    with pytest.raises(WeightsError, match="first block has 2 channels, the model's 4"):
        load_weights(fresh_unet(), tmp_path / "w.pt")


def test_encoder_only_loads_a_unet_file_into_a_classifier(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = trained_unet()
    save_weights(source, tmp_path / "w", provenance={})
    torch.manual_seed(5)
    clf = GenesisClassifier(n_classes=2, width=WIDTH, hidden=8)
    head = {k: v.clone() for k, v in clf.state_dict().items() if k.startswith("fc")}
    with caplog.at_level(logging.INFO, logger="genesis.models.weights"):
        report = load_weights(clf, tmp_path / "w.pt", encoder_only=True)
    encoder = [k for k in source.state_dict() if k.startswith("down_tr")]
    assert len(encoder) == ENCODER_KEYS and list(report.loaded) == encoder
    assert len(report.skipped) == 106 - ENCODER_KEYS
    assert all(k.startswith(("up_tr", "out_tr")) for k in report.skipped)
    assert set(report.kept) == set(head)
    for key in encoder:
        assert torch.equal(clf.state_dict()[key], source.state_dict()[key])
    for key, value in head.items():
        assert torch.equal(clf.state_dict()[key], value)
    assert f"loaded {ENCODER_KEYS} tensors" in caplog.text
    assert (
        "skipped 50 file tensors: up_tr256 (16), up_tr128 (16), up_tr64 (16), out_tr (2)"
        in caplog.text
    )


def test_a_unet_file_into_a_classifier_needs_encoder_only(tmp_path: Path) -> None:
    save_weights(trained_unet(), tmp_path / "w", provenance={})
    with pytest.raises(WeightsError, match="encoder_only=True"):
        load_weights(GenesisClassifier(width=WIDTH, hidden=8), tmp_path / "w.pt")


def test_encoder_only_still_requires_the_whole_encoder(tmp_path: Path) -> None:
    state = trained_unet().state_dict()
    del state["down_tr512.ops.1.conv1.bias"]
    state["down_tr64.ops.0.conv1.weight"] = torch.zeros(4, 3, 3, 3, 3)
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(WeightsError) as caught:
        load_weights(
            GenesisClassifier(width=WIDTH, hidden=8), tmp_path / "partial.pt", encoder_only=True
        )
    assert "down_tr512.ops.1.conv1.bias" in str(caught.value)
    assert "down_tr64.ops.0.conv1.weight file (4, 3, 3, 3, 3)" in str(caught.value)


def _touch(path: str) -> None:
    Path(path).touch()


class Payload:
    """An object whose unpickling would run code: weights_only must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return _touch, (str(self.marker),)


def test_loading_refuses_pickled_objects(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    state = trained_unet().state_dict()
    torch.save({"state_dict": state, "extra": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match=r"refused.*_touch.*weights_only=True") as caught:
        load_weights(fresh_unet(), tmp_path / "evil.pt")
    assert "evil.pt" in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["absent.pt", "absent.safetensors"])
def test_a_missing_file_is_named(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError, match=f"{name}: weights file not found"):
        load_weights(fresh_unet(), tmp_path / name)


@pytest.mark.parametrize("name", ["junk.pt", "junk.safetensors"])
def test_an_unreadable_file_is_named(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"not weights at all" * 10)
    with pytest.raises(InputError, match=f"{name}: not a readable") as caught:
        load_weights(fresh_unet(), tmp_path / name)
    assert "\x1b" not in str(caught.value)


def test_a_file_without_a_state_dict_is_refused(tmp_path: Path) -> None:
    torch.save({"epoch": 1, "model": [1, 2]}, tmp_path / "odd.pt")
    with pytest.raises(InputError, match="'state_dict'"):
        load_weights(fresh_unet(), tmp_path / "odd.pt")


# --- reproducible bytes, and the three files as one set -----------------------------------


def test_same_tensors_same_bytes(tmp_path: Path) -> None:
    import zipfile

    model = trained_unet()
    first = save_weights(model, tmp_path / "a" / "weights", provenance={}, epoch=2)
    second = save_weights(model, tmp_path / "b" / "other", provenance={}, epoch=2)
    for one, two in zip(first[:2], second[:2], strict=True):  # .pt, .safetensors
        assert file_sha256(one) == file_sha256(two), one.name
    # Records are not named after the (random) temporary file.
    names = zipfile.ZipFile(first[0]).namelist()
    assert names and all(name.startswith("archive/") for name in names)
    sidecar = json.loads(first[2].read_text(encoding="utf-8"))["weights"]["files"]
    assert sidecar["weights.pt"]["sha256"] == file_sha256(first[0])
    assert sidecar["weights.safetensors"]["sha256"] == file_sha256(first[1])


def test_weights_that_disagree_with_their_sidecar_are_refused(tmp_path: Path) -> None:
    from genesis.models import read_weights

    save_weights(trained_unet(0), tmp_path / "weights", provenance={})
    save_weights(trained_unet(1), tmp_path / "other", provenance={})
    (tmp_path / "weights.safetensors").write_bytes((tmp_path / "other.safetensors").read_bytes())
    with pytest.raises(
        InputError,
        match=r"weights\.safetensors: sha256 .* differs from .* "
        r"recorded in weights\.json: the files are not from the same save",
    ):
        load_weights(fresh_unet(), tmp_path / "weights.safetensors")
    assert read_weights(tmp_path / "weights.pt").epoch == 0  # the .pt still matches
    (tmp_path / "weights.json").unlink()  # no sidecar: nothing to check against
    assert read_weights(tmp_path / "weights.safetensors").format == "safetensors"


@pytest.mark.parametrize("killed_at", [1, 2, 3])
def test_a_kill_during_save_never_leaves_a_lying_sidecar(
    tmp_path: Path, killed_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from genesis import atomic
    from genesis.models import read_weights

    save_weights(trained_unet(0), tmp_path / "weights", provenance={"run": "old"})
    real_replace = atomic.os.replace
    calls = []

    def replace(src: str | Path, dst: str | Path) -> None:
        calls.append(dst)
        if len(calls) == killed_at:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save_weights(trained_unet(1), tmp_path / "weights", provenance={"run": "new"})
    monkeypatch.undo()
    assert not (tmp_path / "weights.json").exists()  # removed before the first rename
    for suffix in (".pt", ".safetensors"):
        read_weights(tmp_path / f"weights{suffix}")  # complete files, old or new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.pt", "weights.safetensors"]
    save_weights(trained_unet(1), tmp_path / "weights", provenance={"run": "new"})
    for suffix in (".pt", ".safetensors"):
        read_weights(tmp_path / f"weights{suffix}")  # checked against the new sidecar
