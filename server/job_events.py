"""Fans job-event notifications out to WatchJob streams. One LISTEN connection per server process;
each stream waits on an asyncio.Event for its job and then reads the new events from the table,
so a missed notification only delays a stream (it re-reads on a timeout) and never loses events."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import psycopg

from trainforge.core.jobs.store import NOTIFY_CHANNEL

log = logging.getLogger(__name__)


class JobEventBroker:
    def __init__(self, dsn: str):
        self.dsn = dsn
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="job-event-listener")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._wake_all()
                    async for notice in conn.notifies():
                        job_id = notice.payload.split(":", 1)[0]
                        for event in self._waiters.get(job_id, ()):
                            event.set()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - reconnect; streams fall back to their poll timeout
                log.warning("job event listener lost its connection; reconnecting", exc_info=True)
                self._wake_all()
                await asyncio.sleep(1)

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    def subscribe(self, job_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        return event

    def unsubscribe(self, job_id: str, event: asyncio.Event) -> None:
        waiters = self._waiters.get(job_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[job_id]
