"""The API-key check of the stable serving paths (`/api/serving/{model}/{alias}/...`). Those
requests go from Envoy straight to a deployment's inference server, never through the gRPC
interceptor, so the gateway asks first: its `trainforge.serving_auth` ext_authz filter (switched on
for the serving routes alone, server/serving_routes.py) sends the request's `authorization` header
to the server's Authorization service, which hands serving paths to this check. Any role may call a
model; a missing, malformed, revoked or expired key gets 401. The key is removed before the request
goes on, so a model server never sees it."""

from __future__ import annotations

import json

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as pb
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from trainforge.core.errors import TrainforgeError, Unauthenticated
from trainforge.core.serving.routes import SERVING_PREFIX
from trainforge.server.auth import Authorizer, bearer_token


def is_serving_path(path: str) -> bool:
    return path.startswith(SERVING_PREFIX)


class ServingKeyCheck:
    def __init__(self, authorizer: Authorizer):
        self.authorizer = authorizer

    async def check(self, headers: dict[str, str]) -> pb.CheckResponse:
        if self.authorizer.enabled:
            try:
                token = bearer_token([("authorization", headers["authorization"])] if "authorization" in headers
                                     else [])
                if not token:
                    raise Unauthenticated("calling a deployed model needs an API key: send "
                                          "`authorization: Bearer tf_...`", reason="MISSING_KEY")
                await self.authorizer.authenticate(token)
            except TrainforgeError as exc:
                return _denied(exc)
        ok = pb.OkHttpResponse(headers_to_remove=["authorization"])
        return pb.CheckResponse(status=status_pb2.Status(code=code_pb2.OK), ok_response=ok)


def _denied(exc: TrainforgeError) -> pb.CheckResponse:
    # OpenAI's error shape: the clients of these paths are OpenAI clients.
    body = json.dumps({"error": {"message": exc.message, "type": "authentication_error", "param": None,
                                 "code": exc.reason.lower()}})
    denied = pb.DeniedHttpResponse(
        status=http_status_pb2.HttpStatus(code=http_status_pb2.Unauthorized), body=body,
        headers=[base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key="content-type", value="application/json"))])
    return pb.CheckResponse(status=status_pb2.Status(code=code_pb2.UNAUTHENTICATED, message=exc.message),
                            denied_response=denied)
