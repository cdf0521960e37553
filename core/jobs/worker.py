"""A worker claims jobs from Postgres, runs each in its own process group, keeps its lease alive
with heartbeats, and records the outcome. Many workers, on many machines, can share one database:
claims use SKIP LOCKED, and a job whose worker stopped heartbeating is claimed again after its
lease expires and resumes from its last checkpoint."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from trainforge.core.access.audit import Actor, acting
from trainforge.core.errors import AlreadyExists
from trainforge.core.jobs import launch
from trainforge.core.jobs import models as m
from trainforge.core.jobs.devices import DeviceAllocator, visible_gpus
from trainforge.core.jobs.job_lineage import portable_path, portable_spec
from trainforge.core.jobs.queue_wake import QueueWake
from trainforge.core.jobs.resources import ProcessGroupSampler
from trainforge.core.jobs.store import JobStore
from trainforge.core.registry.architecture import read_architecture
from trainforge.core.registry.models import Lineage, NewVersion, split_registry_ref
from trainforge.core.registry.store import RegistryStore
from trainforge.core.training.process_contract import TrainError, TrainResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    jobs_dir: Path
    dsn: str
    lease: timedelta = timedelta(seconds=30)
    heartbeat_seconds: float = 5.0
    poll_seconds: float = 1.0
    # SIGTERM first, SIGKILL after this long: cancel must stop a job within 10 s.
    stop_grace_seconds: float = 8.0
    # Converted base models and materialised registry versions, shared by the jobs of this worker.
    model_cache: Path | None = None
    # The training data root: registered lineage names data files relative to it (job_lineage).
    data_root: Path | None = None


# Training-run state, not properties of the model: kept on the job, not on the registered version.
RUN_STATE_METRICS = ("epoch", "learning_rate", "tokens_per_sec", "grad_norm")


def result_version(job_id: str) -> str:
    """The registered version string of a job's model: stable across retries of the same job."""
    return f"job-{job_id[:8]}"


