"""When something unexpected breaks (here: the database pool is gone), clients get INTERNAL with a
request id and no internals; health says degraded; the log has the traceback."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc import aio
from grpc_status import rpc_status

from trainforge.core.db import migrate
from trainforge.core.settings import load_settings
from trainforge.server.app import create_server, open_deps, stop_server
from trainforge.v1 import registry_pb2, registry_pb2_grpc, training_pb2, training_pb2_grpc


@pytest.fixture
def broken_server(settings, database_url):
    async def start():
        deps = await open_deps(settings, database_url)
        server, port = await create_server(settings, deps)
        await deps.pool.close()  # the database "goes away" under a running server
        return server, port, deps

    loop = asyncio.new_event_loop()
    server, port, deps = loop.run_until_complete(start())
    yield loop, port
    loop.run_until_complete(stop_server(server, grace=1))
    loop.run_until_complete(deps.authorizer.close())
    loop.close()


def test_unexpected_error_is_internal_without_details(broken_server, caplog, api_keys):
    loop, port = broken_server

    async def call():
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            registry = registry_pb2_grpc.RegistryServiceStub(channel)
            with pytest.raises(aio.AioRpcError) as info:
                await registry.GetModel(registry_pb2.GetModelRequest(model_id="anything"),
                                        metadata=(("x-request-id", "req-42"),
                                                  ("authorization", f"Bearer {api_keys['viewer']}")))
            health = await training_pb2_grpc.TrainingServiceStub(channel).GetSystemHealth(
                training_pb2.GetSystemHealthRequest())
            return info.value, health

    with caplog.at_level(logging.ERROR, logger="trainforge.rpc"):
        err, health = loop.run_until_complete(call())
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "req-42" in err.details()
    assert "pool" not in err.details().lower() and "Traceback" not in err.details()
    status = rpc_status.from_call(err)
    assert status is not None and status.code == grpc.StatusCode.INTERNAL.value[0]
    assert health.data.status == "degraded"
    assert any(r.exc_info for r in caplog.records), "the traceback belongs in the server log"


@pytest.fixture
def restartable_server(postgres_cluster):
    """A server on its own database, so that its connections can be terminated without touching
    the suite's server; API keys off (its own database has none)."""
    dsn = postgres_cluster.new_database("database_unavailable")
    migrate.upgrade(dsn)
    data_dir = Path(tempfile.mkdtemp(prefix="trainforge-unavailable-"))
    config = load_settings(env={}, data_dir=str(data_dir), database_url=dsn, grpc_port=0, db_pool_min=4,
                           db_pool_max=4, auth_enabled=False)

    async def start():
        deps = await open_deps(config, dsn)
        server, port = await create_server(config, deps)
        return server, port, deps

    loop = asyncio.new_event_loop()
    server, port, deps = loop.run_until_complete(start())
    yield loop, port, dsn
    loop.run_until_complete(stop_server(server, grace=1))
    loop.run_until_complete(deps.close())
    loop.close()
    shutil.rmtree(data_dir, ignore_errors=True)


def test_lost_database_connections_are_unavailable_then_recover(restartable_server):
    """What `pg_ctl restart` does to a running server: every pooled connection is terminated. The
    calls that meet a dead connection answer UNAVAILABLE (retryable; they were INTERNAL, a 500
    through the gateway), and the pool's fresh connections serve the next ones."""
    loop, port, dsn = restartable_server

    async def calls(count: int) -> list[grpc.StatusCode]:
        codes = []
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            registry = registry_pb2_grpc.RegistryServiceStub(channel)
            for _ in range(count):
                try:
                    await registry.GetModel(registry_pb2.GetModelRequest(model_id="absent"))
                except aio.AioRpcError as err:
                    codes.append(err.code())
        return codes

    assert loop.run_until_complete(calls(4)) == [grpc.StatusCode.NOT_FOUND] * 4
    with psycopg.connect(dsn, autocommit=True) as admin:
        killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
    assert killed >= 1
    codes = loop.run_until_complete(calls(12))
    assert grpc.StatusCode.INTERNAL not in codes, codes
    assert set(codes) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND}, codes
    assert codes[-1] == grpc.StatusCode.NOT_FOUND, codes  # recovered without a restart
