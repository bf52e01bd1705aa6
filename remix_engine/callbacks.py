"""What the trainer reports to, and asks of, whoever runs it (the worker, the CLI, a benchmark, a test).

`TrainerCallbacks` declares every hook the trainer calls; `NullCallbacks` implements each one as a
no-op, so an implementation subclasses it and overrides the hooks it needs. Only the main process of
a distributed job reports; the others report to `NullCallbacks`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

Metrics = dict[str, float | int | str]


class TrainerCallbacks(Protocol):
    def on_step(self, step: int, metrics: Metrics) -> None:
        """After every step, with its metrics row (and `eval_*` keys on evaluation steps)."""

    def on_event(self, kind: str, step: int, message: str, payload: dict[str, Any]) -> None:
        """A notable moment: evaluation, checkpoint, reincarnated, resumed, prompts, samples."""

    def on_checkpoint(self, step: int, path: Path, metrics: Metrics) -> None:
        """A checkpoint folder was written."""

    def on_checkpoint_pruned(self, step: int, path: Path) -> None:
        """A checkpoint folder was deleted by the keep_checkpoints / keep_best_checkpoints policy."""

    def should_stop(self) -> bool:
        """Asked before every step; True ends training early (cancel, pause, stop)."""

    def checkpoint_on_stop(self) -> bool:
        """Asked once when `should_stop` ended training early; True saves the step reached
        (on every process: under FSDP saving is collective)."""


class NullCallbacks:
    """Every hook a no-op: never stops, never asks for a checkpoint on stop."""

    def on_step(self, step: int, metrics: Metrics) -> None:
        pass

    def on_event(self, kind: str, step: int, message: str, payload: dict[str, Any]) -> None:
        pass

    def on_checkpoint(self, step: int, path: Path, metrics: Metrics) -> None:
        pass

    def on_checkpoint_pruned(self, step: int, path: Path) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def checkpoint_on_stop(self) -> bool:
        return False
