"""GPU leases on a CPU machine: fake slots, concurrent holders, killed holders."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from genesis.errors import ConfigError
from genesis.train.devices import LeaseTimeoutError, lease_device

FAKE = {"cuda_available": True, "device_count": 2}


@pytest.fixture(autouse=True)
def _no_scheduler_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CUDA_VISIBLE_DEVICES", "GENESIS_GPU_SLOTS", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def test_no_gpu_gives_cpu(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    with lease_device(lock_dir=tmp_path, cuda_available=False) as device:
        assert device == torch.device("cpu")
    assert "CPU" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_visible_devices_respected_without_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with lease_device(lock_dir=tmp_path, **FAKE) as device:
        assert device == torch.device("cuda", 0)
    assert list(tmp_path.iterdir()) == []


def test_nested_leases_differ_then_time_out(tmp_path: Path) -> None:
    with (
        lease_device(lock_dir=tmp_path, **FAKE) as first,
        lease_device(lock_dir=tmp_path, **FAKE) as second,
    ):
        assert {first.index, second.index} == {0, 1}
        with (
            pytest.raises(LeaseTimeoutError, match="2 GPU slot"),
            lease_device(lock_dir=tmp_path, timeout=0.2, poll_seconds=0.05, **FAKE),
        ):
            pass
    with lease_device(lock_dir=tmp_path, timeout=0, **FAKE) as again:
        assert again.index == 0


def test_slot_count_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENESIS_GPU_SLOTS", "1")
    with lease_device(lock_dir=tmp_path, **FAKE) as device:
        assert device.index == 0
        with pytest.raises(LeaseTimeoutError), lease_device(lock_dir=tmp_path, timeout=0, **FAKE):
            pass
    with (
        pytest.raises(ConfigError, match="exceed"),
        lease_device(slots=3, lock_dir=tmp_path, **FAKE),
    ):
        pass


def _hold(lock_dir: str, queue: mp.Queue, barrier: mp.Barrier) -> None:
    with lease_device(lock_dir=Path(lock_dir), timeout=5, **FAKE) as device:
        queue.put(device.index)
        barrier.wait(timeout=30)  # both processes hold their lease at the same time


def test_concurrent_processes_get_different_gpus(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    queue, barrier = ctx.Queue(), ctx.Barrier(2)
    workers = [ctx.Process(target=_hold, args=(str(tmp_path), queue, barrier)) for _ in range(2)]
    for worker in workers:
        worker.start()
    indices = sorted(queue.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert indices == [0, 1]


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from genesis.train.devices import lease_device
    with lease_device(lock_dir=Path(sys.argv[1]), cuda_available=True, device_count=1) as d:
        print(d.index, flush=True)
        time.sleep(120)
""")


def test_killed_holder_frees_its_slot(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "0"
        with (
            pytest.raises(LeaseTimeoutError),
            lease_device(lock_dir=tmp_path, timeout=0, cuda_available=True, device_count=1),
        ):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with lease_device(lock_dir=tmp_path, timeout=0, cuda_available=True, device_count=1) as device:
        assert device.index == 0


def test_jobs_share_a_gpu_up_to_jobs_per_gpu(tmp_path: Path) -> None:
    """2 GPUs x 4 jobs: eight leases at once, spread over both GPUs; the ninth waits."""
    with contextlib.ExitStack() as stack:
        devices = [
            stack.enter_context(lease_device(lock_dir=tmp_path, jobs_per_gpu=4, **FAKE))
            for _ in range(8)
        ]
        assert sorted(d.index for d in devices) == [0, 0, 0, 0, 1, 1, 1, 1]
        assert [d.index for d in devices[:4]] == [0, 1, 0, 1]  # GPUs filled in turn
        with (
            pytest.raises(LeaseTimeoutError, match="8 GPU slot"),
            lease_device(lock_dir=tmp_path, jobs_per_gpu=4, timeout=0.1, poll_seconds=0.02, **FAKE),
        ):
            pass


def test_exclusive_and_shared_jobs_exclude_each_other(tmp_path: Path) -> None:
    one_gpu = {**FAKE, "device_count": 1}
    # A pretraining does not share a GPU that fine-tunes use ...
    with (
        lease_device(lock_dir=tmp_path, jobs_per_gpu=3, **one_gpu),
        pytest.raises(LeaseTimeoutError),
        lease_device(lock_dir=tmp_path, timeout=0.1, poll_seconds=0.02, **one_gpu),
    ):
        pass
    # ... nor does a fine-tune join a GPU that a pretraining holds.
    with (
        lease_device(lock_dir=tmp_path, **one_gpu),
        pytest.raises(LeaseTimeoutError),
        lease_device(lock_dir=tmp_path, jobs_per_gpu=3, timeout=0.1, poll_seconds=0.02, **one_gpu),
    ):
        pass
    with (
        lease_device(lock_dir=tmp_path, jobs_per_gpu=3, **one_gpu) as a,
        lease_device(lock_dir=tmp_path, jobs_per_gpu=3, **one_gpu) as b,
    ):
        assert a.index == b.index == 0  # after both are released, sharing works again


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_jobs_per_gpu_must_be_a_positive_integer(tmp_path: Path, bad: object) -> None:
    with (
        pytest.raises(ConfigError, match="jobs per GPU"),
        lease_device(lock_dir=tmp_path, jobs_per_gpu=bad, **FAKE),
    ):  # type: ignore[arg-type]
        pass


def test_a_waiting_exclusive_job_goes_before_new_sharing_jobs(tmp_path: Path) -> None:
    """A pretraining waiting for a GPU that fine-tunes share is not starved: while it
    waits (pending.lock held), no new sharing lease starts."""
    one_gpu = {**FAKE, "device_count": 1}
    fast = {"timeout": 0.1, "poll_seconds": 0.02}
    with lease_device(lock_dir=tmp_path, jobs_per_gpu=3, **one_gpu):
        pending = open(tmp_path / "pending.lock", "a+")  # noqa: SIM115 - an exclusive job waits
        import fcntl

        fcntl.flock(pending, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with (
            pytest.raises(LeaseTimeoutError),
            lease_device(lock_dir=tmp_path, jobs_per_gpu=3, **fast, **one_gpu),
        ):
            pass  # a second sharer waits although a share slot is free
        fcntl.flock(pending, fcntl.LOCK_UN)
        pending.close()
        with lease_device(lock_dir=tmp_path, jobs_per_gpu=3, **fast, **one_gpu) as device:
            assert device.index == 0  # once nobody waits, sharing resumes
