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
    for link, target in (("escape-link", outside), ("deep/escape-link", outside), ("loop-link", root / "loop-link")):
        path = root / link
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_symlink():
            path.symlink_to(target)
    if not (root / "fifo").exists():
        os.mkfifo(root / "fifo")
    return outside


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
