#!/usr/bin/env bash
# Regenerates everything derived from protos/: the Python modules beside the protos (trainforge.v1),
# the descriptor set Envoy's transcoder reads, and the OpenAPI document. Run after editing a .proto;
# CI runs it and fails if the committed output differs (scripts/check_generated.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
GOOGLEAPIS=$("$PY" -c 'import google.api, os; print(os.path.dirname(os.path.dirname(google.api.__path__[0])))')
PROTOBUF_INC=$("$PY" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
PROTOS=(protos/trainforge/v1/*.proto)

rm -f protos/trainforge/v1/*_pb2*.py protos/trainforge/v1/*_pb2*.pyi
"$PY" -m grpc_tools.protoc -Iprotos -I"$GOOGLEAPIS" -I"$PROTOBUF_INC" \
  --python_out=protos --pyi_out=protos --grpc_python_out=protos "${PROTOS[@]}"

# The descriptor set carries google/rpc/error_details so that Envoy can print the BadRequest and
# ErrorInfo details of a google.rpc.Status as JSON (convert_grpc_status).
"$PY" -m grpc_tools.protoc -Iprotos -I"$GOOGLEAPIS" -I"$PROTOBUF_INC" \
  --include_imports \
  --descriptor_set_out=gateway/trainforge.pb "${PROTOS[@]}" google/rpc/error_details.proto

# OpenAPI from the google.api.http annotations (Debian's golang-grpc-gateway ships the generator).
if command -v protoc-gen-swagger >/dev/null; then
  tmp=$(mktemp -d)
  printf '#!/bin/sh\nexec "%s" "%s"\n' "$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" "$PWD/scripts/protoc_gen_swagger_shim.py" >"$tmp/plugin"
  chmod +x "$tmp/plugin"
  "$PY" -m grpc_tools.protoc -Iprotos -I"$GOOGLEAPIS" -I"$PROTOBUF_INC" \
    --plugin=protoc-gen-swagger="$tmp/plugin" \
    --swagger_out=json_names_for_fields=false:"$tmp" "${PROTOS[@]}"
  # One document per file, merged here: the generator's own merge keeps method comments of the
  # first file only.
  "$PY" scripts/finish_openapi.py gateway/openapi.json "$tmp"/trainforge/v1/*.swagger.json
  "$PY" scripts/render_api_docs.py gateway/openapi.json gateway/docs.html
  rm -rf "$tmp"
else
  echo "protoc-gen-swagger not found (apt-get install golang-grpc-gateway); gateway/openapi.json left as is" >&2
fi
