"""GPU leases: concurrent jobs on one machine land on different GPUs.

Snakemake's ``--resources gpu=N`` only counts GPUs; it never says *which* GPU a job gets,
and it does not set ``CUDA_VISIBLE_DEVICES``. So each training process leases one GPU
itself: it takes a non-blocking exclusive ``flock`` on one of the files
``gpu{i}.lock`` in a lock folder and uses ``cuda:i`` while it holds it. The kernel drops
an ``flock`` when its process dies, even on SIGKILL or OOM-kill, so a killed job never
leaves a GPU reserved. Under ``torchrun`` every rank leases its own GPU the same way.

Rules, in order:

1. No CUDA: use the CPU and say so in the log.
2. ``CUDA_VISIBLE_DEVICES`` already set (SLURM, a user, a container runtime): the scheduler
   has chosen the GPUs, so take no lock and use ``cuda:0`` of the visible set (under
   ``torchrun``, ``cuda:LOCAL_RANK``). Leasing across GPUs the process cannot see would
   collide with other jobs' numbering.
3. Otherwise lease slot ``i`` among N slots, N = ``slots`` argument, else
   ``$GENESIS_GPU_SLOTS``, else ``torch.cuda.device_count()``. All busy: poll until a slot
   frees up or ``timeout`` seconds have passed.

Sharing a GPU (``jobs_per_gpu`` k > 1, for many small fine-tunes): each GPU then has k
share slots, files ``gpu{i}.share{j}.lock``; a sharing job holds one of them exclusively
and ``gpu{i}.lock`` *shared*, while an exclusive job (pretraining) holds ``gpu{i}.lock``
exclusively. So k small jobs run together on one GPU, and never beside a pretraining
that wants the whole device. An exclusive job that finds no free GPU announces itself in
``pending.lock``; sharing jobs start no new lease while it waits, so a stream of small
jobs cannot starve a pretraining. Sharing jobs count 0 GPUs for Snakemake (its resources
are integers), so more of them may start than there are slots: they wait for a slot, by
default up to a week (``$GENESIS_GPU_LEASE_TIMEOUT`` sets it). Sharing jobs fill the
GPUs in turn (slot j of GPU i is tried in the order j = 0, i = 0..N-1, then j = 1, ...),
so 4 jobs on 2 GPUs run 2 + 2.

Library code never sets ``CUDA_VISIBLE_DEVICES``: it would break other code in the same
process that already initialised CUDA.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import torch

from genesis.errors import ConfigError, GenesisError

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "GENESIS_GPU_LOCK_DIR"
SLOTS_ENV = "GENESIS_GPU_SLOTS"
TIMEOUT_ENV = "GENESIS_GPU_LEASE_TIMEOUT"
#: The file an exclusive job locks while it waits, so that sharing jobs let it in first.
PENDING = "pending.lock"
#: Sharing jobs may have started before a slot was free (see the module docs): a week.
SHARING_TIMEOUT = 7 * 24 * 3600.0


class LeaseTimeoutError(GenesisError):
    """Every GPU slot stayed busy for longer than the lease timeout."""


def default_lock_dir() -> Path:
    """``$GENESIS_GPU_LOCK_DIR``, else a per-user folder in /tmp (shared by all jobs)."""
    configured = os.environ.get(LOCK_DIR_ENV)
    return Path(configured) if configured else Path(f"/tmp/genesis-gpu-locks-{os.getuid()}")


def default_timeout() -> float:
    """``$GENESIS_GPU_LEASE_TIMEOUT`` seconds, else one hour."""
    return float(os.environ.get(TIMEOUT_ENV, 3600))


@contextlib.contextmanager
def lease_device(
    slots: int | None = None,
    lock_dir: Path | None = None,
    *,
    timeout: float | None = None,
    poll_seconds: float = 2.0,
    cuda_available: bool | None = None,
    device_count: Callable[[], int] | int | None = None,
    jobs_per_gpu: int = 1,
) -> Iterator[torch.device]:
    """Hold a GPU for the duration of the ``with`` block and yield its ``torch.device``.

    ``jobs_per_gpu`` > 1 shares the GPU with up to that many jobs (see the module docs).
    ``cuda_available`` and ``device_count`` exist so tests can fake GPUs on a CPU machine.
    """
    if isinstance(jobs_per_gpu, bool) or not isinstance(jobs_per_gpu, int) or jobs_per_gpu < 1:
        raise ConfigError(f"jobs per GPU must be a positive integer, got {jobs_per_gpu!r}")
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if not cuda_available:
        log.info("no CUDA device available: running on the CPU")
        yield torch.device("cpu")
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        index = int(os.environ.get("LOCAL_RANK", 0))
        log.info(
            "CUDA_VISIBLE_DEVICES=%s is set by the scheduler: using cuda:%d of the "
            "visible GPUs without a lease",
            visible,
            index,
        )
        yield torch.device("cuda", index)
        return
    count = _slot_count(slots, device_count)
    folder = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    if timeout is None:
        shared_default = jobs_per_gpu > 1 and not os.environ.get(TIMEOUT_ENV)
        timeout = SHARING_TIMEOUT if shared_default else default_timeout()
    index, handles = _acquire(folder, count, timeout, poll_seconds, jobs_per_gpu)
    try:
        log.info(
            "leased GPU %d of %d (%s)",
            index,
            count,
            "exclusive" if jobs_per_gpu == 1 else f"shared by up to {jobs_per_gpu} jobs",
        )
        yield torch.device("cuda", index)
    finally:
        for handle in handles:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def _slot_count(slots: int | None, device_count: Callable[[], int] | int | None) -> int:
    if device_count is None:
        available = torch.cuda.device_count()
    else:
        available = device_count() if callable(device_count) else int(device_count)
    if slots is None and os.environ.get(SLOTS_ENV):
        try:
            slots = int(os.environ[SLOTS_ENV])
        except ValueError:
            raise ConfigError(
                f"{SLOTS_ENV} must be an integer, got {os.environ[SLOTS_ENV]!r}"
            ) from None
    if slots is None:
        slots = available
    if slots < 1:
        raise ConfigError(f"GPU slots must be at least 1, got {slots}")
    if slots > available:
        raise ConfigError(f"GPU slots ({slots}) exceed the {available} visible GPU(s)")
    return slots


def _lock_file(folder: Path, index: int) -> Path:
    return folder / f"gpu{index}.lock"


def _share_file(folder: Path, index: int, share: int) -> Path:
    return folder / f"gpu{index}.share{share}.lock"


def _try_lock(folder: Path, index: int, share: int | None = None) -> list[IO[str]] | None:
    """Lock GPU ``index`` exclusively, or (``share`` given) its share slot exclusively and
    the GPU shared; the held files, or None when busy."""
    if share is None:
        device = _try_flock(_lock_file(folder, index), fcntl.LOCK_EX)
        return None if device is None else [device]
    slot = _try_flock(_share_file(folder, index, share), fcntl.LOCK_EX)
    if slot is None:
        return None
    try:
        device = _try_flock(_lock_file(folder, index), fcntl.LOCK_SH, note=False)
    except OSError:
        fcntl.flock(slot, fcntl.LOCK_UN)
        slot.close()
        raise
    if device is None:  # an exclusive job holds the whole GPU
        fcntl.flock(slot, fcntl.LOCK_UN)
        slot.close()
        return None
    return [slot, device]


def _try_flock(path: Path, mode: int, note: bool = True) -> IO[str] | None:
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held past this function
    try:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    except OSError:  # e.g. no locks on this file system: say so, do not leak the handle
        handle.close()
        raise
    if not note:
        return handle
    # The pid is only a hint for a human looking at the folder; the lock is what counts.
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _acquire(
    folder: Path, count: int, timeout: float, poll_seconds: float, jobs_per_gpu: int = 1
) -> tuple[int, list[IO[str]]]:
    deadline = time.monotonic() + timeout
    waiting_logged = False
    sharing = jobs_per_gpu > 1
    slots = (
        [(index, share) for share in range(jobs_per_gpu) for index in range(count)]
        if sharing
        else [(index, None) for index in range(count)]
    )
    pending: IO[str] | None = None  # an exclusive job's "I am waiting" lock
    try:
        while True:
            if not (sharing and _exclusive_waiting(folder)):
                for index, share in slots:
                    handles = _try_lock(folder, index, share)
                    if handles is not None:
                        return index, handles
            if not sharing and pending is None:
                pending = _try_flock(folder / PENDING, fcntl.LOCK_EX)
            if time.monotonic() >= deadline:
                raise LeaseTimeoutError(
                    f"all {len(slots)} GPU slot(s) in {folder} stayed busy for "
                    f"{timeout:g} s; another job holds them"
                )
            if not waiting_logged:
                log.info(
                    "all %d GPU slot(s) in %s are busy; waiting up to %g s",
                    len(slots),
                    folder,
                    timeout,
                )
                waiting_logged = True
            time.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))
    finally:
        if pending is not None:
            fcntl.flock(pending, fcntl.LOCK_UN)
            pending.close()


def _exclusive_waiting(folder: Path) -> bool:
    """Whether an exclusive job waits for a GPU (it holds ``pending.lock``)."""
    probe = _try_flock(folder / PENDING, fcntl.LOCK_SH, note=False)
    if probe is None:
        return True
    fcntl.flock(probe, fcntl.LOCK_UN)
    probe.close()
    return False
