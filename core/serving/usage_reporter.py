"""Moves the inference server's request counts, errors, latencies and generated tokens into the
registry's usage statistics (RegistryStore.record_usage): batched every few seconds, once more on
exit. The database being away never fails a request: records wait in memory (bounded) and go with
the next flush that succeeds."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from trainforge.core.registry.store import MAX_LATENCY_SAMPLES

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 5.0
# The flush on exit gets this long (the pool's own connect timeout is 30 s): a rollout waits for
# the old server to exit, and an unreachable database must not hold it.
FINAL_FLUSH_TIMEOUT_S = 10.0
# Records kept while the database is unreachable: 100,000 x ~60 bytes is 6 MB, ~1.5 h at 20 req/s.
MAX_PENDING = 100_000


@dataclass(frozen=True)
class UsageRecord:
    latency_ms: float
    error: bool
    tokens: int


class UsageReporter:
    def __init__(self, dsn: str, model_version_id: str, *, interval_s: float = FLUSH_INTERVAL_S):
        self.dsn = dsn
        self.model_version_id = model_version_id
        self.interval_s = interval_s
        self.pending: deque[UsageRecord] = deque(maxlen=MAX_PENDING)
        self.flushed = 0
        self._pool = None
        self._store = None
        self._target: tuple[str, str] | None = None  # (model_id, version) of the version id
        self._task: asyncio.Task | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._warned = False

    def record(self, latency_ms: float, error: bool, tokens: int) -> None:
        self.pending.append(UsageRecord(max(0.0, latency_ms), error, max(0, tokens)))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-flush")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    async def _open(self) -> None:
        if self._store is not None:
            return
        from trainforge.core.db.pool import open_pool
        from trainforge.core.registry.artifacts import ArtifactStore
        from trainforge.core.registry.store import RegistryStore

        self._pool = await open_pool(self.dsn, min_size=1, max_size=1)
        # record_usage reads and writes rows only; the store's constructor still wants an artifact
        # root (it creates folders in it), so it gets an empty private one.
        self._scratch = tempfile.TemporaryDirectory(prefix="trainforge-serving-usage-")
        scratch = Path(self._scratch.name)
        self._store = RegistryStore(self._pool, ArtifactStore(scratch / "artifacts"), scratch)

    async def _resolve(self) -> tuple[str, str]:
        if self._target is None:
            found = await self._store.resolve_version(self.model_version_id, "model_version_id")
            self._target = (found.model_id, found.version)
        return self._target

    async def flush(self) -> int:
        """Sends what is pending; returns how many records went. Failures are logged (once until
        the next success) and the records stay pending."""
        sent = 0
        try:
            if not self.pending:
                return 0
            await self._open()
            model_id, version = await self._resolve()
            while self.pending:
                batch = [self.pending.popleft() for _ in range(min(len(self.pending), MAX_LATENCY_SAMPLES))]
                try:
                    await self._store.record_usage(model_id, version, len(batch), sum(r.error for r in batch),
                                                   [r.latency_ms for r in batch], sum(r.tokens for r in batch))
                except BaseException:
                    self.pending.extendleft(reversed(batch))
                    raise
                sent += len(batch)
            self.flushed += sent
            self._warned = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - usage must never take the server down
            if not self._warned:
                log.warning("usage statistics for model version %s not recorded yet (%d pending): %s",
                            self.model_version_id, len(self.pending), exc)
                self._warned = True
        return sent

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        try:
            await asyncio.wait_for(self.flush(), FINAL_FLUSH_TIMEOUT_S)
        except TimeoutError:
            log.warning("usage statistics: %d records not recorded (database did not answer in %.0f s)",
                        len(self.pending), FINAL_FLUSH_TIMEOUT_S)
        if self._pool is not None:
            await self._pool.close()
        if self._scratch is not None:
            self._scratch.cleanup()
