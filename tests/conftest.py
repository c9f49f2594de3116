"""Shared test settings: keep torch on one thread so parallel test runs do not thrash."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)
