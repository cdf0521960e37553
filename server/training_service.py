"""TrainingService: jobs (create, list, get, start, cancel, pause, resume, watch, events,
checkpoints, deleting an ended job's files), evaluation, statistics and system health. Synthetic data answers UNIMPLEMENTED,
naming the capability, until it lands."""

from __future__ import annotations

import asyncio
import time
from importlib import metadata

from google.protobuf import json_format

from trainforge.core.errors import Unimplemented
from trainforge.core.jobs import models as jm
from trainforge.core.jobs.job_files import JobFiles
from trainforge.core.jobs.spec import JobSpecPreparer
from trainforge.core.jobs.store import JobStore
from trainforge.core.jobs.worker_heartbeats import WorkerDirectory
from trainforge.core.registry.store import RegistryStore
from trainforge.server import convert
from trainforge.server.auth import current_principal
from trainforge.server.job_events import JobEventBroker
from trainforge.v1 import training_pb2 as pb
from trainforge.v1 import training_pb2_grpc

WATCH_POLL_SECONDS = 5.0  # a stream re-reads at least this often even if a notification was missed


def _version() -> str:
    try:
        return metadata.version("trainforge")
    except metadata.PackageNotFoundError:
        return "unknown"


class TrainingService(training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, registry: RegistryStore, jobs: JobStore, broker: JobEventBroker, preparer: JobSpecPreparer,
                 evaluator=None, started: float | None = None, job_files: JobFiles | None = None):
        self.registry, self.jobs, self.broker, self.preparer = registry, jobs, broker, preparer
        self.job_files = job_files
        self.evaluator = evaluator
        self.workers = WorkerDirectory(jobs.pool)
        self.started = started or time.monotonic()
        self.version = _version()

    # -- jobs --------------------------------------------------------------------------------
    async def CreateJob(self, request: pb.CreateJobRequest, context) -> pb.CreateJobResponse:
        spec = json_format.MessageToDict(request.spec, preserving_proto_field_name=True)
        prepared = await self.preparer.prepare_checked(spec)
        job = await self.jobs.create(prepared["name"], prepared, current_principal().key_id, start=request.start)
        return pb.CreateJobResponse(data=convert.job(job))

    async def ListJobs(self, request: pb.ListJobsRequest, context) -> pb.ListJobsResponse:
        states = [pb.JobState.Name(s).removeprefix("JOB_STATE_") for s in request.states]
        page = await self.jobs.list(states, request.page_size, request.page_token)
        return pb.ListJobsResponse(data=[convert.job(j) for j in page.items], next_page_token=page.next_page_token,
                                   total_size=page.total_size)

    async def GetJob(self, request: pb.GetJobRequest, context) -> pb.GetJobResponse:
        return pb.GetJobResponse(data=convert.job(await self.jobs.get(request.job_id)))

    async def StartJob(self, request: pb.StartJobRequest, context) -> pb.StartJobResponse:
        return pb.StartJobResponse(data=convert.job(await self.jobs.start(request.job_id,
                                                                          current_principal().key_id)))

    async def CancelJob(self, request: pb.CancelJobRequest, context) -> pb.CancelJobResponse:
        return pb.CancelJobResponse(data=convert.job(await self.jobs.cancel(request.job_id)))

    async def PauseJob(self, request: pb.PauseJobRequest, context) -> pb.PauseJobResponse:
        return pb.PauseJobResponse(data=convert.job(await self.jobs.pause(request.job_id)))

    async def ResumeJob(self, request: pb.ResumeJobRequest, context) -> pb.ResumeJobResponse:
        return pb.ResumeJobResponse(data=convert.job(await self.jobs.resume(request.job_id,
                                                                            current_principal().key_id)))

    async def WatchJob(self, request: pb.WatchJobRequest, context):
        job = await self.jobs.get(request.job_id)  # NOT_FOUND before the stream starts
        after = max(0, request.after_sequence)
        wake = self.broker.subscribe(job.job_id)
        try:
            while True:
                wake.clear()
                events = await self.jobs.events(job.job_id, after, 500)
                for event in events:
                    yield pb.WatchJobResponse(data=convert.job_event(event))
                    after = event.sequence
                if events:
                    continue
                if (await self.jobs.get(job.job_id)).state in jm.TERMINAL:
                    # The final event is written in the same transaction as the final state.
                    if not await self.jobs.events(job.job_id, after, 1):
                        return
                    continue
                try:
                    await asyncio.wait_for(wake.wait(), WATCH_POLL_SECONDS)
                except TimeoutError:
                    pass
        finally:
            self.broker.unsubscribe(job.job_id, wake)

    async def ListJobEvents(self, request: pb.ListJobEventsRequest, context) -> pb.ListJobEventsResponse:
        page = await self.jobs.list_events(request.job_id, request.page_size, request.page_token)
        return pb.ListJobEventsResponse(data=[convert.job_event(e) for e in page.items],
                                        next_page_token=page.next_page_token)

    async def ListJobCheckpoints(self, request: pb.ListJobCheckpointsRequest, context) -> pb.ListJobCheckpointsResponse:
        page = await self.jobs.checkpoints(request.job_id, request.page_size, request.page_token)
        return pb.ListJobCheckpointsResponse(data=[convert.checkpoint(c) for c in page.items],
                                             next_page_token=page.next_page_token)

    async def DeleteJobFiles(self, request: pb.DeleteJobFilesRequest, context) -> pb.DeleteJobFilesResponse:
        if self.job_files is None:
            raise Unimplemented("deleting job files (DeleteJobFiles)")
        caller = current_principal()
        job, freed = await self.job_files.delete(request.job_id, None if caller.role == "admin" else caller.key_id)
        return pb.DeleteJobFilesResponse(data=convert.job(job), bytes_freed=freed)

    # -- data, evaluation, statistics, health ------------------------------------------------
    async def GenerateSyntheticData(self, request, context):
        raise Unimplemented("synthetic data generation (GenerateSyntheticData)")

    async def EvaluateModel(self, request: pb.EvaluateModelRequest, context) -> pb.EvaluateModelResponse:
        if self.evaluator is None:
            raise Unimplemented("model evaluation (EvaluateModel)")
        result = await self.evaluator.evaluate(request.model_name, request.version, request.data_path,
                                               list(request.metrics), request.max_samples, request.max_new_tokens,
                                               request.batch_size)
        return pb.EvaluateModelResponse(data=pb.EvaluationResult(
            model_name=result["model_name"], version=result["version"], metrics=result["metrics"],
            num_samples=result["num_samples"], duration_seconds=result["duration_seconds"]))

    async def GetTrainingStatistics(self, request, context) -> pb.GetTrainingStatisticsResponse:
        stats = await self.jobs.statistics()
        return pb.GetTrainingStatisticsResponse(data=pb.TrainingStatistics(
            total_jobs=stats.total_jobs, jobs_by_state=stats.jobs_by_state, success_rate=stats.success_rate,
            average_training_seconds=stats.average_training_seconds,
            p50_training_seconds=stats.p50_training_seconds))

    async def GetSystemHealth(self, request: pb.GetSystemHealthRequest, context) -> pb.GetSystemHealthResponse:
        registry = await self.registry.health()
        components = [
            pb.ComponentHealth(name="database", status="ok" if registry.database_ok else "degraded",
                               detail="PostgreSQL answered" if registry.database_ok else "PostgreSQL did not answer",
                               latency_ms=registry.database_latency_ms),
            pb.ComponentHealth(name="artifact_store", status="ok" if registry.artifact_store_ok else "degraded",
                               detail=f"{registry.artifact_bytes} bytes in {registry.version_count} versions"
                               if registry.artifact_store_ok else "artifact root is not writable"),
        ]
        workers, workers_component = await self._workers_health()
        components.append(workers_component)
        status = "ok" if all(c.status == "ok" for c in components) else "degraded"
        return pb.GetSystemHealthResponse(data=pb.SystemHealth(
            status=status, components=components, version=self.version,
            uptime_seconds=time.monotonic() - self.started, workers=workers))

    async def _workers_health(self) -> tuple[pb.WorkersHealth | None, pb.ComponentHealth]:
        """Live worker processes and the queue: degraded when jobs wait and nobody runs them."""
        started = time.perf_counter()
        try:
            report = await self.workers.report()
        except Exception:  # noqa: BLE001 - health reports the failure instead of raising it
            return None, pb.ComponentHealth(name="workers", status="degraded",
                                            detail="could not read the workers table",
                                            latency_ms=(time.perf_counter() - started) * 1000)
        return convert.workers_health(report), pb.ComponentHealth(
            name="workers", status="degraded" if report.degraded else "ok", detail=report.detail(),
            latency_ms=(time.perf_counter() - started) * 1000)