class Worker:
    def __init__(self, jobs: JobStore, registry: RegistryStore, config: WorkerConfig, worker_id: str = "",
                 devices: DeviceAllocator | None = None):
        self.jobs, self.registry, self.config = jobs, registry, config
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # The workers of one process share one allocator (WorkerGroup); a lone worker finds the GPUs.
        self.devices = devices if devices is not None else DeviceAllocator(visible_gpus())

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker started", extra={"fields": {"worker_id": self.worker_id}})
        wake = QueueWake(self.config.dsn)
        wake.start()
        try:
            await self._loop(stop, wake)
        finally:
            await wake.close()

    async def _loop(self, stop: asyncio.Event, wake: QueueWake) -> None:
        while not stop.is_set():
            # Every free GPU is held while claiming, so the claim takes only a job that fits in them
            # and no other worker of this process can hand the same GPU to another job meanwhile.
            held = await self.devices.hold_free(stop)
            if held is None:
                return
            try:
                job = await self.jobs.claim(self.worker_id, self.config.lease,
                                            max_devices=len(held) if self.devices.gpu_host else None)
            except BaseException:
                self.devices.release(held)
                raise
            if job is None:
                self.devices.release(held)
                await wake.wait(stop, self.config.poll_seconds)
                continue
            gpus = self.devices.keep(held, min(self.devices.needed(job.spec), len(held)))
            try:
                await self.execute(job, stop, gpus=gpus)
            except Exception as exc:  # noqa: BLE001 - one job's failure must not stop the worker
                log.exception("job %s failed in the worker", job.job_id)
                await self.jobs.finish(job.job_id, job.attempt, m.FAILED, f"worker error: {exc}",
                                       error={"code": 13, "message": f"worker error: {exc}"})
            finally:
                self.devices.release(gpus)

    async def execute(self, job: m.Job, stop: asyncio.Event | None = None, gpus: list[str] | None = None) -> None:
        """Runs one claimed job to its end. `gpus`: the GPUs the allocator gave it (None: the
        spec's `distributed.devices` as given, for a caller without an allocator)."""
        job_dir = self.config.jobs_dir / job.job_id
        output_dir = job_dir / "output"
        output_dir.mkdir(parents=True, exist_ok=True)
        config_path = job_dir / "config.json"
        config_path.write_text(json.dumps(await self._resolve_base_model(job.spec), indent=2))
        resume = Path(job.last_checkpoint) if job.last_checkpoint and Path(job.last_checkpoint).exists() else None
        plan = launch.build(job.spec, config_path=config_path, output_dir=output_dir, resume_from=resume,
                            job_id=job.job_id, attempt=job.attempt, dsn=self.config.dsn,
                            extensions_dir=self.config.jobs_dir / ".torch_extensions", master_port=_free_port(),
                            gpus=gpus)
        if self.config.model_cache is not None:
            plan.env["TRAINFORGE_MODEL_CACHE"] = str(self.config.model_cache)
        log_path = job_dir / f"attempt-{job.attempt}.log"
        with open(log_path, "ab") as log_file:
            # Which GPUs the attempt ran on, for whoever reads the log after a crash.
            log_file.write(f"trainforge worker {self.worker_id}: attempt {job.attempt}, {plan.processes} "
                           f"process(es), CUDA_VISIBLE_DEVICES={plan.env.get('CUDA_VISIBLE_DEVICES', '(inherited)')}"
                           f"\n".encode())
            log_file.flush()
            process = await asyncio.create_subprocess_exec(
                *launch.with_parent_death_signal(plan.argv), env=plan.env, stdout=log_file,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        outcome = await self._supervise(job, process, stop or asyncio.Event())
        if outcome == "lost":
            return  # another worker owns the job now; it records the outcome
        if outcome == "released":
            await self.jobs.release(job.job_id, job.attempt,
                                    f"worker {self.worker_id} shut down; queued again to resume from its checkpoint")
            return
        rc = process.returncode
        if outcome == "cancelled" or rc == launch.EXIT_CANCELLED:
            await self.jobs.finish(job.job_id, job.attempt, m.CANCELLED, "cancelled; the last checkpoint is kept")
        elif rc == launch.EXIT_PAUSED:
            await self.jobs.finish(job.job_id, job.attempt, m.PAUSED, "paused after a checkpoint")
        elif rc == launch.EXIT_OK:
            version_id = await self._register(job, output_dir)
            await self.jobs.finish(job.job_id, job.attempt, m.SUCCEEDED, f"succeeded; registered {version_id}",
                                   result_model_version_id=version_id)
        else:
            message = _failure_message(output_dir, log_path, rc)
            await self.jobs.finish(job.job_id, job.attempt, m.FAILED, message,
                                   error={"code": 13, "message": message})

    async def _resolve_base_model(self, spec: dict) -> dict:
        """A registry reference as base model (`name:version`, `name@alias`) becomes a verified
        folder the training process can load."""
        resolved = dict(spec.get("resolved") or {})
        if resolved.get("model_source") != "registry":
            return spec
        ref = spec["model"]
        name, selector = split_registry_ref(ref)
        cache = self.config.model_cache or (self.config.jobs_dir / ".registry-cache")
        folder = await self.registry.materialize(name, selector, cache / "registry")
        resolved["model_path"] = str(folder)
        return {**spec, "resolved": resolved}

    async def _supervise(self, job: m.Job, process: asyncio.subprocess.Process, stop: asyncio.Event) -> str:
        """Heartbeats until the job's processes exit. Returns "exited", "cancelled", "lost" (the
        lease went to another worker) or "released" (this worker is shutting down)."""
        sampler = ProcessGroupSampler(process.pid)
        exited = asyncio.ensure_future(process.wait())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                await asyncio.wait({exited, stopping}, timeout=self.config.heartbeat_seconds,
                                   return_when=asyncio.FIRST_COMPLETED)
                if exited.done():
                    return "exited"
                if stopping.done():
                    await self._stop(process, grace=0.0)
                    return "released"
                current = await self.jobs.heartbeat(job.job_id, job.attempt, self.config.lease, sampler.sample())
                if current is None:
                    log.warning("lost the lease of job %s; stopping its processes", job.job_id)
                    await self._stop(process)
                    return "lost"
                if current.cancel_requested:
                    await self._stop(process)
                    return "cancelled"
        finally:
            stopping.cancel()

    async def _stop(self, process: asyncio.subprocess.Process, grace: float | None = None) -> None:
        """SIGTERM to the whole group, SIGKILL after the grace period."""
        grace = self.config.stop_grace_seconds if grace is None else grace
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                await asyncio.wait_for(process.wait(), wait)
                return
            except TimeoutError:
                continue

    async def _register(self, job: m.Job, output_dir: Path) -> str:
        result = TrainResult.read(output_dir)
        spec = job.spec
        roots = {"data_root": self.config.data_root, "models_root": self.registry.models_root}
        new = NewVersion(
            name=spec["name"], version=result_version(job.job_id),
            description=f"fine-tuned by job {job.job_id} from {portable_path(spec.get('model', ''), **roots)}",
            model_type=spec.get("model_type") or "fine_tuned",
            parameter_count=result.parameter_count,
            architecture=read_architecture(output_dir / "model"),
            performance_metrics={k: float(v) for k, v in result.metrics.items() if k not in RUN_STATE_METRICS},
            tags=tuple(spec.get("tags") or ()),
            lineage=Lineage(base_model=portable_path(spec.get("model", ""), **roots),
                            dataset_digest=result.dataset_sha256,
                            job_id=job.job_id, config=portable_spec(spec, **roots)),
            changelog=f"trained by job {job.job_id}")
        # Audited like an API call, in the registration's transaction, as the job owner's change.
        actor = Actor(job.owner_key_id, "worker", "worker:RegisterJobVersion", f"job-{job.job_id}-{job.attempt}",
                      f"worker:{self.worker_id}", lambda: f"{new.name}/{new.version}")
        try:
            with acting(actor):
                version = await self.registry.register(new, artifacts_dir=output_dir / "model")
        except AlreadyExists:
            # A previous attempt registered it before its worker died: the same job's version is
            # adopted, so a job never registers two versions.
            version = await self.registry.get_version(new.name, new.version)
            if version.lineage.job_id != job.job_id:
                raise
        return version.model_version_id


def _failure_message(output_dir: Path, log_path: Path, rc: int | None) -> str:
    error = TrainError.read(output_dir)
    if error is not None:
        return error.message[:2000]
    tail = log_path.read_text(errors="replace").strip().splitlines()[-5:] if log_path.exists() else []
    return f"training exited with {rc}: " + " | ".join(tail)[-2000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
