#!/usr/bin/env python3
"""protoc plugin that adapts the request for Debian's protoc-gen-swagger (grpc-gateway 1.6), which
predates proto3 `optional` and refuses path parameters on client-streaming methods.

It rewrites the CodeGeneratorRequest — proto3 optional fields become plain fields (their JSON shape
is the same) and client-streaming methods lose their HTTP rule (Swagger 2.0 cannot express a
streamed request body) — runs the real generator on it, and declares proto3-optional support in
the response."""

import os
import subprocess
import sys

from google.protobuf.compiler import plugin_pb2

HTTP_RULE_FIELD = 72295728  # google.api.http extension number on MethodOptions


def adapt(request: plugin_pb2.CodeGeneratorRequest) -> None:
    for proto in request.proto_file:
        for message in proto.message_type:
            _strip_optional(message)
        for service in proto.service:
            for method in service.method:
                if method.client_streaming:
                    _drop_http_rule(method)


def _strip_optional(message) -> None:
    synthetic = {f.oneof_index for f in message.field if f.proto3_optional}
    for field in message.field:
        if field.proto3_optional:
            field.proto3_optional = False
            field.ClearField("oneof_index")
    # Synthetic oneofs sit after the real ones, so removing them keeps real indices valid.
    for index in sorted(synthetic, reverse=True):
        del message.oneof_decl[index]
    for nested in message.nested_type:
        _strip_optional(nested)


def _drop_http_rule(method) -> None:
    # The extension is parsed lazily from unknown fields: re-serialise the options without it.
    options = method.options
    raw = options.SerializeToString()
    options.Clear()
    options.ParseFromString(_without_field(raw, HTTP_RULE_FIELD))


def _without_field(raw: bytes, number: int) -> bytes:
    from google.protobuf.internal import decoder

    out, pos = bytearray(), 0
    while pos < len(raw):
        start = pos
        tag, pos = decoder._DecodeVarint(raw, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = decoder._DecodeVarint(raw, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = decoder._DecodeVarint(raw, pos)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unexpected wire type {wire}")
        if field != number:
            out += raw[start:pos]
    return bytes(out)


def main() -> None:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    adapt(request)
    generator = os.environ.get("SWAGGER_GENERATOR", "protoc-gen-swagger")
    result = subprocess.run([generator], input=request.SerializeToString(), capture_output=True, check=False)
    if result.returncode != 0:
        sys.stderr.buffer.write(result.stderr)
        sys.exit(result.returncode)
    response = plugin_pb2.CodeGeneratorResponse.FromString(result.stdout)
    response.supported_features |= plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    sys.stdout.buffer.write(response.SerializeToString())


if __name__ == "__main__":
    main()
