"""Which worker processes are alive, and what waits for them: each process that runs training workers
(`trainforge serve` with workers above 0, `trainforge worker`) upserts one row of `workers` every
HEARTBEAT_SECONDS, busy or idle, and deletes it when it stops cleanly. GetSystemHealth reads the
live rows with the queue's depth and age (`WorkerDirectory.report`): queued jobs and no live worker
means nothing will run them."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
# Live: seen within three heartbeats, so one slow heartbeat (a busy database) never reads as dead.
LIVE_SECONDS = 3 * HEARTBEAT_SECONDS
# Rows of processes that died without cleaning up are kept this long for the operator, then deleted.
FORGET_SECONDS = 3600.0


@dataclass(frozen=True)
class WorkerProcess:
    worker_id: str
    host: str
    pid: int
    concurrency: int
    running_jobs: int
    gpus: tuple[str, ...]
    start_time: datetime
    last_seen: datetime


@dataclass(frozen=True)
class WorkersReport:
    live: list[WorkerProcess]
    queued_jobs: int
    oldest_queued_seconds: float

    @property
    def degraded(self) -> bool:
        """Jobs wait and no worker is alive to run them."""
        return self.queued_jobs > 0 and not self.live

    def detail(self) -> str:
        queue = (f"{self.queued_jobs} job(s) queued, the oldest for {self.oldest_queued_seconds:.0f} s"
                 if self.queued_jobs else "no job queued")
        if self.degraded:
            return (f"no live worker and {queue}: start `trainforge worker`, or `trainforge serve` with "
                    "workers above 0")
        running = sum(w.running_jobs for w in self.live)
        slots = sum(w.concurrency for w in self.live)
        return f"{len(self.live)} live worker process(es), {running} of {slots} job slot(s) busy; {queue}"


class WorkerDirectory:
    """The `workers` table: heartbeats in, health report out."""

    def __init__(self, pool: AsyncConnectionPool):
        self.pool = pool

    async def beat(self, process_id: str, *, host: str, pid: int, concurrency: int, gpus: Sequence[str],
                   worker_ids: Sequence[str]) -> None:
        """Upserts the process's row; its running jobs are counted from the jobs its workers hold."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO workers (id, host, pid, concurrency, gpus, running_jobs) "
                "VALUES (%(id)s, %(host)s, %(pid)s, %(concurrency)s, %(gpus)s, "
                "        (SELECT count(*) FROM jobs WHERE state = 'RUNNING' AND worker_id = ANY(%(workers)s))) "
                "ON CONFLICT (id) DO UPDATE SET last_seen = now(), concurrency = EXCLUDED.concurrency, "
                "gpus = EXCLUDED.gpus, running_jobs = EXCLUDED.running_jobs",
                {"id": process_id, "host": host, "pid": pid, "concurrency": concurrency, "gpus": list(gpus),
                 "workers": list(worker_ids)})
            await conn.execute("DELETE FROM workers WHERE last_seen < now() - make_interval(secs => %s)",
                               (FORGET_SECONDS,))

    async def remove(self, process_id: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("DELETE FROM workers WHERE id = %s", (process_id,))

    async def report(self, live_seconds: float = LIVE_SECONDS, timeout: float = 5.0) -> WorkersReport:
        async with self.pool.connection(timeout=timeout) as conn:
            cur = await conn.execute(
                "SELECT id, host, pid, concurrency, running_jobs, gpus, start_time, last_seen FROM workers "
                "WHERE last_seen >= now() - make_interval(secs => %s) ORDER BY start_time, id", (live_seconds,))
            live = [WorkerProcess(worker_id=r["id"], host=r["host"], pid=r["pid"], concurrency=r["concurrency"],
                                  running_jobs=r["running_jobs"], gpus=tuple(r["gpus"]), start_time=r["start_time"],
                                  last_seen=r["last_seen"]) for r in await cur.fetchall()]
            cur = await conn.execute(
                "SELECT count(*) AS queued, "
                "       COALESCE(EXTRACT(EPOCH FROM now() - min(COALESCE(queue_time, create_time))), 0) AS oldest "
                "FROM jobs WHERE state = 'QUEUED'")
            row = await cur.fetchone()
        return WorkersReport(live=live, queued_jobs=int(row["queued"]), oldest_queued_seconds=float(row["oldest"]))


class WorkerHeartbeat:
    """The heartbeat of one worker process, as an asyncio task beside its workers."""

    def __init__(self, directory: WorkerDirectory, *, concurrency: int, gpus: Sequence[str],
                 worker_ids: Sequence[str], interval: float = HEARTBEAT_SECONDS):
        self.directory = directory
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.concurrency, self.gpus, self.worker_ids = concurrency, tuple(gpus), tuple(worker_ids)
        self.interval = interval

    async def beat(self) -> None:
        await self.directory.beat(self.process_id, host=socket.gethostname(), pid=os.getpid(),
                                  concurrency=self.concurrency, gpus=self.gpus, worker_ids=self.worker_ids)

    async def run(self, stop: asyncio.Event) -> None:
        """Beats until `stop`, then removes the row (a clean shutdown is not a dead worker)."""
        try:
            while not stop.is_set():
                try:
                    await self.beat()
                except Exception:  # noqa: BLE001 - a missed beat (database restarting) is retried next time
                    log.warning("worker heartbeat failed; retrying in %.0f s", self.interval, exc_info=True)
                try:
                    await asyncio.wait_for(stop.wait(), self.interval)
                except TimeoutError:
                    pass
        finally:
            try:
                await self.directory.remove(self.process_id)
            except Exception:  # noqa: BLE001 - the row goes stale and health stops counting it in 15 s
                log.warning("could not remove this worker's heartbeat row", exc_info=True)
