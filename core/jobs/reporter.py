"""The training process's line to Postgres: progress, evaluations and checkpoints become job events
(and update the job row), and `should_stop` reads the cancel and pause flags and the worker's
request to checkpoint and hand the job back (release, when the worker shuts down). Every write is
fenced by the attempt number, so a process left over from a worker that lost its lease finds out
on its next report and stops instead of writing over the new attempt.

A lost connection (PostgreSQL restarted or failed over, a backend terminated) is not the job's
failure: each write reconnects and is retried for up to RECONNECT_SECONDS. Every write is one
transaction, so a retry after a failure before COMMIT cannot duplicate it; only a connection lost
between the server's COMMIT and its acknowledgement (a window of microseconds) could."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from trainforge.core.jobs import models as m
from trainforge.core.jobs.store import APPEND_EVENT_SQL, NOTIFY_CHANNEL

log = logging.getLogger(__name__)
T = TypeVar("T")

PROGRESS_EVERY_SECONDS = 1.0  # progress is rate-limited; evaluations, checkpoints and the last step never are
CHECK_FLAGS_EVERY_SECONDS = 1.0
# `pg_ctl restart -m fast` of a small cluster takes 1-2 s on 2 busy cores; a failover or a restart
# after a crash (WAL replay) takes longer. The worker's lease (30 s by default) bounds it anyway:
# past it another worker owns the job and this process's next write is fenced off.
RECONNECT_SECONDS = 60.0
RECONNECT_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0)


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics that JSON can hold: a DeepSpeed ZeRO-0 step reports no gradient norm
    (NaN in the recipe), and PostgreSQL's jsonb refuses NaN, which failed the whole job."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}


class LeaseLost(RuntimeError):
    """Another worker owns the job now."""


class PostgresReporter:
    def __init__(self, job_id: str = "", dsn: str = "", attempt: int | None = None):
        self.job_id = job_id or os.environ["TRAINFORGE_JOB_ID"]
        self.attempt = attempt if attempt is not None else int(os.environ["TRAINFORGE_JOB_ATTEMPT"])
        self.dsn = dsn or os.environ["TRAINFORGE_DATABASE_URL"]
        self.conn = psycopg.connect(self.dsn, autocommit=True)
        self.started = time.monotonic()
        self.start_step: int | None = None
        self._last_progress = 0.0
        self._last_flags = 0.0
        self._flags: str | None = None

    def _retrying(self, write: Callable[[], T]) -> T:
        """write() on a live connection: on a lost one, reconnect (with backoff) and write again."""
        deadline = time.monotonic() + RECONNECT_SECONDS
        tries = 0
        while True:
            try:
                if self.conn.closed:
                    self.conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
                return write()
            except psycopg.OperationalError as exc:
                if time.monotonic() >= deadline:
                    raise
                if not self.conn.closed:
                    self.conn.close()
                delay = RECONNECT_BACKOFF_SECONDS[min(tries, len(RECONNECT_BACKOFF_SECONDS) - 1)]
                log.warning("job %s: lost the database connection (%s); reconnecting in %.1f s", self.job_id,
                            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, delay)
                tries += 1
                time.sleep(delay)

    def _event(self, type_: str, message: str = "", progress: dict | None = None, metrics: dict | None = None) -> None:
        self._retrying(lambda: self._append(type_, message, progress, metrics))

    def _append(self, type_: str, message: str, progress: dict | None, metrics: dict | None) -> None:
        with self.conn.transaction():
            row = self.conn.execute(APPEND_EVENT_SQL, {
                "job_id": self.job_id, "attempt": self.attempt, "type": type_, "message": message,
                "progress": Jsonb(progress or {}), "metrics": Jsonb(metrics or {})}).fetchone()
            if row is None:
                raise LeaseLost(f"job {self.job_id} attempt {self.attempt} no longer owns the job")
            self.conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, f"{self.job_id}:{row[0]}"))

    def _update(self, assignments: str, params: tuple) -> None:
        self._retrying(lambda: self._update_row(assignments, params))

    def _update_row(self, assignments: str, params: tuple) -> None:
        cur = self.conn.execute(f"UPDATE jobs SET {assignments}, update_time = now() WHERE id = %s AND attempt = %s",
                                (*params, self.job_id, self.attempt))
        if cur.rowcount == 0:
            raise LeaseLost(f"job {self.job_id} attempt {self.attempt} no longer owns the job")

    def progress(self, step: int, total_steps: int, epoch: int, total_epochs: int, metrics: dict[str, Any]) -> None:
        now = time.monotonic()
        if self.start_step is None:
            self.start_step = step - 1
        if now - self._last_progress < PROGRESS_EVERY_SECONDS and step < total_steps:
            # The job row and the event log follow at most once a second: a write per step cost
            # ~1.2 ms of a 160 ms step on 2 cores (benchmarks/training_cpu.py), for nobody.
            return
        self._last_progress = now
        done = step - self.start_step
        remaining_ms = (now - self.started) / done * (total_steps - step) * 1000 if done > 0 else 0.0
        progress = {"current_epoch": epoch, "total_epochs": total_epochs, "current_step": step,
                    "total_steps": total_steps, "percent": round(100.0 * step / total_steps, 2) if total_steps else 0.0,
                    "estimated_remaining": round(remaining_ms, 1)}
        clean = _finite(metrics)
        self._update("progress = %s, metrics = metrics || %s", (Jsonb(progress), Jsonb(clean)))
        self._event(m.PROGRESS, f"step {step}/{total_steps}", progress, clean)

    def evaluation(self, step: int, metrics: dict[str, Any]) -> None:
        clean = _finite(metrics)
        self._update("metrics = metrics || %s", (Jsonb(clean),))
        self._event(m.EVALUATION, f"evaluation at step {step}", metrics=clean)

    def checkpoint(self, step: int, epoch: int, path: str, metrics: dict[str, Any], is_best: bool) -> None:
        size = sum(f.stat().st_size for f in _walk(path))
        clean = _finite(metrics)
        self._retrying(lambda: self._record_checkpoint(step, epoch, path, size, clean, is_best))
        self._event(m.CHECKPOINT, f"checkpoint at step {step}", metrics=clean)

    def _record_checkpoint(self, step: int, epoch: int, path: str, size: int, clean: dict, is_best: bool) -> None:
        with self.conn.transaction():
            self.conn.execute(
                "INSERT INTO job_checkpoints (job_id, step, epoch, path, size_bytes, metrics, is_best) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (job_id, step) DO UPDATE SET path = EXCLUDED.path, "
                "size_bytes = EXCLUDED.size_bytes, metrics = EXCLUDED.metrics, is_best = EXCLUDED.is_best",
                (self.job_id, step, epoch, str(path), size, Jsonb(clean), is_best))
            if is_best:  # one best checkpoint: the one at the best evaluation so far
                self.conn.execute("UPDATE job_checkpoints SET is_best = false WHERE job_id = %s AND step <> %s "
                                  "AND is_best", (self.job_id, step))
            self._update_row("last_checkpoint = %s", (str(path),))

    def checkpoints_removed(self, steps: list[int]) -> None:
        """Drops the rows of checkpoints whose folders retention is about to delete, fenced by the
        attempt like every write: a process that lost its lease deletes neither rows nor folders."""
        self._retrying(lambda: self._remove_checkpoints(steps))

    def _remove_checkpoints(self, steps: list[int]) -> None:
        with self.conn.transaction():
            row = self.conn.execute("SELECT attempt FROM jobs WHERE id = %s FOR UPDATE", (self.job_id,)).fetchone()
            if row is None or row[0] != self.attempt:
                raise LeaseLost(f"job {self.job_id} attempt {self.attempt} no longer owns the job")
            self.conn.execute("DELETE FROM job_checkpoints WHERE job_id = %s AND step = ANY(%s)",
                              (self.job_id, list(steps)))

    def log(self, message: str) -> None:
        self._event(m.LOG, message[:4000])

    def should_stop(self) -> str | None:
        now = time.monotonic()
        if now - self._last_flags >= CHECK_FLAGS_EVERY_SECONDS:
            self._last_flags = now
            row = self._retrying(lambda: self.conn.execute(
                "SELECT cancel_requested, pause_requested, attempt, release_requested FROM jobs WHERE id = %s",
                (self.job_id,)).fetchone())
            if row is None or row[2] != self.attempt:
                raise LeaseLost(f"job {self.job_id} attempt {self.attempt} no longer owns the job")
            # A user's cancel or pause wins over the worker's shutdown (release).
            self._flags = "cancel" if row[0] else "pause" if row[1] else "release" if row[3] else None
        return self._flags

    def close(self) -> None:
        self.conn.close()


def _walk(path: str):
    from pathlib import Path

    root = Path(path)
    if root.is_file():
        yield root
    elif root.exists():
        yield from (p for p in root.rglob("*") if p.is_file())
