"""Merges the per-file OpenAPI (Swagger 2.0) documents protoc-gen-swagger wrote into one and
completes it: title, version, the bearer security scheme, and a stable key order so that
regeneration is byte-for-byte reproducible.

It also declares what the generator (grpc-gateway 1.6) leaves out, so that a client generated from
the document — or a fuzzer such as schemathesis — sends requests that reach the handlers:

- `required`: fields annotated `(google.api.field_behavior) = REQUIRED`, read from the compiled
  descriptors (trainforge.v1, regenerated just before this runs); OUTPUT_ONLY fields are `readOnly`.
- `enum`: a string field whose comment is nothing but its values in backticks ("`full` (default)
  or `lora`.", "Kind of model: one of `pretrained`, ...") gets them as an enum, plus "" (proto3's
  unset value, which means the default) unless the field is REQUIRED.
- `pattern`: the registry's name, version and alias rules (trainforge.core.registry.validation).
- `security`: the bearer key everywhere but the anonymous calls of trainforge.server.access_rules.
- body "*" requests: the fields bound in the path are dropped from the body schema (the
  transcoder refuses a body that repeats them); every message is `additionalProperties: false`
  (the gateway refuses unknown body keys, docs/decisions.md "Unknown JSON body keys").
- google.protobuf.Struct, Value and ListValue: their JSON forms (any object, any value, an array).
- responses: errors are the `default` response (`Error`); WatchJob streams newline-delimited JSON
  (`application/x-ndjson`, which the gateway's Lua filter sets on its 200 answer).
"""

import json
import re
import sys
import tomllib
from pathlib import Path

from google.api import annotations_pb2, field_behavior_pb2

from trainforge.core.registry.validation import ALIAS_RE, NAME_RE, VERSION_RE
from trainforge.server.access_rules import ANONYMOUS, RULES
from trainforge.v1 import deploy_pb2, registry_pb2, training_pb2

FILES = (deploy_pb2, registry_pb2, training_pb2)
# Definition name = the generator's: package's last part + message name (no nested messages here).
PREFIX = "v1"
STREAM_CONTENT_TYPE = "application/x-ndjson"  # Envoy's stream_newline_delimited (gateway/envoy.yaml)
# Registry name rules, for the fields the registry checks with them.
PATTERNS = {
    ("v1ModelVersion", "name"): NAME_RE.pattern,
    ("v1Model", "name"): NAME_RE.pattern,
    ("v1ModelVersion", "version"): VERSION_RE.pattern,
}
PATH_PATTERNS = {"alias": ALIAS_RE.pattern}
# Every error answer: the server's google.rpc.Status, or one of the gateway's own replies
# (gateway/envoy.yaml local_reply_config: malformed JSON, unknown path or query parameter, 413).
ERROR = {
    "type": "object",
    "description": "An error. From the server: a google.rpc.Status (`code` is the gRPC code, `details` a list"
                   " of google.rpc details such as BadRequest and ErrorInfo). From the gateway itself: `code` is"
                   " the HTTP status, `details` Envoy's reason (a string) and `request_id` the request's id.",
    "properties": {
        "code": {"type": "integer", "format": "int32", "description": "gRPC code, or HTTP status from the gateway."},
        "message": {"type": "string", "description": "What went wrong, for a person."},
        "details": {"description": "google.rpc details (a list of objects with `@type`), or the gateway's"
                                   " reason (a string)."},
        "request_id": {"type": "string", "description": "The request's id (gateway replies only)."},
    },
}
# protoc-gen-swagger renders the JSON forms of Struct, Value and ListValue as objects with their
# proto fields; on the wire (proto3 JSON) they are any JSON object, any JSON value and an array.
WELL_KNOWN_JSON = {
    "protobufStruct": {"type": "object", "additionalProperties": {},
                       "description": "Any JSON object (google.protobuf.Struct)."},
    "protobufValue": {"description": "Any JSON value (google.protobuf.Value)."},
    "protobufListValue": {"type": "array", "items": {"$ref": "#/definitions/protobufValue"},
                          "description": "A JSON array (google.protobuf.ListValue)."},
}
# "`a`, `b` or `c`." with an optional "Label: " or "one of " before it and "(note)" after a value.
_VALUE = r"`([A-Za-z0-9_.-]+)`(?: \([^)]*\))?"
_ENUM_COMMENT = re.compile(rf"^(?:[^`:]*: )?(?:one of )?{_VALUE}((?:(?:, | or ){_VALUE})*)\.$")


