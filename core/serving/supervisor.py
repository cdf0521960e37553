"""Keeps one OpenAI-compatible server process (core.serving.openai_server) per local deployment
that needs one, and the gateway's stable paths pointing at the right ones. Runs inside
`trainforge serve`, beside the Envoy gateway whose routes it sets; the database says what is
wanted, so a restarted serve brings every live local deployment back on its own.

Wanted: a deployment in progress whose job has exported its artifact (the job health-checks the
server before anything switches), and every live one (HEALTHY or UNHEALTHY).

Make before break, per model and alias: the stable path routes to the live deployment's server
only once that server answers /health with 200; until then it keeps routing to the server it
routed to before. A server nobody wants any more is stopped only after the gateway has confirmed a
route table without it: SIGTERM, on which it finishes its requests in flight (up to
`drain_seconds`) and exits. So neither a rollout nor a rollback fails a request.

Only one supervisor acts per database (a session advisory lock), so two `serve` processes on one
database never start the same deployment twice."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

import aiohttp
import psycopg

from trainforge.core.child_processes import ChildRecords, with_parent_death_signal
from trainforge.core.db.listen import listen_forever
from trainforge.core.deploy import models as d
from trainforge.core.deploy.store import DeploymentStore
from trainforge.core.jobs import models as jm
from trainforge.core.serving.routes import ServingRoute

log = logging.getLogger(__name__)

# "tfserve" as a big-endian int64: the one-supervisor-per-database lock.
SUPERVISOR_LOCK = int.from_bytes(b"tfserve\0", "big") & (2**63 - 1)
RECONCILE_SECONDS = 1.0
# A server that exits on its own is started again after this long, at most this many times in a row.
RESTART_BACKOFF_SECONDS = 2.0
MAX_QUICK_RESTARTS = 3

ApplyRoutes = Callable[[list[ServingRoute]], Awaitable[None]]


@dataclass
class _Server:
    deployment_id: str
    process: asyncio.subprocess.Process
    ready_file: Path
    log_path: Path
    host: str = ""
    port: int = 0
    ready: bool = False
    stopping: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def exited(self) -> bool:
        return self.process.returncode is not None


class ServingSupervisor:
    def __init__(self, store: DeploymentStore, dsn: str, run_dir: Path, *, host: str = "127.0.0.1",
                 apply_routes: ApplyRoutes | None = None, records: ChildRecords | None = None,
                 drain_seconds: float = 30.0, threads: int = 0):
        self.store, self.dsn, self.run_dir, self.host = store, dsn, run_dir, host
        self.apply_routes, self.records, self.drain_seconds, self.threads = apply_routes, records, drain_seconds, threads
        self.servers: dict[str, _Server] = {}
        # (model, alias) -> the deployment its stable path routes to now.
        self.routed: dict[tuple[str, str], str] = {}
        self._restarts: dict[str, int] = {}
        # deployment id -> monotonic time before which a crashed server is not started again.
        self._not_before: dict[str, float] = {}
        self._wake = asyncio.Event()

    # -- the loop --------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        lock_conn = await self._take_lock(stop)
        if lock_conn is None:
            return
        listener = asyncio.create_task(listen_forever(self.dsn, d.SERVING_CHANNEL, lambda _: self._wake.set(),
                                                      on_connect=self._wake.set))
        try:
            await self._forget_stale()
            while not stop.is_set():
                try:
                    await self.reconcile()
                except Exception as exc:  # noqa: BLE001 - the next round retries; serving must not stop
                    log.warning("serving supervisor: reconcile failed (%s); retrying", exc, exc_info=True)
                self._wake.clear()
                waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())}
                await asyncio.wait(waiters, timeout=RECONCILE_SECONDS, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
        finally:
            listener.cancel()
            await self.stop_all()
            await lock_conn.close()

    async def _take_lock(self, stop: asyncio.Event) -> psycopg.AsyncConnection | None:
        while not stop.is_set():
            try:
                conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
                cur = await conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (SUPERVISOR_LOCK,))
                if (await cur.fetchone())[0]:
                    return conn
                await conn.close()
            except psycopg.Error as exc:
                log.warning("serving supervisor: could not reach the database (%s)", exc)
            try:
                await asyncio.wait_for(stop.wait(), 5.0)
            except TimeoutError:
                pass
        return None

    async def _forget_stale(self) -> None:
        """What an earlier serve wrote about its servers is void now: they died with it."""
        for deployment in await self.store.local_active():
            if deployment.serving.get("port") or deployment.serving.get("ready"):
                await self.store.update_serving(deployment.deployment_id, ready=False, routed=False, port=0, pid=0)

    async def reconcile(self) -> None:
        deployments = {x.deployment_id: x for x in await self.store.local_active()}
        wanted: dict[str, d.Deployment] = {}
        for dep in deployments.values():
            if dep.state in d.IN_PROGRESS:
                if dep.serving.get("job_state") in jm.TERMINAL or not dep.serving.get("job_state"):
                    await self.store.fail(dep.deployment_id, {
                        "code": 10, "reason": "DEPLOY_JOB_ENDED",
                        "message": f"its deploy job ended ({dep.serving.get('job_state') or 'deleted'}) before it went live"})
                    continue
                if not dep.serving.get("artifact"):
                    continue
            wanted[dep.deployment_id] = dep
        for dep in wanted.values():
            await self._ensure_running(dep)
        await self._check_readiness(wanted)
        await self._route(wanted)
        await self._stop_unwanted(wanted)

    # -- processes -------------------------------------------------------------------------------
    async def _ensure_running(self, dep: d.Deployment) -> None:
        server = self.servers.get(dep.deployment_id)
        if server is not None and not server.exited:
            return
        if time.monotonic() < self._not_before.get(dep.deployment_id, 0.0):
            return  # backing off after a crash; the other deployments are reconciled meanwhile
        if server is not None:  # it died on its own
            quick = time.monotonic() - server.started < 30
            self._restarts[dep.deployment_id] = self._restarts.get(dep.deployment_id, 0) + 1 if quick else 1
            tail = _tail(server.log_path)
            log.warning("local server of deployment %s exited with %s: %s", dep.deployment_id,
                        server.process.returncode, tail)
            if self.records is not None:
                self.records.remove(server.process.pid)
            del self.servers[dep.deployment_id]
            failed = f"exited with {server.process.returncode}: {tail}"
            if dep.state in d.IN_PROGRESS:  # the deploy job reads this and fails the deployment
                await self.store.update_serving(dep.deployment_id, ready=False, port=0, failed=failed)
            elif self._restarts[dep.deployment_id] > MAX_QUICK_RESTARTS:
                # Crashing in a loop: stop trying. Its health check now reports no server, which
                # marks it UNHEALTHY (and rolls back with auto_rollback).
                log.error("local server of deployment %s crashed %d times in a row; not starting it again",
                          dep.deployment_id, self._restarts[dep.deployment_id])
                await self.store.update_serving(dep.deployment_id, ready=False, port=0, failed=failed)
                self._not_before[dep.deployment_id] = float("inf")
                return
            self._not_before[dep.deployment_id] = time.monotonic() + RESTART_BACKOFF_SECONDS
            return
        self.servers[dep.deployment_id] = await self._spawn(dep)

    async def _spawn(self, dep: d.Deployment) -> _Server:
        folder = self.run_dir / dep.deployment_id
        folder.mkdir(parents=True, exist_ok=True)
        ready_file = folder / "ready.json"
        ready_file.unlink(missing_ok=True)
        log_path = folder / "server.log"
        argv = [sys.executable, "-m", "trainforge.core.serving.openai_server",
                "--engine", dep.serving.get("engine") or d.LLAMA_CPP, "--model", dep.serving["artifact"],
                # Listed as `model:version`, so a client of the stable path can see which version
                # answers; requests may name it `model:alias` or `model` as well.
                "--served-model-name", f"{dep.model_name}:{dep.version}",
                "--also-serve-as", f"{dep.model_name}:{dep.alias}", "--also-serve-as", dep.model_name,
                "--host", self.host, "--port", "0",
                "--ready-file", str(ready_file), "--drain-seconds", str(self.drain_seconds),
                "--usage-dsn", self.dsn, "--model-version-id", dep.model_version_id]
        if self.threads:
            argv += ["--threads", str(self.threads)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        with open(log_path, "ab") as out:
            process = await asyncio.create_subprocess_exec(*with_parent_death_signal(argv), stdout=out,
                                                           stderr=asyncio.subprocess.STDOUT, env=env,
                                                           start_new_session=True)
        if self.records is not None:
            self.records.add(process.pid, f"local server of deployment {dep.deployment_id}")
        log.info("started the local server of deployment %s (%s:%s, pid %d)", dep.deployment_id, dep.model_name,
                 dep.version, process.pid)
        return _Server(dep.deployment_id, process, ready_file, log_path)

    async def _check_readiness(self, wanted: dict[str, d.Deployment]) -> None:
        for deployment_id, server in list(self.servers.items()):
            if server.exited or server.ready or server.stopping:
                continue
            if not server.port:
                try:
                    info = json.loads(server.ready_file.read_text())
                    server.host, server.port = info.get("host") or self.host, int(info["port"])
                except (OSError, ValueError, KeyError):
                    continue
            if await _healthy(server.host, server.port):
                server.ready = True
                if deployment_id in wanted:
                    await self.store.update_serving(deployment_id, host=server.host, port=server.port,
                                                    pid=server.process.pid, ready=True, failed="")

    async def _route(self, wanted: dict[str, d.Deployment]) -> None:
        routes: dict[tuple[str, str], str] = {}
        for dep in wanted.values():
            if not dep.live:
                continue
            key = (dep.model_name, dep.alias)
            server = self.servers.get(dep.deployment_id)
            if server is not None and server.ready and not server.exited:
                routes[key] = dep.deployment_id
            else:  # not ready yet: keep serving from whatever served this path before
                before = self.routed.get(key)
                old = self.servers.get(before) if before else None
                if old is not None and not old.exited:
                    routes[key] = before
        if routes == self.routed:
            return
        table = [ServingRoute(model=model, alias=alias, host=self.servers[i].host, port=self.servers[i].port)
                 for (model, alias), i in sorted(routes.items())]
        if self.apply_routes is not None:
            await self.apply_routes(table)
        newly = {i for i in routes.values()} - set(self.routed.values())
        self.routed = routes
        for deployment_id in newly:
            if deployment_id in wanted:
                await self.store.update_serving(deployment_id, routed=True)
        log.info("gateway routes: %s", ", ".join(f"{r.model}/{r.alias} -> :{r.port}" for r in table) or "none")

    async def _stop_unwanted(self, wanted: dict[str, d.Deployment]) -> None:
        in_use = set(self.routed.values())
        for deployment_id, server in list(self.servers.items()):
            if deployment_id in wanted or deployment_id in in_use:
                continue
            if server.exited:
                if self.records is not None:
                    self.records.remove(server.process.pid)
                del self.servers[deployment_id]
                continue
            if not server.stopping:
                server.stopping = True
                log.info("stopping the local server of deployment %s (draining up to %.0f s)", deployment_id,
                         self.drain_seconds)
                asyncio.create_task(self._drain(server))

    async def _drain(self, server: _Server) -> None:
        _signal(server.process, signal.SIGTERM)
        try:
            await asyncio.wait_for(server.process.wait(), self.drain_seconds + 5)
        except TimeoutError:
            _signal(server.process, signal.SIGKILL)
            await server.process.wait()
        if self.records is not None:
            self.records.remove(server.process.pid)
        self.servers.pop(server.deployment_id, None)

    async def stop_all(self) -> None:
        servers = list(self.servers.values())
        for server in servers:
            if not server.exited:
                _signal(server.process, signal.SIGTERM)
        for server in servers:
            try:
                await asyncio.wait_for(server.process.wait(), 10)
            except TimeoutError:
                _signal(server.process, signal.SIGKILL)
                await server.process.wait()
            if self.records is not None:
                self.records.remove(server.process.pid)
        self.servers.clear()


def _signal(process: asyncio.subprocess.Process, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


async def _healthy(host: str, port: int) -> bool:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            async with session.get(f"http://{host}:{port}/health") as resp:
                return resp.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])[-1000:]
    except OSError:
        return ""
