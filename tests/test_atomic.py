"""Atomic writes: temporary names, sets of files, and the temporaries of killed runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from genesis import atomic
from genesis.atomic import (
    atomic_path,
    atomic_set,
    host_tag,
    make_temporary,
    remove_stale_temporaries,
    stale_temporaries,
    write_json,
)

HOLD_A_TEMPORARY = """
import sys, time
from genesis.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half a shard")
    print(tmp, flush=True)
    time.sleep(120)
"""


def start_writer(target: Path) -> tuple[subprocess.Popen[str], Path]:
    """A process that is writing ``target`` (through a temporary) and never finishes."""
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD_A_TEMPORARY), str(target)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, Path(process.stdout.readline().strip())


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporary_names_say_whose_they_are(tmp_path: Path) -> None:
    tmp = make_temporary(tmp_path / "sub" / "train.npy")
    prefix = f".train.npy.tmp.{os.getpid()}.{host_tag()}."
    assert tmp.parent == tmp_path / "sub" and tmp.name.startswith(prefix)
    assert tmp.name.endswith(".npy") and len(tmp.name) == len(prefix) + 8 + len(".npy")


def test_atomic_path_publishes_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    write_json(target, {"b": 1, "a": 2})
    assert target.read_text(encoding="utf-8") == '{\n  "a": 2,\n  "b": 1\n}\n'
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half", encoding="utf-8")
        raise RuntimeError("killed")
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": 2, "b": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_killed_run_leaves_a_temporary_that_the_next_run_removes(tmp_path: Path) -> None:
    target = tmp_path / "cubes" / "train.npy"
    writer, tmp = start_writer(target)
    try:
        assert tmp.read_bytes() == b"half a shard"
        assert tmp.name.startswith(f".train.npy.tmp.{writer.pid}.{host_tag()}.")
        assert stale_temporaries([target]) == []  # its writer is alive: not stale
    finally:
        writer.kill()  # SIGKILL: no finally block, no cleanup
        writer.wait()
    assert tmp.exists() and not target.exists()
    mine = make_temporary(tmp_path / "cubes" / "val.npy")  # a live run's (this process)
    other_file = tmp_path / "cubes" / f".val.npy.tmp.{writer.pid}.{host_tag()}.abcd1234.npy"
    other_file.touch()  # stale, but of an output this command does not write
    assert remove_stale_temporaries([target, target.with_suffix(".csv")]) == [tmp]
    assert not tmp.exists() and mine.exists() and other_file.exists()


def test_only_this_hosts_dead_processes_count(tmp_path: Path, dead_pid: int) -> None:
    target = tmp_path / "weights.pt"
    here = tmp_path / f".weights.pt.tmp.{dead_pid}.{host_tag()}.k3j_x9q2.pt"
    elsewhere = tmp_path / f".weights.pt.tmp.{dead_pid}.00000000.k3j_x9q2.pt"
    alive = tmp_path / f".weights.pt.tmp.{os.getppid()}.{host_tag()}.k3j_x9q2.pt"
    unrelated = tmp_path / ".weights.pt.partial"
    for path in (here, elsewhere, alive, unrelated):
        path.touch()
    if host_tag() == "00000000":
        elsewhere.unlink()
    assert stale_temporaries([target, tmp_path / "missing" / "x.pt"]) == [here]
    assert remove_stale_temporaries([target]) == [here]
    assert remove_stale_temporaries([target]) == []
    assert alive.exists() and unrelated.exists()


def test_genesis_cubes_cleans_its_outputs_temporaries(tmp_path: Path, dead_pid: int) -> None:
    from genesis.cli import main

    output = tmp_path / "cubes" / "train.npy"
    output.parent.mkdir()
    stale = [
        output.parent / f".{name}.tmp.{dead_pid}.{host_tag()}.abcd1234{suffix}"
        for name, suffix in (("train.npy", ".npy"), ("train.csv", ".csv"))
    ]
    for path in stale:
        path.write_bytes(b"x")
    assert main(["cubes", "--inputs", str(tmp_path / "none"), "--output", str(output)]) == 2
    assert not any(path.exists() for path in stale)  # cleaned before the inputs are read


def test_genesis_pretrain_cleans_its_outputs_temporaries(tmp_path: Path, dead_pid: int) -> None:
    from genesis.commands.pretrain import output_files

    out = tmp_path / "pretrain"
    out.mkdir()
    names = [p.name for p in output_files(out)]
    assert names == [
        "weights.pt",
        "weights.safetensors",
        "weights.json",
        "metrics.csv",
        "checkpoint.pt",
        "checkpoint.pt.prev",
    ]
    stale = out / f".checkpoint.pt.tmp.{dead_pid}.{host_tag()}.abcd1234.pt"
    stale.touch()
    assert remove_stale_temporaries(output_files(out)) == [stale]


@pytest.mark.parametrize("killed_at", [1, 2, 3])
def test_a_set_never_shows_a_seal_beside_other_files(
    tmp_path: Path, killed_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    targets = [tmp_path / "a.bin", tmp_path / "b.bin", tmp_path / "seal.json"]

    def write(version: str) -> None:
        with atomic_set(targets) as tmps:
            for tmp in tmps:
                tmp.write_text(version, encoding="utf-8")

    write("old")
    calls = []
    real_replace = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        calls.append(dst)
        if len(calls) == killed_at:
            raise KeyboardInterrupt  # the job is killed before this rename
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        write("new")
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    seen = {p.name: p.read_text(encoding="utf-8") for p in targets if p.exists()}
    assert "seal.json" not in seen  # removed first, never renamed
    assert seen == {
        "a.bin": "new" if killed_at > 1 else "old",
        "b.bin": "new" if killed_at > 2 else "old",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(seen)
