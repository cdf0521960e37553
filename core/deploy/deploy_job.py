"""A deploy job, start to end (JOB_KIND_DEPLOYMENT). The worker calls `run_deployment`.

1. The deployment goes PENDING -> DEPLOYING (a resumed job finds it DEPLOYING, or already live).
2. The version's files are materialised; every file is checked against its sha256 on the way, so
   a tampered artifact fails the deployment with DATA_LOSS before anything ships.
3. The job's child process (core.deploy.ship_child) exports the GGUF where the target serves one
   and, for a remote target, ships, checks health and moves the alias at the destination.
4. Local target: the deployment asks the serving supervisor (core.serving.supervisor, in
   `trainforge serve`) for a server process; once that answers /health, a real generation within
   `health_check_timeout` decides.
5. Healthy: one transaction makes it the live deployment of its model, target and alias, the one
   before SUPERSEDED, and moves the registry alias (DeploymentStore.go_live); on the local target
   the job then waits for the gateway to route the stable path to it. Unhealthy or failed: the
   deployment is FAILED and the previous one never stopped serving.

Outside the child the job's lease is renewed here, and a cancel request stops the wait."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, TypeVar

import aiohttp

from trainforge.core.access.audit import Actor, acting
from trainforge.core.deploy import models as d
from trainforge.core.deploy import ship_child
from trainforge.core.deploy.store import DeploymentStore
from trainforge.core.deploy.target_factory import check_target, target_config
from trainforge.core.deploy.targets.base import ShipRequest
from trainforge.core.errors import FailedPrecondition, TrainforgeError, Unavailable
from trainforge.core.jobs import models as m
from trainforge.core.registry.models import ModelVersion

if TYPE_CHECKING:
    from trainforge.core.jobs.worker import Worker

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a local server may take to load before the health check's own budget starts: llama.cpp
# maps a 270 MB F16 SmolLM2 in ~1 s on 2 cores; transformers takes ~5 s; 120 s leaves room for a
# loaded machine and a 7B model.
SERVER_START_SECONDS = 120.0
# How long the job waits for the gateway to route the stable path to the new server (Envoy picks a
# replaced config file up in well under a second).
ROUTE_WAIT_SECONDS = 60.0
HEALTH_PROMPT = [{"role": "user", "content": "Reply with one word: ready?"}]


class _Cancelled(Exception):
    """The job's owner cancelled it while the job waited outside its child."""


class _LeaseLost(Exception):
    """Another worker owns the job now; it records the outcome."""


class _Stopping(Exception):
    """This worker is shutting down; the job goes back to the queue and runs again."""


def error_document(exc: TrainforgeError) -> dict[str, Any]:
    """A domain error as the deployment's `error`: its class names the google.rpc code
    (server.errors maps it, as for a job's error), plus message, reason and metadata."""
    return {"type": type(exc).__name__, "message": exc.message, "reason": exc.reason,
            "metadata": {k: str(v) for k, v in exc.metadata.items()}}


async def run_deployment(worker: Worker, job: m.Job, stop: asyncio.Event, gpus: list[str] | None) -> None:
    spec = job.spec
    store = DeploymentStore(worker.jobs.pool, worker.jobs)
    deployment_id = spec["deployment_id"]
    started = time.monotonic()
    try:
        deployment = await store.start(deployment_id)
        if deployment.state == d.HEALTHY:  # an earlier attempt made the switch and died after it
            await _succeed(worker, job, deployment, started)
            return
        if deployment.state not in d.IN_PROGRESS:
            raise FailedPrecondition(f"deployment {deployment_id} is {deployment.state}; nothing to do")
        await worker.jobs.log(job.job_id, job.attempt, "verifying the version's artifacts")
        folder = await worker.registry.materialize(deployment.model_name, deployment.version,
                                                   worker._registry_cache())
        version = await worker.registry.get_version(deployment.model_name, deployment.version)
        ship = ShipRequest(deployment_id=deployment_id, model_name=deployment.model_name, version=deployment.version,
                           model_version_id=deployment.model_version_id, alias=deployment.alias, model_dir=folder,
                           card=_card(version, deployment))
        reply = await _ship(worker, job, deployment, ship, stop, gpus)
        if reply is None:
            await store.fail(deployment_id, {"code": 1, "message": "the deploy job was cancelled or handed back",
                                             "reason": "DEPLOY_JOB_STOPPED"})
            return
        if deployment.target == d.LOCAL:
            deployment = await _go_live_locally(worker, job, store, deployment, folder, reply, stop)
        else:
            health = reply.get("health")
            if health is not None and not health["healthy"]:
                raise Unavailable(f"the deployment to {deployment.target} failed its health check: {health['detail']}",
                                  reason="HEALTH_CHECK_FAILED")
            deployment = await store.go_live(deployment_id, endpoint=reply["endpoint"], details=reply["details"],
                                             health=_health_doc(health) if health else None)
        await _succeed(worker, job, deployment, started)
    except _LeaseLost:
        return
    except _Stopping:
        await worker.jobs.release(job.job_id, job.attempt, f"worker {worker.worker_id} shut down; queued again")
    except _Cancelled:
        await store.fail(deployment_id, {"code": 1, "message": "cancelled before it went live",
                                         "reason": "DEPLOY_JOB_CANCELLED"})
        await worker.jobs.finish(job.job_id, job.attempt, m.CANCELLED, "cancelled; the previous deployment "
                                 "kept serving")
    except TrainforgeError as exc:
        await store.fail(deployment_id, error_document(exc))
        await worker._fail(job, exc)


