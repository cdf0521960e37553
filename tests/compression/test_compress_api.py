"""CompressModel through the Envoy gateway (POST /api/training/models/{model_id}/compress) on a
registered tiny Llama: a compressed version with lineage, metrics and its own int8 artifacts; the
perplexity gate refusing (400 FAILED_PRECONDITION, nothing registered) unless forced; every bad
field reported at once. Each compression runs in a child process of the suite's server (~2 s)."""

from __future__ import annotations

import json
import shutil
import uuid

import pytest

from tests.compression.conftest import build_int8_hostile_model
from tests.support import violations
from tests.training.conftest import build_tiny_model, qa_rows
from trainforge.core.training.model_loading import load_model_and_tokenizer
from trainforge.v1 import registry_pb2 as pb

pytestmark = [pytest.mark.postgres, pytest.mark.envoy]


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("compress-api") / "tiny", hidden=64)


@pytest.fixture
def source_model(rest, settings, tiny_source):
    """A fresh model name with version 1.0.0 registered from a copy of the tiny model under the
    models root; returns (name, source version as returned by the API)."""
    name = f"compress-{uuid.uuid4().hex[:8]}"
    shutil.copytree(tiny_source, settings.models_dir / name)
    reply = rest.post("/api/training/models", {"name": name, "version": "1.0.0", "model_type": "pretrained",
                                               "source": name, "architecture": {"model_family": "Llama"}})
    assert reply.status == 200, reply
    return name, reply.body["data"]


def _versions(rest, name) -> list[str]:
    return sorted(v["version"] for v in rest.get(f"/api/training/models/{name}/versions").body["data"])


def _error_info(reply) -> dict:
    return next(d for d in reply.body["details"] if d["@type"].endswith("google.rpc.ErrorInfo"))


def test_compress_registers_an_int8_version_with_lineage_and_metrics(rest, registry, source_model, tiny_source):
    name, source = source_model
    reply = rest.post(f"/api/training/models/{name}/compress",
                      {"compression_type": "quantization", "precision": "int8"}, timeout=120)
    assert reply.status == 200, reply
    data = reply.body["data"]
    assert data["name"] == name and data["version"] == "1.0.0-int8" and data["model_type"] == "compressed"
    assert data["lineage"]["parent_model_version_id"] == source["model_version_id"]
    assert data["lineage"]["base_model"] == f"{name}:1.0.0"
    record = data["lineage"]["config"]["compression"]
    assert (record["mode"], record["format"], record["eval_data"]) == ("w8a8_dynamic", "int-quantized",
                                                                       "heldout_text")
    smoothing = record["smoothing"]  # folded into the float weights before quantizing (test_smoothing.py)
    assert (smoothing["method"], smoothing["alpha"], smoothing["mappings"], smoothing["calibration_data"]) == (
        "smoothquant", 0.5, 6, "calibration_text")
    metrics = data["performance_metrics"]
    assert {"perplexity", "perplexity_source", "perplexity_increase"} <= set(metrics)
    assert metrics["perplexity_increase"] == pytest.approx(
        (metrics["perplexity"] - metrics["perplexity_source"]) / metrics["perplexity_source"])
    assert abs(metrics["perplexity_increase"]) <= 0.02  # the default gate passed
    tiny, _ = load_model_and_tokenizer(tiny_source)
    assert int(data["parameter_count"]) == sum(p.numel() for p in tiny.parameters())  # tied head counted once
    assert 0 < data["size_mb"] < source["size_mb"]
    assert data["size_mb"] == pytest.approx(int(data["artifact_bytes"]) / 2**20, abs=1e-3)
    assert data["architecture"]["model_family"] == "Llama"

    # The registered artifacts are the int8 checkpoint itself.
    files = {f["path"] for f in rest.get(f"/api/training/models/{name}/versions/1.0.0-int8/artifacts")
             .body["data"]["files"]}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    config = b"".join(chunk.data for chunk in registry.DownloadArtifact(
        pb.DownloadArtifactRequest(model_id=name, version="1.0.0-int8", path="config.json")))
    assert json.loads(config)["quantization_config"]["format"] == "int-quantized"
    assert _versions(rest, name) == ["1.0.0", "1.0.0-int8"]

    body = {"compression_type": "quantization", "precision": "int8"}
    latest = rest.post(f"/api/training/models/{name}/compress", body)  # the latest is now the int8 one
    assert latest.status == 400 and _error_info(latest)["reason"] == "ALREADY_COMPRESSED", latest
    again = rest.post(f"/api/training/models/{name}/compress", {**body, "version": "1.0.0"})
    assert again.status == 409 and "1.0.0-int8" in again.body["message"], again