def merge(sources: list[str]) -> dict:
    doc: dict = {}
    for source in sorted(sources):
        part = json.loads(Path(source).read_text())
        if not doc:
            doc = part
            continue
        doc.setdefault("paths", {}).update(part.get("paths", {}))
        doc.setdefault("definitions", {}).update(part.get("definitions", {}))
        doc["tags"] = doc.get("tags", []) + [t for t in part.get("tags", []) if t not in doc.get("tags", [])]
    return doc


def _behaviors(field) -> set[int]:
    return set(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def _enum_values(description: str) -> list[str] | None:
    match = _ENUM_COMMENT.match(" ".join(description.split()))
    if not match:
        return None
    return [match.group(1)] + re.findall(r"`([A-Za-z0-9_.-]+)`", match.group(2))


def _http_rule(method):
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    kind = rule.WhichOneof("pattern")
    return (kind, getattr(rule, kind), rule.body) if kind else None


def declare_messages(definitions: dict) -> None:
    """required, readOnly, enum and pattern from the descriptors and the field comments."""
    for module in FILES:
        for message in module.DESCRIPTOR.message_types_by_name.values():
            schema = definitions.get(PREFIX + message.name)
            if schema is None:
                continue
            properties = schema.get("properties", {})
            required = []
            for field in message.fields:
                prop = properties.get(field.name)
                if prop is None:
                    continue
                behaviors = _behaviors(field)
                if field_behavior_pb2.REQUIRED in behaviors:
                    required.append(field.name)
                if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                    prop["readOnly"] = True
                if prop.get("type") == "string" and "format" not in prop:
                    values = _enum_values(prop.get("description", ""))
                    if values:
                        optional = field_behavior_pb2.REQUIRED not in behaviors
                        prop["enum"] = ([""] if optional else []) + values
                pattern = PATTERNS.get((PREFIX + message.name, field.name))
                if pattern:
                    prop["pattern"] = pattern
            if required:
                schema["required"] = sorted(required)
            if schema.get("type") == "object" and "additionalProperties" not in schema:
                schema["additionalProperties"] = False


def declare_operations(doc: dict) -> None:
    """Per operation: required query parameters, body "*" without the path's fields, the error
    response, and WatchJob's stream."""
    by_operation = {}
    for module in FILES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                by_operation[method.name] = method
    definitions = doc["definitions"]
    for path, operations in doc["paths"].items():
        path_fields = set(re.findall(r"{([a-z_]+)", path))
        for op in operations.values():
            method = by_operation[op["operationId"]]
            if RULES[f"/{method.containing_service.full_name}/{method.name}"].role == ANONYMOUS:
                op["security"] = []  # the document's default is the bearer key
            fields = {f.name: f for f in method.input_type.fields}
            for param in op.get("parameters", []):
                if param["in"] == "path" and param["name"] in PATH_PATTERNS:
                    param["pattern"] = PATH_PATTERNS[param["name"]]
                field = fields.get(param["name"].split(".")[0])
                if param["in"] == "query" and field is not None and field_behavior_pb2.REQUIRED in _behaviors(field):
                    param["required"] = True
                if param["in"] == "body" and "$ref" in param.get("schema", {}) and _http_rule(method)[2] == "*":
                    schema = definitions[param["schema"]["$ref"].rsplit("/", 1)[1]]
                    for name in path_fields:
                        schema.get("properties", {}).pop(name, None)
                    kept = [n for n in schema.get("required", []) if n not in path_fields]
                    if kept:
                        schema["required"] = kept
                    else:
                        schema.pop("required", None)
            op["responses"]["default"] = {"description": "An error.", "schema": {"$ref": "#/definitions/Error"}}
            if method.server_streaming:
                op["produces"] = [STREAM_CONTENT_TYPE, "application/json"]  # errors are plain JSON
                ok = op["responses"]["200"]
                ok["description"] = (f"A stream ({STREAM_CONTENT_TYPE}): one JSON object per line, each the"
                                     " schema below; it ends when the job ends.")


def main(target: str, *sources: str) -> None:
    doc = merge(list(sources))
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    doc["info"] = {
        "title": "trainforge API",
        "version": project["version"],
        "description": project["description"]
        + " Generated from protos/trainforge/v1 by protoc-gen-swagger; errors are JSON objects with"
        " `code`, `message` and `details` (see the `Error` definition).",
    }
    doc["basePath"] = "/"
    doc["schemes"] = ["http", "https"]
    doc["securityDefinitions"] = {"bearer": {"type": "apiKey", "name": "Authorization", "in": "header"}}
    doc["security"] = [{"bearer": []}]
    doc["definitions"]["Error"] = ERROR
    doc["definitions"].update(WELL_KNOWN_JSON)
    declare_messages(doc["definitions"])
    declare_operations(doc)
    Path(target).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
