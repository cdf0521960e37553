"""Single-call latency of the registry's hot operations — get, register, search — over direct gRPC
and as REST through Envoy, on the test suite's stack (benchmarks/conftest.py). One client, calls
back to back: this is the per-call cost; registry_load.py measures throughput under concurrency and
the MLflow baseline.

    .venv/bin/pytest benchmarks --benchmark-only

The project's addopts carry --benchmark-skip, so a plain `pytest benchmarks` collects and skips.
"""

from __future__ import annotations

import http.client
import itertools
import json
import urllib.parse
import uuid
from collections.abc import Iterator

import pytest

from trainforge.v1 import registry_pb2 as pb

pytestmark = [pytest.mark.postgres, pytest.mark.envoy]

MODELS = 50
VERSIONS = 3
PAGE_SIZE = 20
ARCHITECTURE = {"model_family": "GPT", "layers": 24, "hidden_size": 1024, "attention_heads": 16,
                "vocab_size": 50257, "max_sequence_length": 1024}


def _version(name: str, version: str, model_type: str, accuracy: float, tag: str) -> dict:
    return {"name": name, "version": version, "description": "benchmark", "model_type": model_type,
            "size_mb": 2048, "parameter_count": 355000000, "architecture": ARCHITECTURE, "tags": [tag],
            "performance_metrics": {"accuracy": accuracy, "f1_score": 0.8, "inference_latency_ms": 150}}


@pytest.fixture(scope="module")
def seeded(registry) -> dict:
    """MODELS models of VERSIONS versions each, under a tag of their own so that search sees only
    them whatever else the database holds."""
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    names = [f"{tag}-model-{i:03d}" for i in range(MODELS)]
    for i, name in enumerate(names):
        for j in range(VERSIONS):
            accuracy = 0.3 + ((i * VERSIONS + j) * 0.37) % 0.65
            registry.RegisterModel(pb.RegisterModelRequest(model_version=_version(
                name, f"1.{j}.0", "fine_tuned" if i % 2 == 0 else "pretrained", accuracy, tag)))
    search_filter = f'metrics.accuracy > 0.5 AND model_type = "fine_tuned" AND tags: "{tag}"'
    return {"tag": tag, "names": names, "filter": search_filter}


class KeepAlive:
    """One keep-alive HTTP/1.1 connection to Envoy with the admin key, like a REST client's."""

    def __init__(self, host: str, port: int, token: str):
        self.conn = http.client.HTTPConnection(host, port, timeout=30)
        self.headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        self.conn.request(method, path, json.dumps(body) if body is not None else None, self.headers)
        response = self.conn.getresponse()
        payload = response.read()
        assert response.status == 200, payload[:500]
        return json.loads(payload)


@pytest.fixture(scope="module")
def envoy(gateway, api_keys) -> Iterator[KeepAlive]:
    client = KeepAlive(gateway.http_address, gateway.http_port, api_keys["admin"])
    yield client
    client.conn.close()


def test_get_grpc(benchmark, registry, seeded):
    names = itertools.cycle(seeded["names"])
    reply = benchmark(lambda: registry.GetModel(pb.GetModelRequest(model_id=next(names))))
    assert reply.data.version_count == VERSIONS


def test_get_envoy(benchmark, envoy, seeded):
    paths = itertools.cycle(f"/api/training/models/{urllib.parse.quote(n, safe='')}" for n in seeded["names"])
    reply = benchmark(lambda: envoy.call("GET", next(paths)))
    assert reply["data"]["version_count"] == VERSIONS


def test_search_grpc(benchmark, registry, seeded):
    request = pb.SearchModelsRequest(filter=seeded["filter"], page_size=PAGE_SIZE)
    reply = benchmark(lambda: registry.SearchModels(request))
    assert len(reply.data) == PAGE_SIZE


def test_search_envoy(benchmark, envoy, seeded):
    body = {"filter": seeded["filter"], "page_size": PAGE_SIZE}
    reply = benchmark(lambda: envoy.call("POST", "/api/training/models/search", body))
    assert len(reply["data"]) == PAGE_SIZE


def test_register_grpc(benchmark, registry, seeded):
    counter = itertools.count()
    name = seeded["names"][0]

    def register():
        return registry.RegisterModel(pb.RegisterModelRequest(
            model_version=_version(name, f"grpc.{next(counter)}", "custom", 0.5, seeded["tag"])))

    reply = benchmark(register)
    assert reply.data.name == name


def test_register_envoy(benchmark, envoy, seeded):
    counter = itertools.count()
    name = seeded["names"][1]
    reply = benchmark(lambda: envoy.call("POST", "/api/training/models",
                                         _version(name, f"envoy.{next(counter)}", "custom", 0.5, seeded["tag"])))
    assert reply["data"]["name"] == name
