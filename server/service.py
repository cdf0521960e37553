"""The whole service as one unit: database (the embedded cluster or DATABASE_URL), migrations, the
gRPC server, the Envoy gateway and the Prometheus endpoint, started in that order and stopped in
the reverse one. `trainforge serve` runs it until a signal; `trainforge demo` runs it around a
scripted REST session. Both go through `Service.run`, so the demo exercises what serve starts."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import prometheus_client
from psycopg import conninfo

from trainforge.core.db import migrate
from trainforge.core.db.embedded import EmbeddedPostgres
from trainforge.core.errors import FailedPrecondition, Unavailable
from trainforge.core.settings import Settings
from trainforge.server.envoy_process import EnvoyGateway
from trainforge.server.runner import serve_until

log = logging.getLogger(__name__)

# Envoy dials the gRPC server; a wildcard bind address is not something one can dial.
_WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


@dataclass(frozen=True)
class Endpoints:
    """Where a running service can be reached, for the banner and for the demo's client."""

    grpc_address: str
    http_url: str
    metrics_url: str | None
    database: str  # for people: the embedded cluster's directory, or the URL with its password masked
    # For in-process callers (the demo mints its API key with it); never printed.
    dsn: str = field(default="", repr=False)

    @property
    def rest_url(self) -> str:
        return f"{self.http_url}/api/training"

    @property
    def docs_url(self) -> str:
        return f"{self.http_url}/api/docs"


def embedded_postgres_dir(settings: Settings) -> Path:
    return settings.data_dir / "postgres"


@contextmanager
def embedded_cluster_lock(settings: Settings) -> Iterator[None]:
    """Holds data_dir/.trainforge.lock while a process uses the embedded cluster.

    EmbeddedPostgres restarts a cluster it finds running, which is right after a crash (the
    cluster outlives a killed trainforge in its own session) and wrong when another live
    `serve`, `demo` or `db upgrade` owns it: that one would lose its database. The kernel drops an
    flock when its holder dies, so a crash leaves nothing to clean up.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / ".trainforge.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FailedPrecondition(
                f"another trainforge process is using the embedded database in {settings.data_dir} "
                f"(it holds {path}); stop it or pass another --data-dir",
                reason="DATA_DIR_IN_USE", metadata={"data_dir": str(settings.data_dir)}) from None
        yield
    finally:
        os.close(fd)


def mask_password(dsn: str) -> str:
    """The DSN with any password replaced by `***`, in URL form (`user:pw@`, `?password=`) and in
    key/value form (`password=...`)."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            if ":" in userinfo:
                netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
        query = re.sub(r"(?i)(^|&)password=[^&]*", r"\1password=***", parts.query)
        masked = urlunsplit(parts._replace(netloc=netloc, query=query))
    else:
        masked = re.sub(r"(?i)\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", "password=***", dsn)
    # Safety net for shapes the patterns above miss (an unescaped `/` or `@` inside the password
    # moves urlsplit's boundaries): whatever libpq reads as the password never reaches the output.
    try:
        password = conninfo.conninfo_to_dict(dsn).get("password")
    except Exception:  # noqa: BLE001 - an unparsable DSN is shown as masked by the patterns only
        password = None
    if password:
        for form in {str(password), quote(str(password), safe="")}:
            masked = masked.replace(form, "***")
    return masked