@pytest.fixture(scope="module")
def hostile_source(tmp_path_factory):
    return build_int8_hostile_model(tmp_path_factory.mktemp("compress-api") / "hostile", qa_rows(repeat=1))


def test_gate_refuses_and_registers_nothing_unless_forced(rest, settings, hostile_source):
    """A job-trained version's lineage names its data (resolved.data_path): the gate measures on it,
    with accuracy. The source is one int8 ruins (see build_int8_hostile_model)."""
    name = f"compress-gate-{uuid.uuid4().hex[:8]}"
    shutil.copytree(hostile_source, settings.models_dir / name)
    data_file = settings.data_dir_root / f"{name}.jsonl"
    data_file.write_text("".join(json.dumps(r) + "\n" for r in qa_rows(repeat=1)))
    # Named relative to the data root, as a job's registered lineage names it.
    lineage = {"base_model": "tiny-llama", "config": {
        "resolved": {"data_path": data_file.name}, "training_data": {"format": "jsonl", "validation_split": 0.0},
        "hyperparameters": {"seed": 3}}}
    registered = rest.post("/api/training/models", {"name": name, "version": "2.0", "model_type": "fine_tuned",
                                                    "source": name, "lineage": lineage})
    assert registered.status == 200, registered
    source = registered.body["data"]

    body = {"compression_type": "quantization", "precision": "int8", "mode": "w8a16",
            "max_perplexity_increase": 1e-9}
    refused = rest.post(f"/api/training/models/{name}/compress", body, timeout=120)
    assert refused.status == 400 and refused.body["code"] == 9, refused  # FAILED_PRECONDITION
    info = _error_info(refused)
    assert info["reason"] == "PERPLEXITY_GATE_FAILED"
    meta = info["metadata"]
    assert float(meta["perplexity"]) > 100 * float(meta["perplexity_source"])
    assert float(meta["max_perplexity_increase"]) == 1e-9 and meta["mode"] == "w8a16"
    assert f"{float(meta['perplexity']):.4f}" in refused.body["message"]
    assert _versions(rest, name) == ["2.0"]

    forced = rest.post(f"/api/training/models/{name}/compress", {**body, "force": True,
                                                                "target_version": "2.0-w8a16"}, timeout=120)
    assert forced.status == 200, forced
    data = forced.body["data"]
    assert data["version"] == "2.0-w8a16" and data["model_type"] == "compressed"
    assert data["lineage"]["parent_model_version_id"] == source["model_version_id"]
    assert data["lineage"]["base_model"] == f"{name}:2.0"
    record = data["lineage"]["config"]["compression"]
    assert record["forced"] is True and record["gate_passed"] is False and record["format"] == "pack-quantized"
    assert record["smoothing"] is None  # w8a16 leaves activations in floating point
    assert record["eval_data"] == data_file.name and record["eval_samples"] == 6  # relative to the data root
    metrics = data["performance_metrics"]
    assert metrics["perplexity"] == pytest.approx(float(meta["perplexity"]), rel=1e-5)
    assert (metrics["accuracy_source"], metrics["accuracy"]) == (1.0, 0.0)
    assert _versions(rest, name) == ["2.0", "2.0-w8a16"]


def test_bad_body_lists_every_violation(rest, source_model):
    name, _ = source_model
    reply = rest.post(f"/api/training/models/{name}/compress",
                      {"compression_type": "pruning", "precision": "int4", "mode": "w4a16",
                       "max_perplexity_increase": 0, "target_version": "not a version"})
    assert reply.status == 400 and reply.body["code"] == 3, reply
    assert set(violations(reply)) == {"compression_type", "precision", "mode", "max_perplexity_increase",
                                      "target_version"}
    too_loose = rest.post(f"/api/training/models/{name}/compress",
                          {"compressionType": "quantization", "precision": "int8", "maxPerplexityIncrease": 1.5})
    assert too_loose.status == 400 and set(violations(too_loose)) == {"max_perplexity_increase"}
    missing = rest.post(f"/api/training/models/{name}/compress", {})
    assert set(violations(missing)) == {"compression_type", "precision"}
    unknown = rest.post("/api/training/models/no-such-model/compress",
                        {"compression_type": "quantization", "precision": "int8"})
    assert unknown.status == 404
    assert _versions(rest, name) == ["1.0.0"]
