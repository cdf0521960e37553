"""Fans job-event notifications out to WatchJob streams. One LISTEN connection per server process;
each stream waits on an asyncio.Event for its job and then reads the new events from the table,
so a missed notification only delays a stream (it re-reads on a timeout) and never loses events."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from trainforge.core.db.listen import listen_forever
from trainforge.core.jobs.store import NOTIFY_CHANNEL


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
        # Woken on (re)connect and on a lost connection: streams re-read, then wait on their timeout.
        await listen_forever(self.dsn, NOTIFY_CHANNEL, self._wake_job, on_connect=self._wake_all,
                             on_lost=self._wake_all)

    def _wake_job(self, payload: str) -> None:
        for event in self._waiters.get(payload.split(":", 1)[0], ()):  # payload: "<job_id>:<seq>"
            event.set()

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
