"""The gateway's body check: which keys of a REST body the transcoder would drop (server.body_fields).

Envoy's `ext_authz` filter, placed before the transcoder and switched off by route for methods
without a body, sends each REST request's method, path and buffered body (and no other header:
the API key stays out of it) to `envoy.service.auth.v3.Authorization/Check` here, one unary call.
The answer is always OK (this is not the authorisation: the interceptor does that for the call
itself): it removes any client-sent `x-trainforge-unknown-fields` (only the gateway may set it) or,
when the body has unknown keys, sets it to them as JSON. The request then goes on to be
transcoded; the interceptor, after authentication, refuses a call carrying the header with
INVALID_ARGUMENT listing every key (google.rpc.BadRequest), before the handler runs, so nothing is
written.

Why a header rather than a denial from here: the error is then made, audited and formatted by the
same code as every other error, after authentication (a caller without a key still gets 401, not
a schema hint), and the gateway's local-reply JSON mapper does not rewrite it. Why ext_authz and
not ext_proc: one unary message each way; ext_proc's bidirectional stream (headers message, body
message, two answers) cost twice the server CPU per call (docs/decisions.md).
"""

from __future__ import annotations

import logging

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as pb
from envoy.service.auth.v3 import external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2

from trainforge.server.body_fields import BodySchema, encode
from trainforge.server.serving_auth import ServingKeyCheck, is_serving_path

UNKNOWN_FIELDS_HEADER = "x-trainforge-unknown-fields"
SERVICE_NAME = "envoy.service.auth.v3.Authorization"
log = logging.getLogger("trainforge.body_check")


class BodyCheckService(external_auth_pb2_grpc.AuthorizationServicer):
    """Envoy's Authorization service: the body check of REST calls, and (`serving`) the API-key
    check of the stable serving paths (server/serving_auth.py)."""

    def __init__(self, schema: BodySchema, serving: ServingKeyCheck | None = None):
        self.schema, self.serving = schema, serving

    async def Check(self, request: pb.CheckRequest, context) -> pb.CheckResponse:
        http = request.attributes.request.http
        if self.serving is not None and is_serving_path(http.path):
            return await self.serving.check(dict(http.headers))
        body = http.raw_body or http.body.encode()
        try:
            problems = self.schema.unknown_fields(http.method, http.path, body)
        except Exception:  # noqa: BLE001 - a fault in the check must not fail the call it checks
            log.exception("body check of %s %s failed; the call goes on unchecked", http.method, http.path)
            problems = []
        ok = pb.OkHttpResponse()
        if problems:
            ok.headers.append(base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=UNKNOWN_FIELDS_HEADER, value=encode(problems)),  # ext_authz reads `value`
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD))
        else:
            ok.headers_to_remove.append(UNKNOWN_FIELDS_HEADER)
        return pb.CheckResponse(status=status_pb2.Status(code=code_pb2.OK), ok_response=ok)
