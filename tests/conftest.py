"""Shared test settings: keep torch on one thread so parallel test runs do not thrash."""

from __future__ import annotations

import contextlib
import locale
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
# Reports are UTF-8 (±, —): read and write them so whatever locale a test worker starts
# in (xdist workers were seen with an ASCII one). Subprocesses get Python's UTF-8 mode.
os.environ.setdefault("PYTHONUTF8", "1")
with contextlib.suppress(locale.Error):
    locale.setlocale(locale.LC_CTYPE, "C.UTF-8")

import torch

torch.set_num_threads(1)
