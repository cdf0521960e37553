"""Usage statistics from a running inference server reach the registry in a real PostgreSQL:
requests, errors (a 503 while loading), latencies and generated tokens, flushed periodically and
once more when SIGTERM ends the process."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.serving.server_process import ServerProcess
from tests.serving.test_openai_server import CHAT, HELLO, NAME
from trainforge.core.db import migrate
from trainforge.core.db.pool import open_pool
from trainforge.core.registry.artifacts import ArtifactStore
from trainforge.core.registry.models import NewVersion, UsageStats
from trainforge.core.registry.store import RegistryStore

pytestmark = pytest.mark.postgres


async def _with_store(dsn: str, root, call):
    pool = await open_pool(dsn, min_size=1, max_size=2)
    try:
        return await call(RegistryStore(pool, ArtifactStore(root / "artifacts"), root))
    finally:
        await pool.close()


def test_usage_is_flushed_while_serving_and_on_exit(postgres_cluster, tiny_model, tmp_path):
    dsn = postgres_cluster.new_database("serving_usage")
    migrate.upgrade(dsn)
    version = asyncio.run(_with_store(dsn, tmp_path, lambda s: s.register(NewVersion(name="served", version="1.0"))))

    def usage() -> UsageStats:
        return asyncio.run(_with_store(dsn, tmp_path, lambda s: s.get_usage("served", "1.0")))

    # The flush interval is 2 s, so the request sent just before SIGTERM can only reach the
    # registry through the flush on exit.
    server = ServerProcess("transformers", tiny_model, NAME, "--usage-dsn", dsn,
                           "--model-version-id", version.model_version_id, "--usage-interval", "2").start()
    try:
        loading = server.post(CHAT, {"messages": HELLO, "max_tokens": 2})
        assert loading.status == 503  # counted as an error: the model was not there to answer
        server.wait_healthy()
        tokens = 0
        for _ in range(2):
            answer = server.post(CHAT, {"messages": HELLO, "max_tokens": 4, "temperature": 0})
            assert answer.status == 200, answer
            tokens += answer.body["usage"]["completion_tokens"]
        assert server.post(CHAT, {"messages": "nope"}).status == 400  # a request, not a server error

        deadline = time.monotonic() + 30
        while (stats := usage()).request_count < 4:
            assert time.monotonic() < deadline, (stats, server.log())
            time.sleep(0.25)
        assert stats.request_count == 4 and stats.error_count == 1
        assert stats.tokens_generated == tokens == 8
        assert stats.latency_p50_ms > 0 and stats.latency_mean_ms > 0

        last = server.post("/v1/completions", {"prompt": "hello world", "max_tokens": 3, "temperature": 0})
        assert last.status == 200
        assert server.stop() == 0, server.log()
    finally:
        server.stop()
    final = usage()
    assert final.request_count == 5 and final.error_count == 1
    assert final.tokens_generated == 11
    assert "not recorded" not in server.log()
