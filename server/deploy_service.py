"""DeployService. Deployment targets (Ollama, Hugging Face hub, local server, S3) belong to the
deploy capability and answer UNIMPLEMENTED, naming it, until it lands."""

from __future__ import annotations

from trainforge.core.errors import Unimplemented
from trainforge.v1 import deploy_pb2_grpc

DEPLOYMENTS = "model deployment (Ollama, Hugging Face hub, local server, S3)"


class DeployService(deploy_pb2_grpc.DeployServiceServicer):
    async def DeployModel(self, request, context):
        raise Unimplemented(f"{DEPLOYMENTS}: DeployModel")

    async def ListDeployments(self, request, context):
        raise Unimplemented(f"{DEPLOYMENTS}: ListDeployments")

    async def GetDeployment(self, request, context):
        raise Unimplemented(f"{DEPLOYMENTS}: GetDeployment")

    async def RollbackDeployment(self, request, context):
        raise Unimplemented(f"{DEPLOYMENTS}: RollbackDeployment")

    async def CheckDeploymentHealth(self, request, context):
        raise Unimplemented(f"{DEPLOYMENTS}: CheckDeploymentHealth")