async def auto_deploy(worker: Worker, job: m.Job, version_id: str) -> str:
    """A training job whose config says `deployment.auto_deploy` deploys the version it registered,
    as its owner, to `deployment_target`: a deployment (and its job) is queued, and the training job
    names it. A target that cannot work (not configured) is reported on the training job instead."""
    section = (job.spec.get("deployment") or {})
    if not section.get("auto_deploy"):
        return ""
    target = section.get("deployment_target", d.LOCAL)
    problems = check_target(target, "", worker.config.deploy_config or target_config_defaults())
    if problems:
        text = "; ".join(f"{p.field}: {p.description}" for p in problems)
        await worker.jobs.log(job.job_id, job.attempt, f"auto-deploy to {target} refused: {text}")
        return f"; auto-deploy to {target} refused: {text}"
    store = DeploymentStore(worker.jobs.pool, worker.jobs)
    version = await worker.registry.resolve_version(version_id, "result_model_version_id")
    actor = Actor(job.owner_key_id, "worker", "worker:AutoDeploy", f"job-{job.job_id}-{job.attempt}",
                  f"worker:{worker.worker_id}", lambda: f"{version.name}/{version.version}")
    with acting(actor):
        deployment, deploy_job = await store.create(
            version, target=target, alias=d.DEFAULT_ALIAS, engine=d.LLAMA_CPP if target == d.LOCAL else "",
            auto_rollback=True, health_check_enabled=bool(section.get("health_check_enabled", True)),
            health_check_timeout_ms=d.DEFAULT_HEALTH_CHECK_TIMEOUT_MS, deployment_tags=[], owner_key_id=job.owner_key_id)
    return f"; auto-deploy to {target}: deployment {deployment.deployment_id} (job {deploy_job.job_id})"


def target_config_defaults() -> dict[str, Any]:
    from trainforge.core.settings import Settings

    return target_config(Settings())


async def _succeed(worker: Worker, job: m.Job, deployment: d.Deployment, started: float) -> None:
    seconds = round(time.monotonic() - started, 3)
    where = deployment.serving_path or deployment.endpoint
    await worker.jobs.finish(job.job_id, job.attempt, m.SUCCEEDED,
                             f"{deployment.model_name}:{deployment.version} is live on {deployment.target} as "
                             f"{deployment.alias!r} at {where} ({seconds:.1f} s)",
                             result={"deployment_id": deployment.deployment_id, "endpoint": deployment.endpoint,
                                     "deploy_seconds": seconds})


def _card(version: ModelVersion, deployment: d.Deployment) -> dict[str, Any]:
    """The model-card facts of a version: its lineage (a job's spec names its data file under
    `training_data.path`), metrics and the deployment's tags."""
    lineage = version.lineage
    data = ((lineage.config or {}).get("training_data") or {}).get("path", "")
    return {"base_model": lineage.base_model, "datasets": [data] if data else [],
            "metrics": dict(version.performance_metrics), "tags": list(deployment.deployment_tags),
            "lineage": {k: v for k, v in dataclasses.asdict(lineage).items() if v not in ("", None, {}, [])},
            "description": version.description}


def _gguf_out(worker: Worker, deployment: d.Deployment) -> Path | None:
    wants = deployment.target == d.OLLAMA or (deployment.target == d.LOCAL
                                              and (deployment.engine or d.LLAMA_CPP) == d.LLAMA_CPP)
    if not wants:
        return None
    root = worker.config.serving_dir or (worker.config.jobs_dir / ".serving")
    return root / deployment.deployment_id / "model.gguf"


async def _ship(worker: Worker, job: m.Job, deployment: d.Deployment, ship: ShipRequest, stop: asyncio.Event,
                gpus: list[str] | None) -> dict[str, Any] | None:
    gguf_out = _gguf_out(worker, deployment)
    if gguf_out is not None:
        gguf_out.parent.mkdir(parents=True, exist_ok=True)
        await worker.jobs.log(job.job_id, job.attempt, f"exporting GGUF for {deployment.target}")
    elif deployment.target != d.LOCAL:
        await worker.jobs.log(job.job_id, job.attempt, f"shipping to {deployment.target}")
    request = {"target": deployment.target, "config": worker.config.deploy_config or {},
               "ship": ship.to_json(), "gguf_out": str(gguf_out) if gguf_out else None, "outtype": "auto",
               "health_check": deployment.health_check_enabled,
               "health_timeout_s": deployment.health_check_timeout_ms / 1000}
    return await worker._run_child(job, ship_child.MODULE, request, stop, "deployment", gpus)


