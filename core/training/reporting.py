"""How a training run tells the outside world what it does, and hears that it should stop.

The recipe calls a `Reporter` on rank 0 only (other ranks get `NullReporter`). The worker plugs in
a Postgres reporter (trainforge.core.jobs.reporter); local runs use `PrintReporter`, which writes
one JSON object per line to stdout."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Protocol, TextIO, runtime_checkable


@runtime_checkable
class Reporter(Protocol):
    def progress(self, step: int, total_steps: int, epoch: int, total_epochs: int, metrics: dict[str, Any]) -> None:
        """After every optimiser step: `metrics` holds train_loss, learning_rate, grad_norm, tokens_per_sec."""

    def evaluation(self, step: int, metrics: dict[str, Any]) -> None:
        """After every evaluation: eval_loss, perplexity."""

    def checkpoint(self, step: int, epoch: int, path: str, metrics: dict[str, Any], is_best: bool) -> None:
        """After a checkpoint folder is complete on disk."""

    def checkpoints_removed(self, steps: list[int]) -> None:
        """Before the checkpoint folders of these steps are deleted (checkpointing.keep_last):
        whatever lists checkpoints must stop listing them."""

    def log(self, message: str) -> None:
        """A line for the job's log."""

    def should_stop(self) -> str | None:
        """"cancel" or "pause" when the job's owner asked for it, "release" when its worker is
        shutting down (checkpoint now and exit; the job resumes elsewhere); None to go on. Called
        after every optimiser step, so it should be cheap (rate-limit any remote look-up)."""


class NullReporter:
    """What ranks other than 0 report to: nothing."""

    def progress(self, step, total_steps, epoch, total_epochs, metrics) -> None:
        pass

    def evaluation(self, step, metrics) -> None:
        pass

    def checkpoint(self, step, epoch, path, metrics, is_best) -> None:
        pass

    def checkpoints_removed(self, steps) -> None:
        pass

    def log(self, message) -> None:
        pass

    def should_stop(self) -> str | None:
        return None


class PrintReporter:
    """JSON lines on stdout: {"event": "progress" | "evaluation" | "checkpoint" | "checkpoints_removed" |
    "log", ...}.

    `stop_after`: ask for "pause" or "cancel" once that many optimiser steps have been reported
    (for trying pause/resume by hand)."""

    def __init__(self, job_id: str = "", dsn: str = "", *, stream: TextIO | None = None,
                 stop_after: tuple[int, str] | None = None):
        self.job_id = job_id
        self.stream = stream or sys.stdout
        self.stop_after = stop_after
        self.last_step = 0

    def _emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": round(time.time(), 3), **({"job_id": self.job_id} if self.job_id else {}),
                  **fields}
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()

    def progress(self, step, total_steps, epoch, total_epochs, metrics) -> None:
        self.last_step = step
        self._emit("progress", step=step, total_steps=total_steps, epoch=epoch, total_epochs=total_epochs,
                   metrics=metrics)

    def evaluation(self, step, metrics) -> None:
        self._emit("evaluation", step=step, metrics=metrics)

    def checkpoint(self, step, epoch, path, metrics, is_best) -> None:
        self._emit("checkpoint", step=step, epoch=epoch, path=str(path), metrics=metrics, is_best=is_best)

    def checkpoints_removed(self, steps) -> None:
        self._emit("checkpoints_removed", steps=list(steps))

    def log(self, message) -> None:
        self._emit("log", message=message)

    def should_stop(self) -> str | None:
        if self.stop_after and self.last_step >= self.stop_after[0]:
            return self.stop_after[1]
        return None
