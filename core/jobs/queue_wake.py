"""Wakes idle workers when a job is queued, instead of leaving them to their next poll.

Every event whose job is QUEUED after it (created with start, started, resumed, handed back by
a stopping worker) also NOTIFYs QUEUE_CHANNEL, in the same transaction (core.jobs.store). An idle
worker waits on that or on its poll interval, whichever comes first: the poll stays as the safety
net for a missed notification or a lost LISTEN connection, which this module re-opens after a pause.
"""

from __future__ import annotations

import asyncio

from trainforge.core.db.listen import listen_forever

QUEUE_CHANNEL = "trainforge_job_queue"
RECONNECT_SECONDS = 5.0


class QueueWake:
    """`wait(stop, timeout)` returns when a job was queued, `stop` is set, or `timeout` passed."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self._queued = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="trainforge-queue-wake")

    async def _listen(self) -> None:
        # On (re)connect, anything queued while not listening is looked for once.
        await listen_forever(self.dsn, QUEUE_CHANNEL, lambda _: self._queued.set(), on_connect=self._queued.set,
                             retry_seconds=RECONNECT_SECONDS)

    async def wait(self, stop: asyncio.Event, timeout: float) -> None:
        queued = asyncio.ensure_future(self._queued.wait())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({queued, stopping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            queued.cancel()
            stopping.cancel()
        self._queued.clear()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
