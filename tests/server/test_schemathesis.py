"""schemathesis against the OpenAPI document the gateway serves (/api/docs/openapi.json), through
Envoy, with an admin key: no generated request — valid or not — may get a 5xx, and every answer
must match the document (status, JSON schema of the body).

Bounded for the default suite: a fixed seed (hypothesis' `derandomize`), a few examples per
operation and no shrinking, ~45 operations in about a minute on 2 busy cores. The full run, with
more examples, is the reliability suite's (benchmarks/reliability.py, `schemathesis` step).

It runs on its own database, data dir, gRPC server and Envoy: the calls are destructive (delete,
cancel, alias changes) and create jobs, which would change what other tests of the session count.
No worker runs, so a CreateJob with `start` only queues a job: nothing trains. No operation is
left out; those this release does not implement (synthetic data) must answer 501 with
gRPC code UNIMPLEMENTED, and only that 5xx is accepted from them."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import Rest, free_port
from trainforge.core.access.keys import KeyStore
from trainforge.core.db import migrate
from trainforge.core.db.pool import open_pool
from trainforge.core.settings import load_settings
from trainforge.server.envoy_process import EnvoyGateway
from trainforge.server.runner import BackgroundServer

pytestmark = [pytest.mark.postgres, pytest.mark.envoy]

EXAMPLES_PER_OPERATION = 4
# Operations whose servicer raises Unimplemented.
UNIMPLEMENTED = {"GenerateSyntheticData"}
GRPC_UNIMPLEMENTED = 12
OPENAPI = Path(__file__).resolve().parents[2] / "gateway" / "openapi.json"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


async def _admin_key(dsn: str) -> str:
    pool = await open_pool(dsn, min_size=1, max_size=2)
    try:
        return (await KeyStore(pool).create("schemathesis", "admin")).token
    finally:
        await pool.close()


@pytest.fixture(scope="module")
def fuzzed_gateway(postgres_cluster):
    """Its own stack: database, data dir, server, Envoy; (base URL, admin key)."""
    dsn = postgres_cluster.new_database("schemathesis")
    migrate.upgrade(dsn)
    data_dir = Path(tempfile.mkdtemp(prefix="trainforge-schemathesis-"))
    config = load_settings(env={}, data_dir=str(data_dir), database_url=dsn, grpc_port=0, db_pool_min=1,
                           db_pool_max=8)
    server = BackgroundServer(config, dsn)
    server.start()
    envoy = EnvoyGateway(data_dir / "envoy", grpc_address="127.0.0.1", grpc_port=server.port,
                         http_port=free_port(), admin_port=0, max_request_bytes=config.max_request_bytes)
    envoy.start()
    try:
        yield envoy.url, asyncio.run(_admin_key(dsn))
    finally:
        envoy.stop()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def target(fuzzed_gateway) -> tuple[str, dict[str, str]]:
    """Base URL and headers; the document the gateway serves is the committed one this module
    generates cases from (checked here, so a stale file cannot hide a served change)."""
    url, token = fuzzed_gateway
    reply = Rest(url, token).get("/api/docs/openapi.json")
    assert reply.status == 200, reply
    assert reply.body == json.loads(OPENAPI.read_text())
    return url, {"Authorization": f"Bearer {token}"}


schema = schemathesis.openapi.from_path(OPENAPI)


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
def test_no_server_error_and_answers_match_the_document(case, target):
    url, headers = target
    response = case.call(base_url=url, headers=headers, timeout=30)
    if case.operation.definition.raw["operationId"] in UNIMPLEMENTED and response.status_code == 501:
        assert response.json()["code"] == GRPC_UNIMPLEMENTED, response.text
        return
    case.validate_response(response, checks=CHECKS, headers=headers)
