"""Envoy's external processor (ext_proc) for REST bodies: finds the keys the transcoder would drop.

The gateway's ext_proc filter, placed before the transcoder and enabled only for methods that carry
a body, opens one stream per request: the request headers (method, path), then the buffered body.
This service answers the headers by removing any client-sent `x-trainforge-unknown-fields` (only the
gateway may set it) and the body by setting that header to the unknown keys, if any, as JSON. The
request then goes on to be transcoded; the server's interceptor, after authentication, refuses a
call carrying the header with INVALID_ARGUMENT listing every key (google.rpc.BadRequest), before
the handler runs, so nothing is written.

Why a header rather than an ImmediateResponse from here: the error is then made, audited and
formatted by the same code as every other error, after authentication (a caller without a key
still gets 401, not a schema hint), and the gateway's local-reply JSON mapper does not rewrite it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc

from trainforge.server.body_fields import BodySchema, encode

UNKNOWN_FIELDS_HEADER = "x-trainforge-unknown-fields"
log = logging.getLogger("trainforge.body_check")
SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"
FILTER_NAME = "envoy.filters.http.ext_proc"  # the key Envoy files request attributes under


class BodyCheckService(external_processor_pb2_grpc.ExternalProcessorServicer):
    def __init__(self, schema: BodySchema):
        self.schema = schema

    async def Process(self, request_iterator: AsyncIterator[pb.ProcessingRequest],
                      context) -> AsyncIterator[pb.ProcessingResponse]:
        method = path = ""
        async for request in request_iterator:
            attributes = request.attributes.get(FILTER_NAME)  # on the stream's first message
            if attributes is not None:
                method = attributes.fields["request.method"].string_value or method
                path = attributes.fields["request.path"].string_value or path
            kind = request.WhichOneof("request")
            if kind == "request_body":
                yield pb.ProcessingResponse(request_body=pb.BodyResponse(response=self._check(method, path, request)))
            elif kind == "request_headers":
                yield pb.ProcessingResponse(request_headers=pb.HeadersResponse())
            elif kind == "request_trailers":
                yield pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
            elif kind == "response_headers":
                yield pb.ProcessingResponse(response_headers=pb.HeadersResponse())
            elif kind == "response_body":
                yield pb.ProcessingResponse(response_body=pb.BodyResponse())
            elif kind == "response_trailers":
                yield pb.ProcessingResponse(response_trailers=pb.TrailersResponse())

    def _check(self, method: str, path: str, request: pb.ProcessingRequest) -> pb.CommonResponse:
        """Removes any client-sent report header, or sets the gateway's for unknown keys."""
        try:
            problems = self.schema.unknown_fields(method, path, request.request_body.body)
        except Exception:  # noqa: BLE001 - a fault in the check must not fail the call it checks
            log.exception("body check of %s %s failed; the call goes on unchecked", method, path)
            problems = []
        if not problems:  # (Envoy applies removals after sets: one or the other, never both)
            return pb.CommonResponse(header_mutation=pb.HeaderMutation(remove_headers=[UNKNOWN_FIELDS_HEADER]))
        common = pb.CommonResponse()
        common.header_mutation.set_headers.append(base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=UNKNOWN_FIELDS_HEADER, raw_value=encode(problems).encode()),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD))
        return common
