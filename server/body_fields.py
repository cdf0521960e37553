"""Which JSON keys of a REST body the transcoder would drop without a word.

Envoy's grpc_json_transcoder parses request bodies with unknown fields ignored, and has no option
to refuse them (envoyproxy/envoy#46623): a typo such as `learning_rat` would train with the
default learning rate and answer 200. `BodySchema` knows, from the `google.api.http` rules in the
services' descriptors, which message a (method, path) body is parsed into, and lists every key
that message (recursively) has no field for. The gateway's ext_authz filter asks the server
(server.body_check_service) before transcoding; the server then refuses the call with
INVALID_ARGUMENT naming each key (server.interceptors).

Everything else about a body (malformed JSON, wrong types, unknown enum names, path/body
collisions) the transcoder already rejects with a 400: this module only looks for unknown keys.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor

# JSON forms of these are not field-by-field objects (Struct holds any keys; Any, Timestamp,
# Duration, FieldMask and the wrappers have their own JSON mapping): never walked into.
_OPAQUE = frozenset({
    "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue", "google.protobuf.Any",
    "google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask",
    "google.protobuf.Empty", "google.protobuf.DoubleValue", "google.protobuf.FloatValue",
    "google.protobuf.Int64Value", "google.protobuf.UInt64Value", "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value", "google.protobuf.BoolValue", "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
})
MAX_REPORTED = 50  # unknown keys listed per request; a header carries them, keep it bounded


@dataclass(frozen=True)
class UnknownField:
    field: str  # dotted path as the server names fields: proto names, the unknown key as sent
    description: str


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    body: Descriptor  # the message the body is parsed into
    bound: frozenset[str]  # fields bound from the path (body "*" only): not unknown in the body
    variables: int  # path variables: a route with fewer wins (`/models/health` over `/models/{id}`)


def _template_regex(template: str) -> re.Pattern[str]:
    """`/api/training/models/{model_id}/versions/{version}` -> an anchored regex of the path."""
    out, pos = [], 0
    for match in re.finditer(r"\{([^}=]+)(?:=([^}]*))?\}", template):
        out.append(re.escape(template[pos:match.start()]))
        out.append(".+" if (match.group(2) or "*").strip() == "**" else "[^/]+")
        pos = match.end()
    out.append(re.escape(template[pos:]))
    return re.compile("^" + "".join(out) + "$")


def _path_variables(template: str) -> frozenset[str]:
    return frozenset(m.split(".")[0] for m in re.findall(r"\{([^}=]+)", template))


class BodySchema:
    """(HTTP method, path) -> body message, from the services' google.api.http rules."""

    def __init__(self, services: list[ServiceDescriptor]):
        self._routes: list[_Route] = []
        for service in services:
            for method in service.methods:
                options = method.GetOptions()
                if not options.HasExtension(annotations_pb2.http):
                    continue
                rule = options.Extensions[annotations_pb2.http]
                for binding in [rule, *rule.additional_bindings]:
                    self._add(binding, method.input_type)
        self._routes.sort(key=lambda r: r.variables)

    def _add(self, binding: http_pb2.HttpRule, request: Descriptor) -> None:
        kind = binding.WhichOneof("pattern")
        if kind is None or not binding.body:
            return  # no body: nothing the transcoder could drop
        template = binding.custom.path if kind == "custom" else getattr(binding, kind)
        verb = binding.custom.kind if kind == "custom" else kind.upper()
        if binding.body == "*":
            body, bound = request, _path_variables(template)
        else:
            body, bound = request.fields_by_name[binding.body].message_type, frozenset()
            if body is None:
                return  # a scalar body field: no keys to check
        self._routes.append(_Route(verb, _template_regex(template), body, bound, template.count("{")))

    def message_for(self, method: str, path: str) -> _Route | None:
        """The body's route for a REST method and path (query string ignored)."""
        path = path.split("?", 1)[0]
        for route in self._routes:
            if route.method == method.upper() and route.pattern.match(path):
                return route
        return None

    def unknown_fields(self, method: str, path: str, body: bytes) -> list[UnknownField]:
        """Every key of the JSON body that its message has no field for (up to MAX_REPORTED)."""
        route = self.message_for(method, path)
        if route is None or not body.strip():
            return []
        try:
            document = json.loads(body)
        except ValueError:
            return []  # the transcoder answers malformed JSON itself
        out: list[UnknownField] = []
        _walk(route.body, document, "", out, route.bound)
        return out[:MAX_REPORTED]


def _lookup(message: Descriptor) -> dict[str, FieldDescriptor]:
    found = {}
    for field in message.fields:
        found[field.name] = field
        found[field.json_name] = field
    return found


def _walk(message: Descriptor, value: object, prefix: str, out: list[UnknownField],
          bound: frozenset[str] = frozenset()) -> None:
    if not isinstance(value, dict) or message.full_name in _OPAQUE:
        return  # a wrong type is the transcoder's 400
    fields = _lookup(message)
    for key, item in value.items():
        field = fields.get(key)
        if field is None:
            if key in bound:
                continue
            out.append(UnknownField(prefix + key, _describe(message, key)))
            continue
        child = field.message_type
        if child is None or child.full_name in _OPAQUE:
            continue
        name = prefix + field.name
        if child.GetOptions().map_entry:
            value_type = child.fields_by_name["value"].message_type
            if value_type is not None and isinstance(item, dict):
                for map_key, map_value in item.items():
                    _walk(value_type, map_value, f"{name}[{map_key!r}].", out)
        elif field.is_repeated:
            for index, element in enumerate(item if isinstance(item, list) else []):
                _walk(child, element, f"{name}[{index}].", out)
        else:
            _walk(child, item, name + ".", out)


def _describe(message: Descriptor, key: str) -> str:
    names = sorted({f.name for f in message.fields} | {f.json_name for f in message.fields})
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]!r}?" if close else f"; its fields are {', '.join(f.name for f in message.fields)}"
    return f"unknown field: {message.name} has no field {key!r}{hint}"


def encode(problems: list[UnknownField]) -> str:
    """For the request header the gateway adds: compact JSON, ASCII only."""
    return json.dumps([[p.field, p.description] for p in problems], separators=(",", ":"), ensure_ascii=True)


def decode(header: str) -> list[UnknownField]:
    try:
        items = json.loads(header)
        return [UnknownField(str(f), str(d)) for f, d in items][:MAX_REPORTED]
    except (ValueError, TypeError):
        return [UnknownField("body", "the gateway's unknown-field report could not be read")]
