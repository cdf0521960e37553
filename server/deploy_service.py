"""DeployService: deployments of registered versions to the local server, Ollama, a Hugging Face
hub or S3. DeployModel validates everything up front and queues a job of kind DEPLOYMENT
(core.deploy.deploy_job) that does the work; rollback, undeploy and health checks are quick and
run here (a remote target's alias moves over the network within the call)."""

from __future__ import annotations

import asyncio
import time

from trainforge.core.deploy import models as d
from trainforge.core.deploy.deploy_job import check_local
from trainforge.core.deploy.store import DeploymentStore
from trainforge.core.deploy.target_factory import build_target, check_target
from trainforge.core.deploy.targets.base import ShipResult
from trainforge.core.registry.store import RegistryStore
from trainforge.core.registry.validation import Violations, check_alias, check_tags
from trainforge.server import convert
from trainforge.server.auth import current_principal
from trainforge.v1 import deploy_pb2 as pb
from trainforge.v1 import deploy_pb2_grpc


class DeployService(deploy_pb2_grpc.DeployServiceServicer):
    def __init__(self, deployments: DeploymentStore, registry: RegistryStore, target_config: dict):
        self.deployments, self.registry, self.target_config = deployments, registry, target_config

    async def DeployModel(self, request: pb.DeployModelRequest, context) -> pb.DeployModelResponse:
        v = Violations()
        if not request.model_version_id:
            v.add("model_version_id", "is required")
        alias = request.alias or d.DEFAULT_ALIAS
        check_alias(v, "alias", alias)
        check_tags(v, "deployment_tags", request.deployment_tags)
        timeout = request.health_check_timeout or d.DEFAULT_HEALTH_CHECK_TIMEOUT_MS
        if not d.MIN_HEALTH_CHECK_TIMEOUT_MS <= timeout <= d.MAX_HEALTH_CHECK_TIMEOUT_MS:
            v.add("health_check_timeout", f"must be between {d.MIN_HEALTH_CHECK_TIMEOUT_MS} and "
                                          f"{d.MAX_HEALTH_CHECK_TIMEOUT_MS} milliseconds")
        if not request.target:
            v.add("target", f"is required; one of {', '.join(d.TARGETS)}")
        else:
            problems = await asyncio.to_thread(check_target, request.target, request.engine, self.target_config)
            v.items.extend(problems)
        v.raise_if_any()
        version = await self.registry.resolve_version(request.model_version_id, "model_version_id")
        health_check = request.health_check_enabled if request.HasField("health_check_enabled") else True
        deployment, _ = await self.deployments.create(
            version, target=request.target, alias=alias,
            engine=(request.engine or d.LLAMA_CPP) if request.target == d.LOCAL else "",
            auto_rollback=request.auto_rollback, health_check_enabled=health_check,
            health_check_timeout_ms=timeout, deployment_tags=list(request.deployment_tags),
            owner_key_id=current_principal().key_id)
        return pb.DeployModelResponse(data=convert.deployment(deployment))

    async def ListDeployments(self, request: pb.ListDeploymentsRequest, context) -> pb.ListDeploymentsResponse:
        states = [pb.DeploymentState.Name(s).removeprefix("DEPLOYMENT_STATE_") for s in request.states]
        page = await self.deployments.list(request.model_version_id or "-", states=states,
                                           targets=list(request.targets), page_size=request.page_size,
                                           page_token=request.page_token)
        return pb.ListDeploymentsResponse(data=[convert.deployment(x) for x in page.items],
                                          next_page_token=page.next_page_token)

    async def GetDeployment(self, request: pb.GetDeploymentRequest, context) -> pb.GetDeploymentResponse:
        deployment = await self.deployments.get(request.deployment_id, request.model_version_id)
        return pb.GetDeploymentResponse(data=convert.deployment(deployment))

    async def RollbackDeployment(self, request: pb.RollbackDeploymentRequest, context) -> pb.RollbackDeploymentResponse:
        live = await self.deployments.rollback(request.deployment_id, request.model_version_id, self._restore)
        return pb.RollbackDeploymentResponse(data=convert.deployment(live))

    async def UndeployDeployment(self, request: pb.UndeployDeploymentRequest, context) -> pb.UndeployDeploymentResponse:
        gone = await self.deployments.undeploy(request.deployment_id, request.model_version_id, self._remove)
        return pb.UndeployDeploymentResponse(data=convert.deployment(gone))

    async def CheckDeploymentHealth(self, request: pb.CheckDeploymentHealthRequest,
                                    context) -> pb.CheckDeploymentHealthResponse:
        deployment = await self.deployments.get(request.deployment_id, request.model_version_id)
        timeout_s = deployment.health_check_timeout_ms / 1000
        if deployment.target == d.LOCAL:
            serving = deployment.serving
            if serving.get("ready") and serving.get("port"):
                health = await check_local(serving["host"], int(serving["port"]), timeout_s)
            else:
                health = {"healthy": False, "detail": f"no local server is running for it ({deployment.state})",
                          "latency_ms": 0.0}
        elif deployment.endpoint:
            target = build_target(deployment.target, self.target_config)
            result = await asyncio.to_thread(target.health, ShipResult(deployment.endpoint, deployment.details),
                                             timeout_s)
            health = {"healthy": result.healthy, "detail": result.detail, "latency_ms": result.latency_ms}
        else:
            health = {"healthy": False, "detail": f"nothing was shipped ({deployment.state})", "latency_ms": 0.0}
        health.setdefault("check_time", time.time())
        deployment = await self.deployments.record_health(deployment.deployment_id, health)
        if not health["healthy"] and deployment.live and deployment.auto_rollback and deployment.previous_deployment_id:
            await self.deployments.rollback(deployment.deployment_id, "-", self._restore)
        return pb.CheckDeploymentHealthResponse(data=convert.deployment_health(deployment.deployment_id, health))

    # -- what a remote target does on rollback and undeploy ---------------------------------------
    async def _restore(self, current: d.Deployment, previous: d.Deployment) -> None:
        if current.target != d.LOCAL:  # the local target's switch is the serving supervisor's
            target = build_target(current.target, self.target_config)
            await asyncio.to_thread(target.restore_alias, current.model_name, current.alias,
                                    ShipResult(previous.endpoint, previous.details))

    async def _remove(self, current: d.Deployment) -> None:
        if current.target != d.LOCAL:
            target = build_target(current.target, self.target_config)
            await asyncio.to_thread(target.remove, current.model_name, current.alias,
                                    ShipResult(current.endpoint, current.details))
