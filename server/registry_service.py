"""RegistryService: translates requests into RegistryStore calls and results into responses.
CompressModel queues a job of kind COMPRESSION (core.compression.compress_version)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from trainforge.core.compression.compress_version import CompressRequest, VersionCompressor
from trainforge.core.errors import Unimplemented
from trainforge.core.jobs import models as jm
from trainforge.core.jobs.store import JobStore
from trainforge.core.registry.store import RegistryStore
from trainforge.server import convert
from trainforge.server.auth import current_principal
from trainforge.v1 import registry_pb2 as pb
from trainforge.v1 import registry_pb2_grpc


class RegistryService(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, store: RegistryStore, compressor: VersionCompressor | None = None, jobs: JobStore | None = None):
        self.store = store
        self.compressor, self.jobs = compressor, jobs

    async def RegisterModel(self, request: pb.RegisterModelRequest, context) -> pb.RegisterModelResponse:
        version = await self.store.register(convert.new_version(request.model_version))
        return pb.RegisterModelResponse(data=convert.model_version(version))

    async def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        page = await self.store.list_models(request.page_size, request.page_token)
        return pb.ListModelsResponse(data=[convert.model(m) for m in page.items],
                                     next_page_token=page.next_page_token, total_size=page.total_size)

    async def GetModel(self, request: pb.GetModelRequest, context) -> pb.GetModelResponse:
        return pb.GetModelResponse(data=convert.model(await self.store.get_model(request.model_id)))

    async def SearchModels(self, request: pb.SearchModelsRequest, context) -> pb.SearchModelsResponse:
        page = await self.store.search(request.filter, request.query, request.order_by,
                                       request.page_size, request.page_token)
        return pb.SearchModelsResponse(data=[convert.model_version(v) for v in page.items],
                                       next_page_token=page.next_page_token, total_size=page.total_size)

    async def CompareModels(self, request: pb.CompareModelsRequest, context) -> pb.CompareModelsResponse:
        result = await self.store.compare(list(request.model_version_ids), list(request.metrics))
        return pb.CompareModelsResponse(data=convert.comparison(result))

    async def UpdateModel(self, request: pb.UpdateModelRequest, context) -> pb.UpdateModelResponse:
        values = {"description": request.model.description, "tags": tuple(request.model.tags)}
        model = await self.store.update_model(request.model_id, values, request.update_mask.paths,
                                              request.model.etag)
        return pb.UpdateModelResponse(data=convert.model(model))

    async def DeleteModel(self, request: pb.DeleteModelRequest, context) -> pb.DeleteModelResponse:
        return pb.DeleteModelResponse(data=convert.model(await self.store.delete_model(request.model_id, request.force)))

    async def ListModelVersions(self, request: pb.ListModelVersionsRequest, context) -> pb.ListModelVersionsResponse:
        page = await self.store.list_versions(request.model_id, request.page_size, request.page_token)
        return pb.ListModelVersionsResponse(data=[convert.model_version(v) for v in page.items],
                                            next_page_token=page.next_page_token, total_size=page.total_size)

    async def GetModelVersion(self, request: pb.GetModelVersionRequest, context) -> pb.GetModelVersionResponse:
        version = await self.store.get_version(request.model_id, request.version)
        return pb.GetModelVersionResponse(data=convert.model_version(version))

    async def UpdateModelVersion(self, request: pb.UpdateModelVersionRequest, context) -> pb.UpdateModelVersionResponse:
        mv = request.model_version
        values = {"description": mv.description, "tags": tuple(mv.tags),
                  "performance_metrics": dict(mv.performance_metrics), "changelog": mv.changelog}
        version = await self.store.update_version(request.model_id, request.version, values,
                                                  request.update_mask.paths, mv.etag)
        return pb.UpdateModelVersionResponse(data=convert.model_version(version))

    async def DeleteModelVersion(self, request: pb.DeleteModelVersionRequest, context) -> pb.DeleteModelVersionResponse:
        version = await self.store.delete_version(request.model_id, request.version, request.force)
        return pb.DeleteModelVersionResponse(data=convert.model_version(version))

    async def SetModelAlias(self, request: pb.SetModelAliasRequest, context) -> pb.SetModelAliasResponse:
        model = await self.store.set_alias(request.model_id, request.alias, request.version)
        return pb.SetModelAliasResponse(data=convert.model(model))

    async def DeleteModelAlias(self, request: pb.DeleteModelAliasRequest, context) -> pb.DeleteModelAliasResponse:
        model = await self.store.delete_alias(request.model_id, request.alias)
        return pb.DeleteModelAliasResponse(data=convert.model(model))

    async def AttachArtifacts(self, request: pb.AttachArtifactsRequest, context) -> pb.AttachArtifactsResponse:
        manifest = await self.store.attach_artifacts(request.model_id, request.version, request.source_path)
        return pb.AttachArtifactsResponse(data=convert.manifest(manifest))

    async def UploadArtifacts(self, request_iterator: AsyncIterator[pb.UploadArtifactsRequest],
                              context) -> pb.UploadArtifactsResponse:
        async def chunks():
            async for message in request_iterator:
                yield message.model_id, message.version, message.path, message.data

        return pb.UploadArtifactsResponse(data=convert.manifest(await self.store.upload_artifacts(chunks())))

    async def ListArtifacts(self, request: pb.ListArtifactsRequest, context) -> pb.ListArtifactsResponse:
        manifest = await self.store.manifest(request.model_id, request.version)
        return pb.ListArtifactsResponse(data=convert.manifest(manifest))

    async def DownloadArtifact(self, request: pb.DownloadArtifactRequest, context):
        chunks = await self.store.open_artifact(request.model_id, request.version, request.path)
        async for offset, data in chunks:
            yield pb.DownloadArtifactResponse(offset=offset, data=data)

    async def VerifyModelVersion(self, request: pb.VerifyModelVersionRequest, context) -> pb.VerifyModelVersionResponse:
        result = await self.store.verify(request.model_id, request.version)
        return pb.VerifyModelVersionResponse(data=convert.verification(result))

    async def RecordModelUsage(self, request: pb.RecordModelUsageRequest, context) -> pb.RecordModelUsageResponse:
        stats = await self.store.record_usage(request.model_id, request.version, request.request_count,
                                              request.error_count, list(request.latencies_ms),
                                              request.tokens_generated)
        return pb.RecordModelUsageResponse(data=convert.usage(stats))

    async def GetModelUsage(self, request: pb.GetModelUsageRequest, context) -> pb.GetModelUsageResponse:
        return pb.GetModelUsageResponse(data=convert.usage(await self.store.get_usage(request.model_id,
                                                                                      request.version)))

    async def GetModelHistory(self, request: pb.GetModelHistoryRequest, context) -> pb.GetModelHistoryResponse:
        return pb.GetModelHistoryResponse(data=convert.history(await self.store.history(request.model_id)))

    async def CompressModel(self, request: pb.CompressModelRequest, context) -> pb.CompressModelResponse:
        if self.compressor is None or self.jobs is None:
            raise Unimplemented("int8 model compression (CompressModel)")
        gate = request.max_perplexity_increase if request.HasField("max_perplexity_increase") else None
        spec = await self.compressor.plan(CompressRequest(
            model_id=request.model_id, version=request.version, compression_type=request.compression_type,
            precision=request.precision, mode=request.mode, max_perplexity_increase=gate, force=request.force,
            target_version=request.target_version))
        job = await self.jobs.create(f"compress {spec['model_name']}:{spec['version']}", spec,
                                     current_principal().key_id, start=True, kind=jm.COMPRESSION)
        return pb.CompressModelResponse(data=convert.job(job))

    async def GetRegistryHealth(self, request: pb.GetRegistryHealthRequest, context) -> pb.GetRegistryHealthResponse:
        return pb.GetRegistryHealthResponse(data=convert.registry_health(await self.store.health()))
