"""Hostile paths for every RPC that takes one, through the gateway: each refused with a 400 naming
the field, nothing registered, nothing read or written outside the configured roots."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import grpc
import pytest

from tests.support import violations
from trainforge.v1 import registry_pb2, registry_pb2_grpc

HOSTILE = [
    "../../etc", "../../../../../../etc/passwd", "/etc", "/etc/passwd", "/", "..", "a/../../..",
    "./../outside", "escape-link", "escape-link/secret.txt", "deep/escape-link", "loop-link", "fifo",
    "/dev/zero", "/proc/self", "does-not-exist", "", "a\x00b", "x" * 5000, "%2e%2e/%2e%2e/etc",
]


@pytest.fixture(scope="module")
def hostile_tree(settings) -> Path:
    """Symlinks that escape the models root, a FIFO and a loop, created for the test."""
    root = settings.models_dir
    outside = settings.data_dir / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.txt").write_text("secret")
    _plant_escapes(root, outside)
    return outside


def _plant_escapes(root: Path, outside: Path) -> None:
    """Under `root`: two symlinks out to `outside`, a symlink loop and a FIFO."""
    for link, target in (("escape-link", outside), ("deep/escape-link", outside), ("loop-link", root / "loop-link")):
        path = root / link
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_symlink():
            path.symlink_to(target)
    if not (root / "fifo").exists():
        os.mkfifo(root / "fifo")


def _snapshot(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")} if root.exists() else set()


REGISTER_HOSTILE = [p for p in HOSTILE if p]  # an empty source means "no artifacts", which is fine


@pytest.mark.parametrize("path", REGISTER_HOSTILE, ids=range(len(REGISTER_HOSTILE)))
def test_register_source(rest, hostile_tree, path):
    name = f"hostile-{uuid.uuid4().hex[:8]}"
    before = _snapshot(hostile_tree)
    reply = rest.post("/api/training/models", {"name": name, "version": "1.0.0", "source": path})
    assert reply.status == 400, reply
    assert "source" in violations(reply), reply
    assert rest.get(f"/api/training/models/{name}").status == 404
    assert _snapshot(hostile_tree) == before


@pytest.mark.parametrize("path", HOSTILE, ids=range(len(HOSTILE)))
def test_attach_source_path(rest, hostile_tree, path):
    name = f"hostile-{uuid.uuid4().hex[:8]}"
    assert rest.post("/api/training/models", {"name": name, "version": "1.0.0"}).status == 200
    reply = rest.post(f"/api/training/models/{name}/versions/1.0.0/artifacts", {"source_path": path})
    assert reply.status == 400, reply
    assert "source_path" in violations(reply), reply
    assert rest.get(f"/api/training/models/{name}/versions/1.0.0").body["data"]["artifact_count"] == 0


UPLOAD_HOSTILE = ["../escape.bin", "/etc/cron.d/x", "a/../../b", "./a", "a//b", "a\\..\\b", "..", "a/./b",
                  "", "a\x00b", "x/" * 600, "/"]


@pytest.mark.parametrize("path", UPLOAD_HOSTILE, ids=range(len(UPLOAD_HOSTILE)))
def test_upload_paths(grpc_channel, settings, path):
    registry = registry_pb2_grpc.RegistryServiceStub(grpc_channel)
    name = f"hostile-{uuid.uuid4().hex[:8]}"
    registry.RegisterModel(registry_pb2.RegisterModelRequest(
        model_version=registry_pb2.ModelVersion(name=name, version="1.0.0")))
    before = _snapshot(settings.data_dir)
    chunks = [registry_pb2.UploadArtifactsRequest(model_id=name, version="1.0.0", path=path, data=b"payload")]
    with pytest.raises(grpc.RpcError) as info:
        registry.UploadArtifacts(iter(chunks))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    created = {p for p in _snapshot(settings.data_dir) - before if "/artifacts/" not in p}
    assert not created


@pytest.fixture(scope="module")
def hostile_data_tree(settings, hostile_tree) -> Path:
    """The same escapes under the data root, where job and evaluation data are read from."""
    _plant_escapes(settings.data_dir_root, hostile_tree)
    return hostile_tree


def _job_count(rest) -> int:
    return int(rest.get("/api/training/jobs?page_size=1").body["total_size"])


@pytest.mark.parametrize("path", HOSTILE, ids=range(len(HOSTILE)))
def test_job_training_data_path(rest, hostile_data_tree, path):
    before = _job_count(rest)
    reply = rest.post("/api/training/jobs", {"name": "hostile-job", "model": "smollm2-135m",
                                             "trainingData": {"path": path, "format": "jsonl"}})
    assert reply.status == 400, reply
    assert "training_data.path" in violations(reply), reply
    assert _job_count(rest) == before


# "" and "does-not-exist" are a missing field and an unknown name; the last two pass the field's
# 4096-character limit but not the file system's (a 300-byte name, a 3000-character path).
MODEL_HOSTILE = [p for p in HOSTILE if p not in ("", "does-not-exist")] + ["y" * 300, "a/" * 1500]


@pytest.mark.parametrize("path", MODEL_HOSTILE, ids=range(len(MODEL_HOSTILE)))
def test_job_base_model_path(rest, hostile_tree, settings, path):
    (settings.data_dir_root / "one-row.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    before = _job_count(rest)
    reply = rest.post("/api/training/jobs", {"name": "hostile-model", "model": path,
                                             "trainingData": {"path": "one-row.jsonl", "format": "jsonl"}})
    assert reply.status == 400, reply
    assert "model" in violations(reply), reply
    assert _job_count(rest) == before


@pytest.mark.parametrize("path", HOSTILE, ids=range(len(HOSTILE)))
def test_evaluate_data_path(rest, hostile_data_tree, path):
    name = f"hostile-{uuid.uuid4().hex[:8]}"
    assert rest.post("/api/training/models", {"name": name, "version": "1.0.0"}).status == 200
    reply = rest.post(f"/api/training/evaluate/{name}", {"data_path": path, "metrics": ["perplexity"]})
    assert reply.status == 400, reply
    assert "data_path" in violations(reply), reply
