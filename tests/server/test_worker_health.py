"""GetSystemHealth's `workers` component through the Envoy gateway, on a private database (the
suite's shared one has other tests' workers and jobs): `ok` while a worker process heartbeats,
`degraded` naming the queue once every worker stopped and a job waits; a killed worker's stale
row is not counted as live."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import psycopg
import pytest

from tests.support import Rest, free_port
from trainforge.core.access.keys import KeyStore
from trainforge.core.db import migrate
from trainforge.core.db.pool import open_pool
from trainforge.core.jobs.store import JobStore
from trainforge.core.registry.artifacts import ArtifactStore
from trainforge.core.registry.store import RegistryStore
from trainforge.core.settings import load_settings
from trainforge.server.envoy_process import EnvoyGateway
from trainforge.server.runner import BackgroundServer
from trainforge.server.service import WorkerGroup, worker_config


@pytest.fixture(scope="module")
def private(postgres_cluster, tmp_path_factory) -> Iterator[tuple]:
    dsn = postgres_cluster.new_database("worker_health")
    migrate.upgrade(dsn)
    data_dir = tmp_path_factory.mktemp("worker-health")
    settings = load_settings(env={}, data_dir=str(data_dir), database_url=dsn, grpc_port=0, db_pool_min=1,
                             db_pool_max=8)

    async def admin_key() -> str:
        pool = await open_pool(dsn, min_size=1, max_size=1)
        try:
            return (await KeyStore(pool).create("health-admin", "admin")).token
        finally:
            await pool.close()

    token = asyncio.run(admin_key())
    with BackgroundServer(settings, dsn) as server:
        envoy = EnvoyGateway(data_dir / "envoy", grpc_address="127.0.0.1", grpc_port=server.port,
                             http_port=free_port(), admin_port=0, max_request_bytes=settings.max_request_bytes)
        envoy.start()
        try:
            yield settings, dsn, Rest(envoy.url, token)
        finally:
            envoy.stop()


class GroupInThread:
    """A WorkerGroup (what `trainforge worker --concurrency 2` runs) on its own event loop."""

    def __init__(self, settings, dsn: str):
        self.settings, self.dsn = settings, dsn
        self.ready, self.done = threading.Event(), threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        pool = await open_pool(self.dsn, min_size=1, max_size=6)
        try:
            registry = RegistryStore(pool, ArtifactStore(self.settings.artifacts_dir), self.settings.models_dir)
            group = WorkerGroup(JobStore(pool), registry, worker_config(self.settings, self.dsn), 2, gpus=["0", "1"])
            group.start()
            await group.heartbeat.beat()  # the first beat is there before the test looks
            self.ready.set()
            await self._stop.wait()
            await group.stop()
        finally:
            await pool.close()
            self.done.set()

    def __enter__(self) -> GroupInThread:
        self._thread.start()
        assert self.ready.wait(60)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        assert self.done.wait(60)


def _health(rest: Rest) -> tuple[dict, dict]:
    reply = rest.get("/api/training/health")
    assert reply.status == 200, reply
    data = reply.body["data"]
    return data, next(c for c in data["components"] if c["name"] == "workers")


def test_health_follows_the_workers_and_the_queue(private):
    settings, dsn, rest = private
    data, component = _health(rest)
    assert data["status"] == "ok" and component["status"] == "ok"  # nothing queued: nothing to serve

    with GroupInThread(settings, dsn):
        data, component = _health(rest)
        assert data["status"] == "ok" and component["status"] == "ok", data
        workers = data["workers"]
        assert int(workers["live_workers"]) == 1
        [process] = workers["processes"]
        assert int(process["concurrency"]) == 2 and process["gpus"] == ["0", "1"]
        assert "1 live worker process(es)" in component["detail"]

    # Every worker stopped (cleanly: its row is gone), and then a job is queued.
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM workers").fetchone()[0] == 0
    asyncio.run(_queue_a_job(dsn))
    data, component = _health(rest)
    assert data["status"] == "degraded" and component["status"] == "degraded", data
    assert "no live worker" in component["detail"] and "1 job(s) queued" in component["detail"]
    assert data["workers"].get("live_workers", 0) == 0 and int(data["workers"]["queued_jobs"]) == 1

    # A worker killed with -9 leaves its row; 15 s without a heartbeat and it no longer counts.
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO workers (id, host, pid, concurrency, last_seen) "
                     "VALUES ('dead:1:abc', 'elsewhere', 1, 4, now() - interval '1 minute')")
    data, component = _health(rest)
    assert component["status"] == "degraded" and data["workers"].get("processes", []) == []


async def _queue_a_job(dsn: str) -> None:
    pool = await open_pool(dsn, min_size=1, max_size=1)
    try:
        await JobStore(pool).create("waiting", {"name": "waiting", "model": "m"}, "k", start=True)
    finally:
        await pool.close()
