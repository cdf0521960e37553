"""Session fixtures: one private PostgreSQL cluster, one migrated database, one gRPC server and
one Envoy gateway in front of it — all real processes, started once for the suite."""

from __future__ import annotations

import os

import torch

# Triton kernels run through the interpreter where there is no CUDA device; this must be set before
# anything imports triton (tests/kernels/conftest.py checks it).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from tests.pg_fixtures import postgres_cluster  # noqa: F401  (session fixture)
from tests.support import Rest, authed, free_port
from trainforge.core.access.keys import ROLES, KeyStore
from trainforge.core.db import migrate
from trainforge.core.db.pool import open_pool
from trainforge.core.settings import Settings, load_settings
from trainforge.server.envoy_process import EnvoyGateway
from trainforge.server.runner import BackgroundServer
from trainforge.v1 import deploy_pb2_grpc, registry_pb2_grpc, training_pb2_grpc


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="trainforge-test-data-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(postgres_cluster) -> str:  # noqa: F811
    dsn = postgres_cluster.new_database("trainforge_suite")
    migrate.upgrade(dsn)
    return dsn


@pytest.fixture(scope="session")
def settings(data_dir: Path, database_url: str) -> Settings:
    return load_settings(env={}, data_dir=str(data_dir), database_url=database_url, grpc_port=0,
                         db_pool_min=2, db_pool_max=80)


@pytest.fixture(scope="session")
def grpc_server(settings: Settings, database_url: str) -> Iterator[BackgroundServer]:
    server = BackgroundServer(settings, database_url)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def api_keys(database_url: str) -> dict[str, str]:
    """Bearer tokens by name: one per role, plus a revoked and an expired key."""

    async def make() -> dict[str, str]:
        pool = await open_pool(database_url, min_size=1, max_size=2)
        try:
            keys = KeyStore(pool)
            tokens = {role: (await keys.create(f"test-{role}", role)).token for role in ROLES}
            revoked = await keys.create("test-revoked", "admin")
            await keys.revoke(revoked.key.key_id)
            expired = await keys.create("test-expired", "admin", expires_in=timedelta(microseconds=1))
            return {**tokens, "revoked": revoked.token, "expired": expired.token}
        finally:
            await pool.close()

    return asyncio.run(make())


@pytest.fixture(scope="session")
def raw_channel(grpc_server: BackgroundServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield channel


@pytest.fixture(scope="session")
def grpc_channel(raw_channel: grpc.Channel, api_keys: dict[str, str]) -> grpc.Channel:
    """A channel that sends the admin key with every call."""
    return authed(raw_channel, api_keys["admin"])


@pytest.fixture(scope="session")
def registry(grpc_channel: grpc.Channel) -> registry_pb2_grpc.RegistryServiceStub:
    return registry_pb2_grpc.RegistryServiceStub(grpc_channel)


@pytest.fixture(scope="session")
def training(grpc_channel: grpc.Channel) -> training_pb2_grpc.TrainingServiceStub:
    return training_pb2_grpc.TrainingServiceStub(grpc_channel)


@pytest.fixture(scope="session")
def deploy(grpc_channel: grpc.Channel) -> deploy_pb2_grpc.DeployServiceStub:
    return deploy_pb2_grpc.DeployServiceStub(grpc_channel)


@pytest.fixture(scope="session")
def gateway(grpc_server: BackgroundServer, data_dir: Path, settings: Settings) -> Iterator[EnvoyGateway]:
    envoy = EnvoyGateway(data_dir / "envoy", grpc_address="127.0.0.1", grpc_port=grpc_server.port,
                         http_port=free_port(), admin_port=0, max_request_bytes=settings.max_request_bytes)
    envoy.start()
    yield envoy
    envoy.stop()


@pytest.fixture(scope="session")
def rest(gateway: EnvoyGateway, api_keys: dict[str, str]) -> Rest:
    """REST through Envoy with the admin key; `rest.with_token(...)` for another key or none."""
    return Rest(gateway.url, api_keys["admin"])


@pytest.fixture
def models_root(settings: Settings) -> Path:
    return settings.models_dir
