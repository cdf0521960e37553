"""The API reference Envoy serves: /api/docs (gateway/docs.html, rendered from the OpenAPI document
by scripts/render_api_docs.py) and /api/docs/openapi.json."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPENAPI = ROOT / "gateway" / "openapi.json"
DOCS = ROOT / "gateway" / "docs.html"
RENDER = ROOT / "scripts" / "render_api_docs.py"
# Envoy's max_direct_response_body_size_bytes (gateway/envoy.yaml).
MAX_BYTES = 2 * 1024 * 1024


def spec() -> dict:
    return json.loads(OPENAPI.read_text())


@pytest.mark.envoy
@pytest.mark.postgres
def test_docs_page_is_served(rest) -> None:
    reply = rest.get("/api/docs")
    assert reply.status == 200, reply
    assert reply.headers["content-type"].startswith("text/html"), reply.headers
    assert reply.raw == DOCS.read_bytes()
    page = reply.raw.decode()
    assert "/api/training/models/search" in page
    assert "RegisterModel" in page
    assert 'href="/api/docs/openapi.json"' in page


@pytest.mark.envoy
@pytest.mark.postgres
def test_openapi_is_served(rest) -> None:
    reply = rest.get("/api/docs/openapi.json")
    assert reply.status == 200, reply
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    assert isinstance(reply.body, dict), reply
    assert sorted(reply.body["paths"]) == sorted(spec()["paths"])


def test_docs_page_covers_every_operation() -> None:
    page = DOCS.read_text()
    for path, methods in spec()["paths"].items():
        for method, op in methods.items():
            anchor = f'id="op-{op["operationId"]}"'
            assert anchor in page, f"{method.upper()} {path}: no section {anchor}"
            section = page[page.index(anchor):].split("</section>", 1)[0]
            assert method.upper() in section
            assert re.sub(r"<[^>]+>", "", section).count(path) >= 1, f"{op['operationId']}: path {path} not shown"
            for param in op.get("parameters", []):
                if param["in"] != "body":
                    assert f"<b>{param['name']}</b>" in section, f"{op['operationId']}: parameter {param['name']}"


def test_docs_page_is_self_contained() -> None:
    page = DOCS.read_text()
    assert len(page.encode()) < MAX_BYTES
    # Nothing the browser would fetch: the gateway may run without network access.
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=", page, re.I)
    assert "@import" not in page and "url(" not in page


def test_docs_page_is_current_and_deterministic(tmp_path: Path) -> None:
    outputs = []
    for i in range(2):
        target = tmp_path / f"docs-{i}.html"
        subprocess.run([sys.executable, str(RENDER), str(OPENAPI), str(target)], cwd=ROOT, check=True)
        outputs.append(target.read_bytes())
    assert outputs[0] == outputs[1], "render_api_docs.py output differs between runs"
    assert outputs[0] == DOCS.read_bytes(), "gateway/docs.html is stale: run scripts/gen_protos.sh"


def test_render_stops_at_recursive_messages() -> None:
    spec_ = importlib.util.spec_from_file_location("render_api_docs", RENDER)
    render_api_docs = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(render_api_docs)
    doc = {
        "swagger": "2.0", "info": {"title": "t", "version": "1"},
        "paths": {"/tree": {"post": {
            "operationId": "MakeTree", "tags": ["TreeService"],
            "parameters": [{"in": "body", "name": "body", "required": True, "schema": {"$ref": "#/definitions/v1Node"}}],
            "responses": {"200": {"description": "ok", "schema": {"$ref": "#/definitions/v1Missing"}}},
        }}},
        "definitions": {"v1Node": {"type": "object", "properties": {
            "label": {"type": "string", "description": "A label."},
            "children": {"type": "array", "items": {"$ref": "#/definitions/v1Node"}},
            "parent": {"$ref": "#/definitions/v1Node"},
        }}},
    }
    page = render_api_docs.render(doc)
    assert page == render_api_docs.render(doc)
    assert page.count("<b>label</b>") == 1  # expanded once, then named
    assert "the fields of Node, as above" in page
    assert "Missing</span> <em>(not defined)</em>" in page


# What the server checks, by (definition, property) of the OpenAPI document: its enums must say the same.
def _literal(model, field: str) -> list[str]:
    return list(typing.get_args(model.model_fields[field].annotation))


def _domain_enums() -> dict[tuple[str, str], list[str]]:
    from trainforge.core.compression.compress_version import MODES, PRECISIONS
    from trainforge.core.registry.models import MODEL_TYPES
    from trainforge.core.training import config

    return {
        ("v1ModelVersion", "model_type"): list(MODEL_TYPES),
        ("v1CompressModelRequest", "precision"): list(PRECISIONS),
        ("v1CompressModelRequest", "mode"): list(MODES),
        ("v1JobSpec", "model_type"): _literal(config.TrainConfig, "model_type"),
        ("v1JobSpec", "method"): _literal(config.TrainConfig, "method"),
        ("v1TrainingData", "format"): _literal(config.TrainingData, "format"),
        ("v1TrainingData", "source"): _literal(config.TrainingData, "source"),
        ("v1Optimization", "optimizer"): _literal(config.Optimization, "optimizer"),
        ("v1Optimization", "scheduler"): _literal(config.Optimization, "scheduler"),
        ("v1Optimization", "torch_compile"): _literal(config.Optimization, "torch_compile"),
        ("v1EarlyStopping", "metric"): _literal(config.EarlyStopping, "metric"),
        ("v1Distributed", "strategy"): _literal(config.Distributed, "strategy"),
        ("v1DeploymentPolicy", "deployment_target"): _literal(config.Deployment, "deployment_target"),
        ("v1DeployModelRequest", "target"): _literal(config.Deployment, "deployment_target"),
    }


def test_openapi_enums_are_the_values_the_server_accepts() -> None:
    definitions = spec()["definitions"]
    for (definition, prop), values in _domain_enums().items():
        declared = definitions[definition]["properties"][prop].get("enum")
        assert declared is not None, f"{definition}.{prop}: no enum"
        # "" is proto3's unset value: the default, for a field that is not required.
        expected = values if prop in definitions[definition].get("required", []) else ["", *values]
        assert declared == expected, (definition, prop, declared)


def test_openapi_declares_required_fields_patterns_and_read_only() -> None:
    from trainforge.core.registry.validation import ALIAS_RE, NAME_RE, VERSION_RE

    doc = spec()
    definitions = doc["definitions"]
    assert definitions["v1ModelVersion"]["required"] == ["name", "version"]
    assert definitions["v1JobSpec"]["required"] == ["model", "name", "training_data"]
    assert definitions["v1DeployModelRequest"]["required"] == ["target"]  # model_version_id is in the path
    assert definitions["v1ModelVersion"]["properties"]["name"]["pattern"] == NAME_RE.pattern
    assert definitions["v1ModelVersion"]["properties"]["version"]["pattern"] == VERSION_RE.pattern
    assert definitions["v1ModelVersion"]["properties"]["model_version_id"]["readOnly"] is True
    alias = [p for p in doc["paths"]["/api/training/models/{model_id}/aliases/{alias}"]["put"]["parameters"]
             if p["name"] == "alias"]
    assert alias[0]["pattern"] == ALIAS_RE.pattern
    for path, operations in doc["paths"].items():
        bound = set(re.findall(r"{([a-z_]+)", path))
        for op in operations.values():
            assert op["responses"]["default"]["schema"] == {"$ref": "#/definitions/Error"}, op["operationId"]
            for param in op.get("parameters", []):
                if param["in"] == "body" and "$ref" in param["schema"]:
                    body = definitions[param["schema"]["$ref"].rsplit("/", 1)[1]]
                    assert body["additionalProperties"] is False
                    if op["operationId"] not in ("RegisterModel", "UpdateModel", "UpdateModelVersion", "CreateJob"):
                        # body "*": the transcoder refuses a body that repeats a path field
                        assert not bound & set(body.get("properties", {})), (op["operationId"], bound)
    assert doc["paths"]["/api/training/health"]["get"]["security"] == []  # the one anonymous call


def test_openapi_says_the_event_stream_is_ndjson() -> None:
    watch = spec()["paths"]["/api/training/jobs/{job_id}/events"]["get"]
    assert watch["operationId"] == "WatchJob"
    assert watch["produces"][0] == "application/x-ndjson"
    assert "/api/training/jobs/{job_id}/events/history" in spec()["paths"]
    assert "produces" not in spec()["paths"]["/api/training/jobs/{job_id}/events/history"]["get"]
