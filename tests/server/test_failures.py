"""When something unexpected breaks (here: the database pool is gone), clients get INTERNAL with a
request id and no internals; health says degraded; the log has the traceback."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from grpc import aio
from grpc_status import rpc_status

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
