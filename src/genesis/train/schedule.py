"""When to change the learning rate and when to stop: the plateau schedule, early stopping
on the validation loss and wall-clock budgets, for pretraining and fine-tuning alike
(``genesis.train.engine`` applies them)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: A wall-clock stop rule: (training seconds of the whole run, over every invocation;
#: seconds of the epoch just run, None before this invocation's first) -> the reason to
#: stop now, or "" to go on.
Budget = Callable[[float, float | None], str]


def plateau_schedule(optimizer: Any, factor: float, patience: int) -> Any:
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without a lower
    validation loss (``ReduceLROnPlateau`` in min mode); step it with each epoch's loss."""
    import torch

    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=factor, patience=patience
    )


@dataclass
class EarlyStopping:
    """Stop after ``patience`` epochs without a strictly lower validation loss.

    Its state is plain numbers, so it goes into a checkpoint as is and a resumed run
    stops at the same epoch as an uninterrupted one.
    """

    patience: int
    best: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record one epoch's loss; True when it is a new best."""
        if value < self.best:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])


@dataclass
class TimeBudget:
    """A wall-clock limit for one invocation (demos); ``minutes=None`` means none.

    Checked between epochs: stop when another epoch as long as the last one would
    overrun, so a demo ends within its budget instead of just after it.
    """

    minutes: float | None
    started: float = 0.0

    def __post_init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def exhausted(self, last_epoch_seconds: float) -> bool:
        if self.minutes is None:
            return False
        return self.elapsed() + last_epoch_seconds > 60.0 * self.minutes


def no_budget(run_seconds: float, last_epoch_seconds: float | None) -> str:
    """The ``Budget`` of a run without a wall-clock limit."""
    return ""


def run_budget(minutes: float | None) -> Budget:
    """A limit on the training time of the whole run, summed over its invocations (a
    resumed run continues the count): stop after the epoch that exceeds it."""
    if minutes is None:
        return no_budget

    def spent(run_seconds: float, last_epoch_seconds: float | None) -> str:
        return f"time budget of {minutes} min spent" if run_seconds > 60 * minutes else ""

    return spent
