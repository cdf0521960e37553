"""RPC metrics are counted per method and code; log lines are JSON with the request id."""

from __future__ import annotations

import json
import logging

from prometheus_client import REGISTRY

from trainforge.server.observability import JsonFormatter, request_id_var


def _count(method: str, code: str) -> float:
    return REGISTRY.get_sample_value("trainforge_rpc_requests_total", {"method": method, "code": code}) or 0.0


def test_rpc_counts_and_latency(rest):
    method = "/trainforge.v1.RegistryService/GetModel"
    ok_before, missing_before = _count(method, "OK"), _count(method, "NOT_FOUND")
    rest.post("/api/training/models", {"name": "observed-model", "version": "1.0.0"})
    assert rest.get("/api/training/models/observed-model").status == 200
    assert rest.get("/api/training/models/no-such-model").status == 404
    assert _count(method, "OK") == ok_before + 1
    assert _count(method, "NOT_FOUND") == missing_before + 1
    assert REGISTRY.get_sample_value("trainforge_rpc_duration_seconds_count", {"method": method}) >= 2


def test_log_lines_are_json_with_the_request_id():
    record = logging.LogRecord("trainforge.rpc", logging.INFO, __file__, 1, "rpc", None, None)
    record.fields = {"method": "/x/Y", "code": "OK"}
    token = request_id_var.set("req-7")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["request_id"] == "req-7" and line["method"] == "/x/Y" and line["level"] == "INFO"


def test_grpc_callers_get_the_request_id_in_the_trailers(registry):
    from trainforge.v1 import registry_pb2

    _, call = registry.GetRegistryHealth.with_call(registry_pb2.GetRegistryHealthRequest(),
                                                   metadata=(("x-request-id", "trailer-1"),))
    assert ("x-request-id", "trailer-1") in tuple(call.trailing_metadata())