async def _go_live_locally(worker: Worker, job: m.Job, store: DeploymentStore, deployment: d.Deployment,
                           folder: Path, reply: dict[str, Any], stop: asyncio.Event) -> d.Deployment:
    engine = deployment.engine or d.LLAMA_CPP
    artifact = reply["gguf"]["path"] if engine == d.LLAMA_CPP else str(folder)
    await store.update_serving(deployment.deployment_id, artifact=artifact, engine=engine,
                               artifact_sha256=(reply.get("gguf") or {}).get("sha256", ""), ready=False, routed=False)
    await worker.jobs.log(job.job_id, job.attempt, f"starting a {engine} server")
    timeout_s = deployment.health_check_timeout_ms / 1000

    async def serving_ready() -> d.Deployment:
        deadline = time.monotonic() + SERVER_START_SECONDS + timeout_s
        while time.monotonic() < deadline:
            current = await store.get(deployment.deployment_id)
            if current.serving.get("failed"):
                raise Unavailable(f"the local server did not start: {current.serving['failed']}",
                                  reason="SERVER_START_FAILED")
            if current.serving.get("ready") and current.serving.get("port"):
                return current
            await asyncio.sleep(0.25)
        raise Unavailable(f"no local server answered /health within {SERVER_START_SECONDS + timeout_s:.0f} s; is "
                          "`trainforge serve` (which runs local deployments) up?", reason="SERVER_START_TIMEOUT")

    current = await _leased(worker, job, stop, serving_ready())
    host, port = current.serving["host"], current.serving["port"]
    endpoint = f"http://{host}:{port}/v1"
    health = None
    if deployment.health_check_enabled:
        await worker.jobs.log(job.job_id, job.attempt, "health check: one generation")
        health = await _leased(worker, job, stop, check_local(host, port, timeout_s))
        if not health["healthy"]:
            raise Unavailable(f"the local server failed its health check: {health['detail']}",
                              reason="HEALTH_CHECK_FAILED")
    live = await store.go_live(deployment.deployment_id, endpoint=endpoint, details={"engine": engine}, health=health)

    async def routed() -> d.Deployment:
        deadline = time.monotonic() + ROUTE_WAIT_SECONDS
        while time.monotonic() < deadline:
            now = await store.get(deployment.deployment_id)
            if now.serving.get("routed") or now.state != d.HEALTHY:
                return now
            await asyncio.sleep(0.2)
        log.warning("the gateway has not routed %s after %.0f s", deployment.serving_path, ROUTE_WAIT_SECONDS)
        return await store.get(deployment.deployment_id)

    return await _leased(worker, job, stop, routed()) if live.state == d.HEALTHY else live


async def check_local(host: str, port: int, timeout_s: float) -> dict[str, Any]:
    """A real generation on a local server: a chat completion that must produce a token in time."""
    started = time.monotonic()
    detail, healthy = "", False
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
            async with session.post(f"http://{host}:{port}/v1/chat/completions",
                                    json={"messages": HEALTH_PROMPT, "max_tokens": 4, "temperature": 0}) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    detail = f"HTTP {resp.status}: {str(body)[:300]}"
                elif int((body.get("usage") or {}).get("completion_tokens", 0)) < 1:
                    detail = "the completion produced no token"
                else:
                    healthy = True
                    text = body["choices"][0]["message"]["content"]
                    detail = f"generated {body['usage']['completion_tokens']} token(s): {text[:60]!r}"
    except TimeoutError:
        detail = f"no completion within {timeout_s:.1f} s"
    except (aiohttp.ClientError, ValueError, KeyError, IndexError) as exc:
        detail = f"{type(exc).__name__}: {exc}"
    return _health_doc({"healthy": healthy, "detail": detail, "latency_ms": (time.monotonic() - started) * 1000})


def _health_doc(health: dict[str, Any]) -> dict[str, Any]:
    return {**health, "check_time": time.time()}


async def _leased(worker: Worker, job: m.Job, stop: asyncio.Event, work: Awaitable[T]) -> T:
    """Runs `work` while renewing the job's lease; a cancel request or a lost lease stops it."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=worker.config.heartbeat_seconds)
            if done:
                return task.result()
            current = await worker.jobs.heartbeat(job.job_id, job.attempt, worker.config.lease)
            if current is None:
                raise _LeaseLost()
            if current.cancel_requested:
                raise _Cancelled()
            if stop.is_set():
                raise _Stopping()
    finally:
        task.cancel()


__all__ = ["auto_deploy", "check_local", "error_document", "run_deployment"]
