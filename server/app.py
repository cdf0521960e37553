"""Wiring: builds the gRPC server from settings and dependencies. `create_server` binds the port
(0 picks a free one) and returns it, so tests and `trainforge serve` start servers the same way.
With TLS in the settings the port serves TLS only; the gateway then gets a plaintext port of its
own on loopback (`gateway_port`), so Envoy needs no client certificate and the server can believe
the client address Envoy forwards (server.interceptors)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from psycopg_pool import AsyncConnectionPool

from trainforge.core.access.audit import AuditLog
from trainforge.core.access.keys import KeyStore
from trainforge.core.compression.compress_version import VersionCompressor
from trainforge.core.db.pool import open_pool
from trainforge.core.deploy.store import DeploymentStore
from trainforge.core.deploy.target_factory import target_config
from trainforge.core.jobs.evaluation import ModelEvaluator
from trainforge.core.jobs.job_files import JobFiles
from trainforge.core.jobs.spec import JobSpecPreparer
from trainforge.core.jobs.store import JobStore
from trainforge.core.registry.artifacts import ArtifactStore
from trainforge.core.registry.store import RegistryStore
from trainforge.core.settings import Settings
from trainforge.server.auth import Authorizer
from trainforge.server.body_check_service import BodyCheckService
from trainforge.server.body_fields import BodySchema
from trainforge.server.deploy_service import DeployService
from trainforge.server.interceptors import RpcInterceptor
from trainforge.server.job_events import JobEventBroker
from trainforge.server.registry_service import RegistryService
from trainforge.server.serving_auth import ServingKeyCheck
from trainforge.server.training_service import TrainingService
from trainforge.v1 import deploy_pb2, deploy_pb2_grpc, registry_pb2, registry_pb2_grpc, training_pb2, training_pb2_grpc

SERVICE_NAMES = (
    training_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name,
    registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name,
    deploy_pb2.DESCRIPTOR.services_by_name["DeployService"].full_name,
)


@dataclass
class Deps:
    """What the servicers need; built once per process by `open_deps`."""

    pool: AsyncConnectionPool
    registry: RegistryStore
    keys: KeyStore
    audit: AuditLog
    authorizer: Authorizer
    jobs: JobStore
    broker: JobEventBroker
    preparer: JobSpecPreparer

    async def close(self) -> None:
        await self.broker.close()
        await self.authorizer.close()
        await self.pool.close()


async def open_deps(settings: Settings, dsn: str) -> Deps:
    settings.ensure_dirs()
    pool = await open_pool(dsn, min_size=settings.db_pool_min, max_size=settings.db_pool_max)
    registry = RegistryStore(pool, ArtifactStore(settings.artifacts_dir), settings.models_dir)
    keys, audit = KeyStore(pool), AuditLog(pool)
    authorizer = Authorizer(keys, audit, enabled=settings.auth_enabled)
    await authorizer.start(dsn)
    broker = JobEventBroker(dsn)
    await broker.start()
    return Deps(pool=pool, registry=registry, keys=keys, audit=audit, authorizer=authorizer,
                jobs=JobStore(pool, max_active_per_key=settings.max_active_jobs_per_key), broker=broker,
                preparer=JobSpecPreparer(settings.data_dir_root, settings.models_dir, settings.max_dataset_bytes,
                                         registry, config_root=settings.configs_dir))


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' files (validated when the settings were loaded), or None."""
    tls = settings.tls
    if tls is None:
        return None
    client_ca = tls.client_ca_file.read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials([(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
                                       root_certificates=client_ca, require_client_auth=client_ca is not None)


async def create_server(settings: Settings, deps: Deps, *, gateway_port: int | None = None) -> tuple[aio.Server, int]:
    server = aio.server(
        interceptors=[RpcInterceptor(deps.authorizer)],
        options=[
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ],
    )
    evaluator = ModelEvaluator(deps.registry, settings.data_dir_root)
    training_pb2_grpc.add_TrainingServiceServicer_to_server(
        TrainingService(deps.registry, deps.jobs, deps.broker, deps.preparer, evaluator, started=time.monotonic(),
                        job_files=JobFiles(deps.pool, settings.jobs_dir)),
        server)
    compressor = VersionCompressor(deps.registry, settings.data_dir_root)
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(RegistryService(deps.registry, compressor, deps.jobs),
                                                            server)
    deploy_pb2_grpc.add_DeployServiceServicer_to_server(
        DeployService(DeploymentStore(deps.pool, deps.jobs), deps.registry, target_config(settings)), server)
    # The gateway's body check: REST body keys the transcoder would drop (server.body_fields).
    schema = BodySchema([training_pb2.DESCRIPTOR.services_by_name["TrainingService"],
                         registry_pb2.DESCRIPTOR.services_by_name["RegistryService"],
                         deploy_pb2.DESCRIPTOR.services_by_name["DeployService"]])
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        BodyCheckService(schema, ServingKeyCheck(deps.authorizer)), server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    address = f"{settings.grpc_host}:{settings.grpc_port}"
    credentials = server_credentials(settings)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind gRPC to {address}")
    if gateway_port is not None and server.add_insecure_port(f"127.0.0.1:{gateway_port}") == 0:
        raise OSError(f"could not bind the gateway's gRPC port 127.0.0.1:{gateway_port}")
    await server.start()
    return server, port


async def stop_server(server: aio.Server, grace: float = 5.0) -> None:
    """Graceful: refuse new calls, let running ones finish for `grace` seconds, then cancel."""
    await server.stop(grace)


__all__ = ["Deps", "SERVICE_NAMES", "create_server", "open_deps", "server_credentials", "stop_server"]
