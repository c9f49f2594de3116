"""Checked CSV reading: a missing file, a broken CSV or a missing column names the file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from genesis.errors import InputError

# Columns of the per-epoch CSVs that training writes and the reports read: one definition
# for both sides of the file.
PRETRAIN_METRICS_COLUMNS = ("epoch", "train_loss", "val_loss", "identity_loss", "lr", "seconds")
FINETUNE_CURVE_COLUMNS = ("epoch", "train_loss", "val_loss", "val_metric", "lr")


def read_csv(path: str | Path, columns: Sequence[str], *, allow_empty: bool = True) -> pd.DataFrame:
    """Read ``path`` and check it has ``columns`` (and rows, unless ``allow_empty``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "does not exist")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(path, f"not a readable CSV: {error}") from None
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise InputError(path, f"missing column(s) {missing}; expected {list(columns)}")
    if frame.empty and not allow_empty:
        raise InputError(path, "has no rows")
    return frame
