"""TrainingService. System health is served now; jobs, synthetic data, evaluation and statistics
belong to the training engine and answer UNIMPLEMENTED, naming it, until it lands."""

from __future__ import annotations

import time
from importlib import metadata

from trainforge.core.errors import Unimplemented
from trainforge.core.registry.store import RegistryStore
from trainforge.v1 import training_pb2 as pb
from trainforge.v1 import training_pb2_grpc

TRAINING_ENGINE = "the training engine (durable fine-tuning jobs)"


def _version() -> str:
    try:
        return metadata.version("trainforge")
    except metadata.PackageNotFoundError:
        return "unknown"


class TrainingService(training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, registry: RegistryStore, started: float | None = None):
        self.registry = registry
        self.started = started or time.monotonic()
        self.version = _version()

    async def CreateJob(self, request, context):
        raise Unimplemented(f"{TRAINING_ENGINE}: CreateJob")

    async def ListJobs(self, request, context):
        raise Unimplemented(f"{TRAINING_ENGINE}: ListJobs")

    async def GetJob(self, request, context):
        raise Unimplemented(f"{TRAINING_ENGINE}: GetJob")

    async def StartJob(self, request, context):
        raise Unimplemented(f"{TRAINING_ENGINE}: StartJob")

    async def CancelJob(self, request, context):
        raise Unimplemented(f"{TRAINING_ENGINE}: CancelJob")

    async def PauseJob(self, request, context):
        raise Unimplemented(f"{TRAINING_ENGINE}: PauseJob")

    async def ResumeJob(self, request, context):
        raise Unimplemented(f"{TRAINING_ENGINE}: ResumeJob")

    async def WatchJob(self, request, context):
        raise Unimplemented(f"{TRAINING_ENGINE}: WatchJob")
        yield  # a generator, so the stream handler type matches the proto

    async def ListJobEvents(self, request, context):
        raise Unimplemented(f"{TRAINING_ENGINE}: ListJobEvents")

    async def ListJobCheckpoints(self, request, context):
        raise Unimplemented(f"{TRAINING_ENGINE}: ListJobCheckpoints")

    async def GenerateSyntheticData(self, request, context):
        raise Unimplemented("synthetic data generation (GenerateSyntheticData)")

    async def EvaluateModel(self, request, context):
        raise Unimplemented("model evaluation (EvaluateModel)")

    async def GetTrainingStatistics(self, request, context):
        raise Unimplemented(f"{TRAINING_ENGINE}: GetTrainingStatistics")

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
        status = "ok" if all(c.status == "ok" for c in components) else "degraded"
        return pb.GetSystemHealthResponse(data=pb.SystemHealth(
            status=status, components=components, version=self.version,
            uptime_seconds=time.monotonic() - self.started))
