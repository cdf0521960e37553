"""The whole service as one unit: database (the embedded cluster or DATABASE_URL), migrations, the
gRPC server, the Envoy gateway, the Prometheus endpoint, the in-process training workers and the
backup schedule (when backup_interval_hours is set), started in that order and stopped in the
reverse one. `trainforge serve` runs it until a signal; `trainforge demo` runs it around a
scripted REST session. Both go through `Service.run`, so the demo exercises what serve starts.

Also here, for the commands that use the database without serving (`db upgrade`, `keys`, `audit`,
`worker`): `open_database`, which finds the database the same way `Service.run` does."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import prometheus_client
import psycopg
from grpc import aio
from psycopg import conninfo

from trainforge.core.access.keys import KeyStore
from trainforge.core.backup.schedule import BackupSchedule
from trainforge.core.child_processes import ChildRecords
from trainforge.core.db import migrate
from trainforge.core.db.embedded import EmbeddedPostgres
from trainforge.core.deploy.store import DeploymentStore
from trainforge.core.deploy.target_factory import target_config
from trainforge.core.errors import FailedPrecondition, Unavailable
from trainforge.core.jobs.devices import DeviceAllocator, visible_gpus
from trainforge.core.jobs.store import JobStore
from trainforge.core.jobs.worker import Worker, WorkerConfig
from trainforge.core.jobs.worker_heartbeats import WorkerDirectory, WorkerHeartbeat
from trainforge.core.registry.store import RegistryStore
from trainforge.core.serving.supervisor import ServingSupervisor
from trainforge.core.settings import Settings, is_loopback
from trainforge.server.api_processes import ApiProcessPool, free_loopback_port
from trainforge.server.app import Deps, create_server, open_deps, stop_server
from trainforge.server.envoy_process import EnvoyGateway

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
    auth_enabled: bool = True
    workers: int = 0  # in-process training workers
    # The first admin key, made at this start because the database had no key; shown once, by
    # `trainforge serve`'s ready panel. Empty on every later start.
    bootstrap_token: str = field(default="", repr=False)

    @property
    def rest_url(self) -> str:
        return f"{self.http_url}/api/training"

    @property
    def docs_url(self) -> str:
        return f"{self.http_url}/api/docs"


def warn_if_plaintext(settings: Settings) -> list[str]:
    """Logs a loud warning for each plaintext listener on a non-loopback address; returns them."""
    exposed = settings.plaintext_exposure()
    for listener in exposed:
        log.warning("PLAINTEXT LISTENER ON THE NETWORK: %s serves without TLS, so API keys and model data cross "
                    "the network readable and forgeable by anyone on the path; set tls_cert_file and tls_key_file "
                    "(or listen on 127.0.0.1 behind a TLS proxy)", listener)
    return exposed


def gateway_needs_own_port(settings: Settings) -> bool:
    """The gateway reaches the gRPC server over loopback in plaintext: on the configured port when
    that is such a port, else on a loopback port of its own (TLS on, or bound to one public address)."""
    return settings.tls is not None or not (is_loopback(settings.grpc_host) or settings.grpc_host in _WILDCARDS)


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


@dataclass(frozen=True)
class Database:
    """A database a command can connect to."""

    dsn: str = field(repr=False)  # may hold a password: never printed
    where: str  # for people


@contextmanager
def open_database(settings: Settings, *, share_running: bool = False, start_embedded: bool = True) -> Iterator[Database]:
    """The database `settings` name, for a command that uses it without serving: DATABASE_URL as
    is, else the embedded cluster under data_dir, started for the duration and stopped afterwards.

    When another trainforge process holds the data directory (embedded_cluster_lock), its cluster
    is running and must not be restarted: `EmbeddedPostgres.start` would stop and restart it on a
    new port under the live server. With `share_running` the command connects to that cluster
    instead, at the port in its postmaster.pid, once PostgreSQL reports it ready there. This never
    starts, stops or reconfigures a cluster another process owns; if the owner stops it meanwhile,
    the command fails with a connection error (each statement it runs is atomic, so nothing is half
    done). Without `share_running` (`db upgrade`: migrations under a live server are not safe) a
    held data directory fails as before. With `start_embedded` false a cluster nobody runs is not
    started either (`trainforge worker` must not take the data directory from `serve`).
    """
    if settings.database_url:
        yield Database(settings.database_url, mask_password(settings.database_url))
        return
    with ExitStack() as stack:
        try:
            stack.enter_context(embedded_cluster_lock(settings))
            in_use = False
        except FailedPrecondition as exc:
            if not share_running or exc.reason != "DATA_DIR_IN_USE":
                raise
            in_use = True
        if in_use:
            database = _running_cluster(settings)
        elif not start_embedded:
            raise FailedPrecondition(
                f"no database: DATABASE_URL (or --database-url) is not set and no trainforge server is running "
                f"on {settings.data_dir} whose embedded database could be shared",
                reason="NO_DATABASE", metadata={"data_dir": str(settings.data_dir)})
        else:
            cluster = stack.enter_context(EmbeddedPostgres(embedded_postgres_dir(settings)))
            database = Database(cluster.dsn, f"embedded PostgreSQL at {cluster.data_dir}")
        yield database


def _running_cluster(settings: Settings) -> Database:
    """The embedded cluster another live trainforge process runs, read from its postmaster.pid
    (line 4: port, line 8: status, PostgreSQL's own format since 10)."""
    cluster = EmbeddedPostgres(embedded_postgres_dir(settings))
    not_ready = Unavailable(
        f"another trainforge process holds {settings.data_dir} but its database is not running now (it is "
        "starting or stopping); try again in a moment", reason="EMBEDDED_DATABASE_NOT_READY",
        metadata={"data_dir": str(settings.data_dir)})
    try:
        lines = (cluster.data_dir / "postmaster.pid").read_text().splitlines()
        port = int(lines[3])
        status = lines[7].strip() if len(lines) > 7 else ""
    except (OSError, IndexError, ValueError):
        raise not_ready from None
    if status != "ready":
        raise not_ready
    dsn = f"postgresql://postgres@127.0.0.1:{port}/{quote(cluster.database, safe='')}"
    return Database(dsn, f"embedded PostgreSQL at {cluster.data_dir} (shared with the running server)")


BOOTSTRAP_OWNER = "bootstrap-admin"
# pg_advisory_lock key: "tfbootst" read as a big-endian int64. Any constant works; it must only
# differ from the other advisory locks (jobs use hashtext(), a 32-bit range).
_BOOTSTRAP_LOCK = int.from_bytes(b"tfbootst", "big") & (2**63 - 1)


async def ensure_bootstrap_admin_key(dsn: str, keys: KeyStore) -> str:
    """Creates an admin key when the database has no API key at all (a new data directory, or an
    empty DATABASE_URL) and returns its token; returns "" when keys exist. Two servers starting on
    one empty database serialise on an advisory lock, so only one of them makes the key."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_BOOTSTRAP_LOCK,))
        try:
            if await keys.count():
                return ""
            new = await keys.create(BOOTSTRAP_OWNER, "admin",
                                    description="made by `trainforge serve` for a database without API keys")
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_BOOTSTRAP_LOCK,))
    log.info("created the first admin API key", extra={"fields": {"key_id": new.key.key_id}})
    return new.token


WORKER_RESTART_SECONDS = 5.0
# Beyond a job's own checkpoint bound, what a stopping worker may still need: SIGKILL's wait (5 s)
# and handing the job back to the queue (one transaction).
WORKER_STOP_SLACK_SECONDS = 15.0


def child_records(settings: Settings) -> ChildRecords:
    """Where this data directory's processes record their children (core.child_processes)."""
    return ChildRecords(settings.data_dir / "run" / "children")


def worker_config(settings: Settings, dsn: str) -> WorkerConfig:
    lease = timedelta(seconds=settings.job_lease_seconds)
    # Three heartbeats per lease, so one slow heartbeat never lets a live job's lease lapse.
    # model_cache: the folder the server's evaluator uses too (server.app), so a base model is
    # materialised once per data directory.
    return WorkerConfig(jobs_dir=settings.jobs_dir, dsn=dsn, lease=lease,
                        heartbeat_seconds=min(5.0, settings.job_lease_seconds / 3),
                        model_cache=settings.data_dir / "model-cache", data_root=settings.data_dir_root,
                        max_running_per_kind=settings.max_running_per_kind,
                        stop_checkpoint_seconds=settings.job_stop_checkpoint_seconds,
                        child_records=child_records(settings), deploy_config=target_config(settings),
                        serving_dir=settings.data_dir / "serving")


class WorkerGroup:
    """Training workers (trainforge.core.jobs.worker) as asyncio tasks of this process, sharing one
    stop event and one GPU allocator (each job gets GPUs of its own). `serve` runs
    `settings.workers` of them next to the gRPC server; `trainforge worker` runs them alone. A
    worker whose loop fails (the database went away) is restarted after a pause rather than leaving
    the group a worker short. The group heartbeats to the `workers` table, idle or busy, so health
    can tell that someone serves the queue; it removes its row when it stops.

    `gpus`: the GPUs to hand out (settings.gpus through core.jobs.devices.visible_gpus); None finds
    them (CUDA_VISIBLE_DEVICES, else NVML). `heartbeat`: False only for a group without a database."""

    def __init__(self, jobs: JobStore, registry: RegistryStore, config: WorkerConfig, count: int,
                 gpus: Sequence[str] | None = None, *, heartbeat: bool = True):
        self.config = config
        self.devices = DeviceAllocator(visible_gpus() if gpus is None else gpus)
        self.workers = [Worker(jobs, registry, config, devices=self.devices) for _ in range(count)]
        self.heartbeat = WorkerHeartbeat(WorkerDirectory(jobs.pool), concurrency=count, gpus=self.devices.gpus,
                                         worker_ids=[w.worker_id for w in self.workers]) if heartbeat else None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._supervise(w), name=f"trainforge-worker-{i}")
                       for i, w in enumerate(self.workers)]
        if self.heartbeat is not None:
            self._tasks.append(asyncio.create_task(self.heartbeat.run(self._stop), name="trainforge-worker-heartbeat"))

    async def _supervise(self, worker: Worker) -> None:
        while not self._stop.is_set():
            try:
                await worker.run(self._stop)
            except Exception:  # noqa: BLE001 - logged; the worker starts again
                log.exception("worker %s failed; restarting it in %.0f s", worker.worker_id, WORKER_RESTART_SECONDS)
                try:
                    await asyncio.wait_for(self._stop.wait(), WORKER_RESTART_SECONDS)
                except TimeoutError:
                    pass

    async def stop(self, grace: float | None = None) -> None:
        """Stops every worker. Idle ones stop at once; one running a job asks it to checkpoint at
        its next step boundary, waits up to `job_stop_checkpoint_seconds` for that, stops it, and
        hands the job back to the queue (core.jobs.worker). Only a worker still busy after
        `grace` (by default that bound plus the job's stop grace and some slack) is cancelled:
        cancelling stops its job's processes, and the job resumes from its last checkpoint once
        its lease expires (job_lease_seconds)."""
        self._stop.set()
        if not self._tasks:
            return
        if grace is None:
            grace = self.config.stop_checkpoint_seconds + self.config.stop_grace_seconds + WORKER_STOP_SLACK_SECONDS
        _, pending = await asyncio.wait(self._tasks, timeout=grace)
        if pending:
            log.warning("%d worker(s) still busy %.0f s after the shutdown began; cancelling them, their job(s) "
                        "resume under another worker once their lease expires", len(pending), grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._tasks = []


class Service:
    """Starts everything `settings` describes; `run` returns once `stop` is set and all is down.

    Blocking steps (initdb/pg_ctl, Alembic, waiting for Envoy) run in worker threads so the event
    loop keeps serving gRPC and handling signals meanwhile. `bootstrap_admin_key`: make a first
    admin key when the database has none (`serve`; the demo mints its own).
    """

    def __init__(self, settings: Settings, *, grpc_grace: float = 5.0, bootstrap_admin_key: bool = False):
        self.settings = settings
        self.grpc_grace = grpc_grace
        self.bootstrap_admin_key = bootstrap_admin_key

    async def run(self, stop: asyncio.Event, on_ready: Callable[[Endpoints], None] | None = None) -> None:
        settings = self.settings
        warn_if_plaintext(settings)
        # Each part registers its stop as it starts; the stack unwinds in reverse order on every
        # exit path: workers first, then no new HTTP traffic, then gRPC drains (with its grace
        # period), then the pool closes, then the database goes.
        async with AsyncExitStack() as stack:
            if not settings.database_url:
                stack.enter_context(embedded_cluster_lock(settings))
            # What a killed server left running (Envoy on its ports, API processes, training
            # processes in the output folders the resumed jobs will use) goes before anything starts.
            records = child_records(settings)
            await asyncio.to_thread(records.reap)
            if settings.database_url:
                dsn = settings.database_url
                database = mask_password(dsn)
            else:
                cluster = EmbeddedPostgres(embedded_postgres_dir(settings))
                stack.push_async_callback(asyncio.to_thread, cluster.stop)  # a no-op if it never started
                dsn = await asyncio.to_thread(cluster.start)
                database = f"embedded PostgreSQL at {cluster.data_dir} (127.0.0.1:{cluster.port})"
            if stop.is_set():
                return
            await asyncio.to_thread(migrate.upgrade, dsn)
            if stop.is_set():
                return

            deps = await open_deps(settings, dsn)
            stack.push_async_callback(deps.close)
            bootstrap_token = ""
            if self.bootstrap_admin_key and settings.auth_enabled:
                bootstrap_token = await ensure_bootstrap_admin_key(dsn, deps.keys)

            gateway_port = free_loopback_port() if gateway_needs_own_port(settings) else None
            server, grpc_port = await self._start_grpc(deps, gateway_port)
            # Ends when the server stops; not cancelled (that would cancel grpc's own shutdown
            # future, which server.stop() then awaits), but awaited once the server has stopped.
            serving = asyncio.ensure_future(server.wait_for_termination())
            stack.push_async_callback(asyncio.wait, {serving})
            stack.push_async_callback(stop_server, server, self.grpc_grace)
            if stop.is_set():
                return

            more_ports: list[int] = []
            if settings.api_processes > 1:
                pool = ApiProcessPool(settings, dsn, settings.api_processes - 1, settings.data_dir / "api",
                                      grace=self.grpc_grace, records=records)
                stack.push_async_callback(pool.stop)
                await pool.start()
                more_ports = pool.ports

            grpc_host = "127.0.0.1" if settings.grpc_host in _WILDCARDS or gateway_port else settings.grpc_host
            envoy = EnvoyGateway(settings.data_dir / "envoy", grpc_address=grpc_host,
                                 grpc_port=gateway_port or grpc_port, http_address=settings.http_host,
                                 http_port=settings.http_port, admin_port=settings.envoy_admin_port,
                                 max_request_bytes=settings.max_request_bytes, more_grpc_ports=more_ports,
                                 tls=settings.tls, records=records)
            stack.push_async_callback(asyncio.to_thread, envoy.stop)
            # Spawned on this (the loop's) thread, which lives until the end: Envoy's parent-death
            # signal follows the thread that started it. Only the wait for readiness goes to a thread.
            envoy.spawn()
            await asyncio.to_thread(envoy.wait_ready)

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

            if settings.workers:
                workers = WorkerGroup(JobStore(deps.pool), deps.registry, worker_config(settings, dsn),
                                      settings.workers, gpus=visible_gpus(settings.gpus))
                workers.start()
                stack.push_async_callback(workers.stop)

            # Local deployments: one server process each, and the gateway's stable paths to them.
            routes = getattr(envoy, "serving_routes", None)
            supervisor = ServingSupervisor(
                DeploymentStore(deps.pool, deps.jobs), dsn, settings.data_dir / "serving" / "run",
                host=settings.serving_host, records=records, drain_seconds=settings.serving_drain_seconds,
                apply_routes=(lambda table: asyncio.to_thread(routes.apply, table)) if routes is not None else None)
            supervisor_stop = asyncio.Event()
            supervising = asyncio.create_task(supervisor.run(supervisor_stop), name="trainforge-serving-supervisor")

            async def stop_supervisor() -> None:  # its servers drain before the gateway goes
                supervisor_stop.set()
                await asyncio.wait({supervising})

            stack.push_async_callback(stop_supervisor)

            if settings.backup_interval_hours > 0:
                backups = BackupSchedule(dsn, settings.artifacts_dir, settings.backups_dir,
                                         settings.backup_interval_hours * 3600, settings.backup_keep)
                backups.start()
                stack.push_async_callback(backups.stop)

            endpoints = Endpoints(grpc_address=f"{settings.grpc_host}:{grpc_port}", http_url=envoy.url,
                                  metrics_url=metrics_url, database=database, dsn=dsn,
                                  auth_enabled=settings.auth_enabled, workers=settings.workers,
                                  bootstrap_token=bootstrap_token)
            log.info("trainforge ready", extra={"fields": {"grpc": endpoints.grpc_address, "http": envoy.url,
                                                           "workers": settings.workers}})
            if on_ready:
                on_ready(endpoints)

            # Until asked to stop, or until the gRPC server ends on its own (which is a failure).
            stop_wait = asyncio.ensure_future(stop.wait())
            await asyncio.wait({stop_wait, serving}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if serving.done() and not stop.is_set():
                raise Unavailable("the gRPC server stopped unexpectedly")

    async def _start_grpc(self, deps: Deps, gateway_port: int | None) -> tuple[aio.Server, int]:
        try:
            return await create_server(self.settings, deps, gateway_port=gateway_port)
        except (OSError, RuntimeError) as exc:
            # grpc reports a taken port as RuntimeError("Failed to bind to address ...").
            address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
            raise Unavailable(f"the gRPC server could not start on {address}: {exc}",
                              reason="GRPC_PORT_UNAVAILABLE") from None


__all__ = ["BOOTSTRAP_OWNER", "Database", "Endpoints", "Service", "WorkerGroup", "child_records",
           "embedded_cluster_lock", "embedded_postgres_dir", "ensure_bootstrap_admin_key", "gateway_needs_own_port",
           "mask_password", "open_database", "warn_if_plaintext", "worker_config"]
