"""Errors the engine raises for bad input.

The CLI prints these as one line, without a traceback, because they describe a problem
with the user's files or settings, not a bug in the engine. Always name the file or key.
"""

from __future__ import annotations

from pathlib import Path


class GenesisError(Exception):
    """Base class for errors that are reported to the user as a single clear line."""


class InputError(GenesisError):
    """A file exists but cannot be used: unreadable, corrupt, wrong shape, NaNs, ..."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")


class ConfigError(GenesisError):
    """A setting has the wrong type or value; the message names the key."""


class WeightsError(GenesisError):
    """A checkpoint does not match the model: the message lists the offending keys."""
