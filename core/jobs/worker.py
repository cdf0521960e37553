"""A worker claims jobs from Postgres, runs each in its own process group, keeps its lease alive
with heartbeats, and records the outcome. Every kind of job (training, evaluation, compression)
runs this way: `execute` dispatches to the kind's runner, and each runner starts its processes
and hands them to the same supervision. Many workers, on many machines, can share one database:
claims use SKIP LOCKED, and a job whose worker stopped heartbeating is claimed again after its
lease expires and resumes from its last checkpoint.

What supervision guarantees:
- a job is never recorded as ended while its processes run: any failure while supervising stops
  the process group first;
- a database hiccup during a heartbeat is retried with backoff for as long as the lease holds;
  resource probes never fail a job (core.jobs.resources);
- a stopping worker asks each job to checkpoint at its next step boundary (`release_requested`),
  waits up to `stop_checkpoint_seconds` for it, then hands the job back to the queue, so the next
  worker resumes from that step rather than from the last periodic checkpoint;
- a starting worker ends the leases of jobs held by workers of this host whose process is gone (a
  crashed `serve`), so they resume at once instead of after their lease (30 s by default)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psycopg

from trainforge.core import child_task
from trainforge.core.access.audit import Actor, acting
from trainforge.core.child_processes import ChildRecords, group_members, pid_alive
from trainforge.core.compression import compress_version
from trainforge.core.compression.compress_version import VersionCompressor
from trainforge.core.deploy import deploy_job
from trainforge.core.errors import AlreadyExists, TrainforgeError
from trainforge.core.jobs import evaluation, launch
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
    # The training data root: registered lineage names data files relative to it (job_lineage),
    # and evaluation and compression jobs read their data from it.
    data_root: Path | None = None
    # The most jobs of each kind (models.KINDS) running at once across all workers; 0: no limit.
    max_running_per_kind: dict[str, int] | None = None
    # On shutdown, how long a job may take to reach its next step boundary and write a checkpoint
    # before it is stopped anyway (0: stop at once; it resumes from its last periodic checkpoint).
    stop_checkpoint_seconds: float = 60.0
    # Where the job processes are recorded, so the next start on this data directory can kill any
    # that outlived a crashed worker (core.child_processes).
    child_records: ChildRecords | None = None
    # Deploy jobs: the remote targets' settings (core.deploy.target_factory.target_config) and
    # where exported GGUF files are kept for the local servers that load them.
    deploy_config: dict | None = None
    serving_dir: Path | None = None


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
        await self._expire_leases_of_dead_local_workers()
        wake = QueueWake(self.config.dsn)
        wake.start()
        sweeper = asyncio.create_task(self._sweep(stop), name=f"trainforge-sweep-{self.worker_id}")
        try:
            await self._loop(stop, wake)
        finally:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
            await wake.close()

    async def _sweep(self, stop: asyncio.Event) -> None:
        """Once a lease period, even while this worker is busy with a job: a job being cancelled
        whose worker is gone becomes CANCELLED (an idle worker's claim does the same sooner)."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.config.lease.total_seconds())
                return
            except TimeoutError:
                pass
            try:
                await self.jobs.cancel_abandoned(self.worker_id)
            except Exception:  # noqa: BLE001 - the next period tries again
                log.warning("sweeping abandoned cancels failed", exc_info=True)

    async def _expire_leases_of_dead_local_workers(self) -> None:
        """Worker ids are `host:pid:random`. A running job held by a worker of this host whose
        process no longer exists cannot be heartbeating: its lease is ended now so it resumes at
        once. (A pid that was reused by another process keeps the lease until it runs out: the
        safe side.) Assumes a hostname names one pid namespace, as it does unless containers share
        the host's UTS namespace but not its pid namespace."""
        host = socket.gethostname()
        for job_id, worker_id in (await self.jobs.running_on(host)).items():
            parts = worker_id.split(":")
            if len(parts) != 3 or not parts[1].isdigit() or pid_alive(int(parts[1])):
                continue
            if await self.jobs.expire_lease(job_id, worker_id, f"worker {worker_id} is gone (process {parts[1]} "
                                            f"is not running on {host}); the job resumes now"):
                log.info("ended the lease of job %s: its worker %s is gone", job_id, worker_id)

    async def _loop(self, stop: asyncio.Event, wake: QueueWake) -> None:
        while not stop.is_set():
            # Every free GPU is held while claiming, so the claim takes only a job that fits in them
            # and no other worker of this process can hand the same GPU to another job meanwhile.
            held = await self.devices.hold_free(stop)
            if held is None:
                return
            try:
                job = await self.jobs.claim(self.worker_id, self.config.lease, self.config.max_running_per_kind,
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
        """Runs one claimed job to its end, by its kind's runner. `gpus`: the GPUs the allocator gave
        it (None: the spec's `distributed.devices` as given, for a caller without an allocator)."""
        runner = {m.TRAINING: self._run_training, m.EVALUATION: self._run_evaluation,
                  m.COMPRESSION: self._run_compression, m.DEPLOYMENT: self._run_deployment}[job.kind]
        await runner(job, stop or asyncio.Event(), gpus)

    async def _run_training(self, job: m.Job, stop: asyncio.Event, gpus: list[str] | None) -> None:
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
        outcome = await self._supervise(job, process, stop)
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
            deploying = await deploy_job.auto_deploy(self, job, version_id)
            await self.jobs.finish(job.job_id, job.attempt, m.SUCCEEDED, f"succeeded; registered {version_id}{deploying}",
                                   result_model_version_id=version_id)
        else:
            message = _failure_message(output_dir, log_path, rc)
            await self.jobs.finish(job.job_id, job.attempt, m.FAILED, message,
                                   error={"code": 13, "message": message})

    # -- evaluation and compression: one child process each --------------------------------------
    async def _run_evaluation(self, job: m.Job, stop: asyncio.Event, gpus: list[str] | None) -> None:
        spec = job.spec
        try:
            folder = await self.registry.materialize(spec["model_name"], spec["version"], self._registry_cache())
            request = self._evaluator().child_request(spec, folder)
            started = time.monotonic()
            reply = await self._run_child(job, evaluation.MODULE, request, stop, "evaluation", gpus)
            if reply is None:
                return
            result = evaluation.result(spec, reply, time.monotonic() - started)
        except TrainforgeError as exc:
            await self._fail(job, exc)
            return
        summary = ", ".join(f"{k} {v:.4g}" for k, v in sorted(result["metrics"].items()))
        await self.jobs.finish(job.job_id, job.attempt, m.SUCCEEDED,
                               f"evaluated {spec['model_name']}:{spec['version']} on {result['num_samples']} "
                               f"samples: {summary}", result=result)

    async def _run_compression(self, job: m.Job, stop: asyncio.Event, gpus: list[str] | None) -> None:
        spec, compressor = job.spec, VersionCompressor(self.registry, self._data_root())
        # Per attempt: a worker that lost the lease may still be stopping its child, which writes
        # into its own attempt's folder, never into this one.
        job_dir = self.config.jobs_dir / job.job_id
        output = job_dir / f"attempt-{job.attempt}-output"
        for stale in job_dir.glob("attempt-*-output"):  # dead attempts' partial folders
            await asyncio.to_thread(shutil.rmtree, stale, True)
        try:
            version = await compressor.adopt(spec, job.job_id)
            if version is None:
                folder = await self.registry.materialize(spec["model_name"], spec["version"], self._registry_cache())
                request = await compressor.child_request(spec, folder, output)
                reply = await self._run_child(job, compress_version.MODULE, request, stop, "compression", gpus)
                if reply is None:
                    return
                # Audited like an API call, in the registration's transaction, as the job owner's change.
                actor = Actor(job.owner_key_id, "worker", "worker:RegisterCompressedVersion",
                              f"job-{job.job_id}-{job.attempt}", f"worker:{self.worker_id}",
                              lambda: f"{spec['model_name']}/{spec['target_version']}")
                with acting(actor):
                    version = await compressor.register(spec, reply, job.job_id, output)
        except TrainforgeError as exc:
            await self._fail(job, exc)
            return
        finally:
            await asyncio.to_thread(shutil.rmtree, output, True)
        await self.jobs.finish(job.job_id, job.attempt, m.SUCCEEDED,
                               f"succeeded; registered {version.name}:{version.version} ({version.model_version_id})",
                               result_model_version_id=version.model_version_id,
                               result=compress_version.job_result(version))

    async def _run_deployment(self, job: m.Job, stop: asyncio.Event, gpus: list[str] | None) -> None:
        await deploy_job.run_deployment(self, job, stop, gpus)

    async def _run_child(self, job: m.Job, module: str, request: dict, stop: asyncio.Event, what: str,
                         gpus: list[str] | None) -> dict | None:
        """Runs `python -m module` as the job's process group under `_supervise`, the request on
        stdin (core.child_task). Returns the child's result; None when the outcome is already
        recorded (cancelled, handed back, or the job is another worker's now)."""
        job_dir = self.config.jobs_dir / job.job_id
        job_dir.mkdir(parents=True, exist_ok=True)
        request_path = job_dir / f"attempt-{job.attempt}.request.json"
        reply_path = job_dir / f"attempt-{job.attempt}.reply.json"
        log_path = job_dir / f"attempt-{job.attempt}.log"
        request_path.write_text(json.dumps(request))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        if gpus is not None:  # the allocator's GPUs only ("" hides them all: the child runs on the CPU)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        # The job id on the command line names the process in `ps` for operators.
        argv = [sys.executable, "-m", module, "--job-id", job.job_id]
        with open(request_path, "rb") as stdin, open(reply_path, "wb") as stdout, open(log_path, "ab") as stderr:
            process = await asyncio.create_subprocess_exec(
                *launch.with_parent_death_signal(argv), stdin=stdin, stdout=stdout, stderr=stderr, env=env,
                start_new_session=True)
        outcome = await self._supervise(job, process, stop)
        if outcome == "lost":
            return None
        if outcome == "released":
            await self.jobs.release(job.job_id, job.attempt,
                                    f"worker {self.worker_id} shut down; queued again to run from the start")
            return None
        if outcome == "cancelled":
            await self.jobs.finish(job.job_id, job.attempt, m.CANCELLED, f"cancelled; the {what} was stopped")
            return None
        tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-3:])[-2000:]
        return child_task.read_reply(reply_path.read_text(errors="replace"), tail, process.returncode, what)

    async def _fail(self, job: m.Job, exc: TrainforgeError) -> None:
        error = {"type": type(exc).__name__, "message": exc.message, "reason": exc.reason,
                 "metadata": {k: str(v) for k, v in exc.metadata.items()}}
        await self.jobs.finish(job.job_id, job.attempt, m.FAILED, exc.message, error=error)

    def _registry_cache(self) -> Path:
        return (self.config.model_cache or (self.config.jobs_dir / ".registry-cache")) / "registry"

    def _data_root(self) -> Path:
        if self.config.data_root is None:
            raise TypeError("WorkerConfig.data_root is required to run evaluation and compression jobs")
        return self.config.data_root

    def _evaluator(self) -> evaluation.ModelEvaluator:
        return evaluation.ModelEvaluator(self.registry, self._data_root())

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
        lease went to another worker, or could not be renewed) or "released" (this worker is
        shutting down; the job checkpointed or was stopped). Whatever goes wrong in here, the
        processes are stopped before the exception leaves: the caller then records the job as
        failed, and a failed job must not go on training."""
        records = self.config.child_records
        if records is not None:
            records.add(process.pid, f"training job {job.job_id}")
        sampler = ProcessGroupSampler(process.pid)
        exited = asyncio.ensure_future(process.wait())
        stopping = asyncio.ensure_future(stop.wait())
        lease = _LeaseClock(self.config)
        try:
            while True:
                await asyncio.wait({exited, stopping}, timeout=self.config.heartbeat_seconds,
                                   return_when=asyncio.FIRST_COMPLETED)
                if exited.done():
                    return "exited"
                if stopping.done():
                    return await self._checkpoint_and_release(job, process, exited, sampler, lease)
                current = await self._heartbeat(job, sampler, lease)
                if current is None:
                    await self._stop(process)
                    return "lost"
                if current.cancel_requested:
                    await self._stop(process)
                    return "cancelled"
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                log.exception("supervising job %s failed; stopping its processes", job.job_id)
            # Shielded: a cancelled worker task still stops the job it was running.
            await asyncio.shield(self._stop(process))
            raise
        finally:
            stopping.cancel()
            if records is not None:
                records.remove(process.pid)

    async def _heartbeat(self, job: m.Job, sampler: ProcessGroupSampler, lease: _LeaseClock) -> m.Job | None:
        """Renews the lease. A transient database error (connection lost, server restarting, pool
        exhausted: psycopg.OperationalError) is retried with backoff while the lease still holds;
        None when the job is no longer this attempt's or the lease could not be renewed in time."""
        delay = HEARTBEAT_RETRY_FIRST_SECONDS
        while True:
            try:
                current = await self.jobs.heartbeat(job.job_id, job.attempt, self.config.lease, sampler.sample())
            except psycopg.OperationalError as exc:
                left = lease.seconds_left()
                if left <= 0:
                    log.error("could not renew the lease of job %s before it ran out (%s); stopping its processes",
                              job.job_id, exc)
                    return None
                log.warning("heartbeat of job %s failed (%s); retrying in %.1f s", job.job_id, exc, min(delay, left))
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, HEARTBEAT_RETRY_MAX_SECONDS)
                continue
            if current is None:
                log.warning("lost the lease of job %s; stopping its processes", job.job_id)
            else:
                lease.renewed()
            return current

    async def _checkpoint_and_release(self, job: m.Job, process: asyncio.subprocess.Process,
                                      exited: asyncio.Future, sampler: ProcessGroupSampler, lease: _LeaseClock) -> str:
        """This worker is stopping. Asks the job to checkpoint at its next step boundary and exit
        (EXIT_RELEASED), keeps its lease alive meanwhile, and stops it once
        `stop_checkpoint_seconds` have passed. Returns "released", or "exited" when the job ended
        another way meanwhile (finished, failed, or cancelled or paused by its owner), or "lost"."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.stop_checkpoint_seconds
        asked = False
        # Only training checkpoints: an evaluation or compression is stopped at once and runs again.
        if self.config.stop_checkpoint_seconds > 0 and job.kind == m.TRAINING:
            log.info("shutting down: job %s checkpoints at its next step (waiting up to %.0f s)", job.job_id,
                     self.config.stop_checkpoint_seconds)
            try:
                asked = await self.jobs.request_release(
                    job.job_id, job.attempt, f"worker {self.worker_id} is shutting down; the job checkpoints at its "
                    f"next step and goes back to the queue (at most {self.config.stop_checkpoint_seconds:.0f} s)")
            except psycopg.Error as exc:
                log.warning("could not ask job %s to checkpoint (%s); stopping it", job.job_id, exc)
            else:
                if not asked:
                    await self._stop(process)
                    return "lost"
        while asked and not exited.done() and (left := deadline - loop.time()) > 0:
            await asyncio.wait({exited}, timeout=min(self.config.heartbeat_seconds, left))
            if not exited.done() and await self._heartbeat(job, sampler, lease) is None:
                await self._stop(process)
                return "lost"
        if exited.done():
            return "released" if process.returncode == launch.EXIT_RELEASED else "exited"
        if asked:
            log.warning("job %s did not checkpoint within %.0f s of the shutdown; stopping it", job.job_id,
                        self.config.stop_checkpoint_seconds)
        await self._stop(process)
        return "released"

    async def _stop(self, process: asyncio.subprocess.Process, grace: float | None = None) -> None:
        """SIGTERM to the whole group, SIGKILL after the grace period; returns once no process of
        the group is left (DeepSpeed's ranks outlive their launcher by a moment), or 5 s after
        SIGKILL at worst."""
        grace = self.config.stop_grace_seconds if grace is None else grace
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            if await _group_ended(process, wait):
                return

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


async def _group_ended(process: asyncio.subprocess.Process, timeout: float) -> bool:
    """Waits up to `timeout` for the group's first process to exit and every other one to be gone."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        return False
    while group_members(process.pid, since_ticks=0):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.1)
    return True


HEARTBEAT_RETRY_FIRST_SECONDS = 0.25
HEARTBEAT_RETRY_MAX_SECONDS = 4.0


class _LeaseClock:
    """When this worker's lease on a job runs out, by the worker's own clock: the last renewal
    plus the lease, less one heartbeat interval so the processes are stopped before another
    worker can claim the job (the database's clock decides the claim)."""

    def __init__(self, config: WorkerConfig):
        self.lease = config.lease.total_seconds()
        self.margin = min(config.heartbeat_seconds, self.lease / 3)
        self._renewed = asyncio.get_running_loop().time()  # the claim set the lease

    def renewed(self) -> None:
        self._renewed = asyncio.get_running_loop().time()

    def seconds_left(self) -> float:
        return self._renewed + self.lease - self.margin - asyncio.get_running_loop().time()


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
