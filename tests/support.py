"""Small clients the tests share: a REST caller through the gateway and gRPC stubs."""

from __future__ import annotations

import collections
import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]
    raw: bytes

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.raw[:400]!r})"


class Rest:
    """JSON over HTTP to the Envoy gateway, with an API key when given one."""

    def __init__(self, base_url: str, token: str = ""):
        self.base_url = base_url.rstrip("/")
        self.token = token

    def with_token(self, token: str) -> Rest:
        return Rest(self.base_url, token)

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None, timeout: float = 30) -> Reply:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("content-type", "application/json")
        if self.token:
            request.add_header("authorization", f"Bearer {self.token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, payload, hdrs = response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as err:
            status, payload, hdrs = err.code, err.read(), dict(err.headers)
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = None
        return Reply(status, parsed, {k.lower(): v for k, v in hdrs.items()}, payload)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("PUT", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.call("DELETE", path, **kw)


def violations(reply: Reply) -> dict[str, str]:
    """field -> description from a google.rpc.BadRequest detail in a JSON error body."""
    found: dict[str, str] = {}
    for detail in (reply.body or {}).get("details", []):
        if detail.get("@type", "").endswith("google.rpc.BadRequest"):
            for v in detail.get("fieldViolations", detail.get("field_violations", [])):
                found[v["field"]] = v["description"]
    return found


class BearerAuth(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                 grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call on a channel."""

    def __init__(self, token: str):
        self.token = token

    def _details(self, details):
        metadata = list(details.metadata or ()) + [("authorization", f"Bearer {self.token}")]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready,
            details.compression)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


class _Details(collections.namedtuple("_Details", "method timeout metadata credentials wait_for_ready compression"),
               grpc.ClientCallDetails):
    pass


def authed(channel: grpc.Channel, token: str) -> grpc.Channel:
    return grpc.intercept_channel(channel, BearerAuth(token))


def error_reason(reply: Reply) -> str:
    """The google.rpc.ErrorInfo reason of an error reply ("" when it has none)."""
    for detail in (reply.body or {}).get("details", []):
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            return detail.get("reason", "")
    return ""
