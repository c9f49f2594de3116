"""The training loop shared by pretraining and fine-tuning (genesis.train.engine), on a
tiny linear model: stop rules, plateau schedule, best-state copy, divergence guard,
table, resume identity and exact resumption."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from genesis.errors import GenesisError
from genesis.train.engine import (
    BatchMean,
    DivergedError,
    Run,
    SampleMean,
    StepOptions,
    Table,
    Trainer,
    amp_dtype,
    changed_settings,
    check_finite,
    stale_reason,
    train_epoch,
)
from genesis.train.schedule import no_budget, run_budget

COLUMNS = ("epoch", "train_loss", "val_loss", "val_metric", "lr")


class Settings:
    """The four settings the loop reads."""

    def __init__(
        self,
        max_epochs: int = 4,
        early_stop_patience: int = 10,
        lr_patience: int = 10,
        lr_factor: float = 0.5,
    ) -> None:
        self.max_epochs = max_epochs
        self.early_stop_patience = early_stop_patience
        self.lr_patience = lr_patience
        self.lr_factor = lr_factor


class Toy:
    """A linear regression trained by the engine: the 'stage' of these tests."""

    def __init__(self, out: Path, seed: int = 0, lr: float = 0.1, **limits: float) -> None:
        torch.manual_seed(0)
        self.model = nn.Linear(3, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr)
        self.settings = Settings(**limits)  # type: ignore[arg-type]
        self.trainer = Trainer(
            self.model,
            self.optimizer,
            self.settings,
            Run(
                name="toy",
                checkpoint=out / "checkpoint.pt",
                table=Table(COLUMNS, digits=6),
                table_path=out / "curves.csv",
                identity={"seed": seed},
                settings={"lr": lr},
                resumable=frozenset({"max_epochs"}),
                lr_key="toy.lr",
            ),
        )
        weights = torch.tensor([[1.0], [-2.0], [0.5]])
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(32, 3, generator=generator)
        self.y = self.x @ weights
        self.val_losses: list[float] | None = None  # forced validation losses

    def train(self, epoch: int) -> float:
        order = torch.randperm(32)  # the global RNG: restored on resume
        batches = [(self.x[order[i : i + 8]], self.y[order[i : i + 8]]) for i in range(0, 32, 8)]
        return train_epoch(
            self.model,
            batches,
            self.optimizer,
            F.mse_loss,
            SampleMean(),
            device=torch.device("cpu"),
            options=StepOptions(),
        )

    def validate(self) -> tuple[float, dict[str, float]]:
        with torch.no_grad():
            loss = float(F.mse_loss(self.model(self.x), self.y))
        if self.val_losses is not None:
            loss = self.val_losses[self.trainer.epoch]
        return loss, {"val_metric": -loss}

    def fit(self, **hooks: object) -> str:
        return self.trainer.fit(self.train, self.validate, **hooks)  # type: ignore[arg-type]


def test_runs_writes_table_and_checkpoint(tmp_path: Path) -> None:
    toy = Toy(tmp_path)
    assert toy.fit() == "max_epochs (4) reached"
    lines = (tmp_path / "curves.csv").read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS) and [line.split(",")[0] for line in lines[1:]] == [
        "1",
        "2",
        "3",
        "4",
    ]
    assert (tmp_path / "checkpoint.pt").is_file()
    losses = [row["val_loss"] for row in toy.trainer.rows]
    assert losses == sorted(losses, reverse=True)  # it learns
    assert toy.trainer.stopper.best_epoch == 4


def test_best_state_is_a_copy_of_the_best_epoch(tmp_path: Path) -> None:
    toy = Toy(tmp_path, max_epochs=3)
    toy.val_losses = [0.5, 0.1, 0.3]
    snapshots: list[dict[str, torch.Tensor]] = []
    toy.fit(
        on_epoch_end=lambda _: snapshots.append(
            {k: v.clone() for k, v in toy.model.state_dict().items()}
        )
    )
    assert toy.trainer.stopper.best_epoch == 2
    for key, value in snapshots[1].items():
        assert torch.equal(toy.trainer.best_state[key], value)  # type: ignore[index]
    assert not torch.equal(toy.trainer.best_state["weight"], toy.model.weight)  # type: ignore[index]


def test_early_stopping_and_plateau_schedule(tmp_path: Path) -> None:
    toy = Toy(tmp_path, max_epochs=10, early_stop_patience=3, lr_patience=1)
    toy.val_losses = [1.0, 1.0, 1.0, 1.0, 1.0]
    best: list[int] = []
    reason = toy.fit(on_best=best.append)
    assert reason == "early stopping: no lower validation loss for 3 epochs"
    assert toy.trainer.epoch == 4 and best == [1]
    # Halved after every second epoch without improvement (patience 1): 0.1, 0.1, 0.1, 0.05.
    assert [row["lr"] for row in toy.trainer.rows] == pytest.approx([0.1, 0.1, 0.1, 0.05])


def test_budget_stops_with_its_reason(tmp_path: Path) -> None:
    calls: list[float | None] = []

    def budget(run_seconds: float, last: float | None) -> str:
        calls.append(last)
        return "budget spent" if last is not None else ""

    toy = Toy(tmp_path, max_epochs=5)
    assert toy.fit(budget=budget) == "budget spent" and toy.trainer.epoch == 1
    assert calls[0] is None and calls[1] is not None
    assert run_budget(None) is no_budget and no_budget(1e9, 1.0) == ""
    assert run_budget(1.0)(61.0, None) == "time budget of 1.0 min spent"
    assert run_budget(1.0)(59.0, 1.0) == ""


def test_resume_continues_exactly(tmp_path: Path) -> None:
    straight = Toy(tmp_path / "straight")
    straight.fit()

    class KilledError(Exception):
        pass

    def kill(epoch: int) -> None:
        if epoch == 2:
            raise KilledError

    with pytest.raises(KilledError):
        Toy(tmp_path / "parts").fit(on_epoch_end=kill)
    torch.manual_seed(123)  # a fresh process would have another RNG state: resume fixes it
    resumed = Toy(tmp_path / "parts")
    assert resumed.trainer.resume() and resumed.trainer.epoch == 2
    resumed.fit()
    assert resumed.trainer.rows == straight.trainer.rows
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value)
    assert (tmp_path / "parts" / "curves.csv").read_text() == (
        tmp_path / "straight" / "curves.csv"
    ).read_text()
    # A finished run is not trained again; a larger max_epochs (resumable) continues it.
    again = Toy(tmp_path / "parts", max_epochs=5)
    assert again.trainer.resume() and again.fit() == "max_epochs (5) reached"
    assert again.trainer.epoch == 5


def test_another_run_starts_afresh(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    Toy(tmp_path, max_epochs=1).fit()
    with caplog.at_level(logging.WARNING):
        assert not Toy(tmp_path, seed=1, max_epochs=1).trainer.resume()
        assert not Toy(tmp_path, lr=0.2, max_epochs=1).trainer.resume()
    assert "checkpoint belongs to another run (seed 0, now 1); starting afresh" in caplog.text
    assert "checkpoint was trained with other settings (lr); starting afresh" in caplog.text


def test_divergence_writes_nothing_of_the_epoch(tmp_path: Path) -> None:
    toy = Toy(tmp_path, max_epochs=3)
    toy.val_losses = [0.5, math.nan, 0.1]
    with pytest.raises(
        DivergedError,
        match=r"toy: diverged at epoch 2 .*checkpoint of "
        r"epoch 1 is kept\)\. Lower toy\.lr",
    ):
        toy.fit()
    assert len((tmp_path / "curves.csv").read_text().splitlines()) == 2  # header + epoch 1
    resumed = Toy(tmp_path, max_epochs=3)
    assert resumed.trainer.resume() and resumed.trainer.epoch == 1


@pytest.mark.parametrize(
    ("train", "val", "lr"),
    [
        (math.nan, 1.0, 0.1),
        (1.0, math.inf, 0.1),
        (1.0, 1.0, math.nan),
        (1.0, 1.0, math.inf),
    ],
)
def test_divergence_guard(train: float, val: float, lr: float) -> None:
    with pytest.raises(DivergedError, match=r"x: diverged at epoch 1 \(") as error:
        check_finite("x", 1, train, val, lr, "x.lr")
    assert isinstance(error.value, GenesisError) and "Lower x.lr" in str(error.value)
    check_finite("x", 1, 1.0, 2.0, 0.1, "x.lr")  # finite: nothing happens


def test_table_formats_integers_and_numbers(tmp_path: Path) -> None:
    table = Table(("epoch", "loss", "metric"), digits=3)
    rows = [
        {"epoch": 1, "loss": 0.123456, "metric": math.nan},
        {"epoch": 2, "loss": 12345.0, "metric": 1},
    ]
    assert table.render(rows) == "epoch,loss,metric\n1,0.123,nan\n2,1.23e+04,1\n"
    table.write(tmp_path / "t.csv", rows)
    assert (tmp_path / "t.csv").read_text() == table.render(rows)
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temporary left


def test_resume_identity_rules() -> None:
    assert changed_settings({"a": (1, 2), "n": 1}, {"a": [1, 2], "n": 2}, frozenset({"n"})) == []
    assert changed_settings({"a": 1}, {"a": 1, "b": 2}, frozenset()) == ["b"]
    good = {
        "format": 2,
        "identity": {"seed": 1},
        "settings": {"lr": 0.1},
        "epoch": 1,
        "rows": [],
        "seconds": 0.0,
        "stop_reason": "",
        "model": {},
        "best_model": {},
        "optimizer": {},
        "scheduler": {},
        "early_stop": {},
        "rng": {},
    }
    assert stale_reason(good, {"seed": 1}, {"lr": 0.1}, frozenset()) is None
    long = {"seed": 1, "files": ["x" * 200]}
    reason = stale_reason(
        {**good, "identity": long}, {"seed": 1, "files": []}, {"lr": 0.1}, frozenset()
    )
    assert reason is not None and reason.startswith("checkpoint belongs to another run (files")
    assert len(reason) < 250
    old = {k: v for k, v in good.items() if k != "format"}
    assert "layout not recognised" in str(stale_reason(old, {"seed": 1}, {}, frozenset()))


def test_loss_means() -> None:
    sample = SampleMean()
    sample.add(torch.tensor(1.0), 2)
    sample.add(torch.tensor(4.0), 1)
    assert sample.result() == pytest.approx(2.0)
    batch = BatchMean(torch.device("cpu"))
    batch.add(torch.tensor(1.0), 2)
    batch.add(torch.tensor(4.0), 1)
    assert batch.result() == pytest.approx(2.5)
    with pytest.raises(RuntimeError, match="no batches"):
        BatchMean(torch.device("cpu")).result()


def test_autocast_policy() -> None:
    cpu = torch.device("cpu")
    assert amp_dtype("auto", cpu) is None and amp_dtype("fp32", cpu) is None
    assert amp_dtype("bf16", cpu) == torch.bfloat16
    options = StepOptions(None, channels_last=True)
    x = torch.zeros(1, 1, 2, 2, 2)
    assert options.prepare(x).is_contiguous(memory_format=torch.channels_last_3d)
    assert StepOptions().prepare(x) is x