class Service:
    """Starts everything `settings` describes; `run` returns once `stop` is set and all is down.

    Blocking steps (initdb/pg_ctl, Alembic, waiting for Envoy) run in worker threads so the event
    loop keeps serving gRPC and handling signals meanwhile.
    """

    def __init__(self, settings: Settings, *, grpc_grace: float = 5.0):
        self.settings = settings
        self.grpc_grace = grpc_grace

    async def run(self, stop: asyncio.Event, on_ready: Callable[[Endpoints], None] | None = None) -> None:
        settings = self.settings
        # Each part registers its stop as it starts; the stack unwinds in reverse order on every
        # exit path: no new HTTP traffic first, then gRPC drains (serve_until stops the server with
        # its grace period and closes the pool), then the database goes.
        async with AsyncExitStack() as stack:
            if settings.database_url:
                dsn = settings.database_url
                database = mask_password(dsn)
            else:
                stack.enter_context(embedded_cluster_lock(settings))
                cluster = EmbeddedPostgres(embedded_postgres_dir(settings))
                stack.push_async_callback(asyncio.to_thread, cluster.stop)  # a no-op if it never started
                dsn = await asyncio.to_thread(cluster.start)
                database = f"embedded PostgreSQL at {cluster.data_dir} (127.0.0.1:{cluster.port})"
            if stop.is_set():
                return
            await asyncio.to_thread(migrate.upgrade, dsn)
            if stop.is_set():
                return

            grpc_stop = asyncio.Event()
            grpc_task, grpc_port = await self._start_grpc(dsn, grpc_stop)
            stack.push_async_callback(_stop_grpc, grpc_task, grpc_stop)
            if stop.is_set():
                return

            grpc_host = "127.0.0.1" if settings.grpc_host in _WILDCARDS else settings.grpc_host
            envoy = EnvoyGateway(settings.data_dir / "envoy", grpc_address=grpc_host, grpc_port=grpc_port,
                                 http_address=settings.http_host, http_port=settings.http_port,
                                 admin_port=settings.envoy_admin_port,
                                 max_request_bytes=settings.max_request_bytes)
            stack.push_async_callback(asyncio.to_thread, envoy.stop)
            await asyncio.to_thread(envoy.start)

            metrics_url = None
            if settings.metrics_port:
                try:
                    metrics_server, _ = prometheus_client.start_http_server(settings.metrics_port, addr="127.0.0.1")
                except OSError as exc:
                    raise Unavailable(f"could not serve metrics on 127.0.0.1:{settings.metrics_port}: {exc}",
                                      reason="METRICS_PORT_UNAVAILABLE") from None
                stack.callback(metrics_server.server_close)
                stack.callback(metrics_server.shutdown)
                metrics_url = f"http://127.0.0.1:{settings.metrics_port}/metrics"

            endpoints = Endpoints(grpc_address=f"{settings.grpc_host}:{grpc_port}", http_url=envoy.url,
                                  metrics_url=metrics_url, database=database, dsn=dsn)
            log.info("trainforge ready", extra={"fields": {"grpc": endpoints.grpc_address, "http": envoy.url}})
            if on_ready:
                on_ready(endpoints)

            # Until asked to stop, or until the gRPC server ends on its own (which is a failure).
            stop_wait = asyncio.ensure_future(stop.wait())
            await asyncio.wait({stop_wait, grpc_task}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if grpc_task.done() and not stop.is_set():
                grpc_task.result()  # raises what stopped it
                raise Unavailable("the gRPC server stopped unexpectedly")

    async def _start_grpc(self, dsn: str, grpc_stop: asyncio.Event) -> tuple[asyncio.Task[None], int]:
        """Starts serve_until in a task; returns it with the bound port once the server listens."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[int] = loop.create_future()

        def on_port(port: int) -> None:
            if not ready.done():
                ready.set_result(port)

        task = asyncio.create_task(serve_until(self.settings, dsn, grpc_stop, on_port), name="trainforge-grpc")
        await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            return task, ready.result()
        try:
            task.result()
        except (OSError, RuntimeError) as exc:
            # grpc reports a taken port as RuntimeError("Failed to bind to address ...").
            address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
            raise Unavailable(f"the gRPC server could not start on {address}: {exc}",
                              reason="GRPC_PORT_UNAVAILABLE") from None
        raise Unavailable("the gRPC server ended before it was ready")


async def _stop_grpc(task: asyncio.Task[None], grpc_stop: asyncio.Event) -> None:
    grpc_stop.set()
    await task


__all__ = ["Endpoints", "Service", "embedded_cluster_lock", "embedded_postgres_dir", "mask_password"]
