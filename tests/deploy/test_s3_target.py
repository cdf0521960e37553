"""The cloud (S3) target against a real SeaweedFS S3 server: a tiny Llama folder (7.1 MiB of
safetensors, so that a 5 MiB multipart threshold uploads it in two parts) and a small GGUF are
shipped, read back byte for byte, aliased, rolled back and removed; a tampered upload, bad
configuration, a missing bucket and an unreachable host each end in the documented error."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tests.standins.seaweedfs import S3Server, seaweedfs_s3
from tests.support import free_port
from tests.training.conftest import build_tiny_model
from trainforge.core.deploy.targets.base import ShipRequest, ShipResult
from trainforge.core.deploy.targets.s3 import S3Target
from trainforge.core.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound, Unavailable

MiB = 1024 * 1024
BUCKET = "models"
WRITES = {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_gguf(path: Path) -> Path:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny-chat")
    writer.add_tensor("token_embd.weight", np.arange(64 * 32, dtype=np.float32).reshape(64, 32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> S3Server:
    with seaweedfs_s3(tmp_path_factory.mktemp("seaweedfs")) as s3:
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
        client.close()
        yield s3


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("s3-models")
    models = {v: build_tiny_model(root / v, seed=seed, hidden=320) for v, seed in (("v1", 1), ("v2", 2))}
    models["gguf"] = write_gguf(root / "tiny-chat.f32.gguf")
    return models


@pytest.fixture
def credentials(server, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def target(server, credentials, request) -> S3Target:
    # Each test under its own prefix in the shared bucket; 5 MiB parts, S3's smallest.
    return S3Target(server.endpoint_url, BUCKET, prefix=f"tests/{request.node.name[:40]}",
                    multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)


def ship_request(models, version: str, gguf: bool = False) -> ShipRequest:
    return ShipRequest(deployment_id=f"dep-{version}", model_name="tiny-chat", version=version,
                       model_version_id=f"mv-{version}", alias="production", model_dir=models[version],
                       gguf_path=models["gguf"] if gguf else None)


def record_calls(target: S3Target) -> list[tuple[str, str | None]]:
    """(operation, key) of every S3 call the target's client makes, in order."""
    calls: list[tuple[str, str | None]] = []

    def record(params, model, **_):
        calls.append((model.name, params.get("Key")))

    target.client().meta.events.register("before-parameter-build.s3", record)
    return calls


def objects(server: S3Server, prefix: str) -> dict[str, bytes]:
    client = server.client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
            for o in page.get("Contents", [])]
    found = {k: client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}
    client.close()
    return found


def test_round_trip_with_verified_checksums_and_multipart(target, server, models):
    calls = record_calls(target)
    progress: list[float | None] = []
    result = target.ship(ship_request(models, "v1", gguf=True), lambda _, fraction: progress.append(fraction))
    assert progress[-1] == 1.0 and progress == sorted(progress)

    base = f"{target.prefix}/tiny-chat/versions/v1/"
    assert result.endpoint == f"s3://{BUCKET}/{base}"
    stored = objects(server, base)
    local = {p.name: p.read_bytes() for p in models["v1"].iterdir()} | {"tiny-chat.f32.gguf": models["gguf"].read_bytes()}
    assert set(stored) == {base + name for name in local} | {base + "manifest.json"}
    for name, data in local.items():
        assert sha256(stored[base + name]) == sha256(data), name

    manifest = json.loads(stored[base + "manifest.json"])
    assert {f["path"]: (f["sha256"], f["size"]) for f in manifest["files"]} == \
        {name: (sha256(data), len(data)) for name, data in local.items()}
    assert sha256(stored[base + "manifest.json"]) == result.details["manifest_sha256"]

    # Multipart: the 7.1 MiB safetensors went up in two parts, with SHA-256 checksums per part.
    weights = base + "model.safetensors"
    assert [op for op, key in calls if key == weights].count("UploadPart") == 2
    head = server.client().head_object(Bucket=BUCKET, Key=weights, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"].endswith("-2")
    # Verified by the composite checksum recomputed here over the same 5 MiB parts: no read-back.
    assert not [key for op, key in calls if op == "GetObject" and key != result.details["manifest_key"]]
    assert ("PutObject", base + "config.json") in calls  # small files in one PUT

    health = target.health(result, timeout_s=10)
    assert health.healthy, health.detail


def test_pointer_is_written_last_and_readers_follow_it(target, models):
    calls = record_calls(target)
    req = ship_request(models, "v1")
    result = target.ship(req, lambda *_: None)
    with pytest.raises(NotFound):
        target.read_alias("tiny-chat", "production")  # ship moves no alias
    target.point_alias(req, result)

    writes = [(op, key) for op, key in calls if op in WRITES]
    manifest_at = writes.index(("PutObject", result.details["manifest_key"]))
    file_writes = [i for i, (_, key) in enumerate(writes) if key.startswith(result.details["prefix"])
                   and not key.endswith("manifest.json")]
    assert len(file_writes) >= len(list(models["v1"].iterdir())) and max(file_writes) < manifest_at
    assert writes[-1] == ("PutObject", f"{target.prefix}/tiny-chat/aliases/production.json")
    assert len(writes) == manifest_at + 2  # nothing between the manifest and the pointer

    pointer = target.read_alias("tiny-chat", "production")
    assert pointer["version"] == "v1" and pointer["manifest_key"] == result.details["manifest_key"]
    assert {f["path"] for f in pointer["manifest"]["files"]} == {p.name for p in models["v1"].iterdir()}


def test_restore_alias_moves_the_pointer_back_and_remove_cleans_up(target, server, models):
    r1 = target.ship(ship_request(models, "v1"), lambda *_: None)
    target.point_alias(ship_request(models, "v1"), r1)
    r2 = target.ship(ship_request(models, "v2"), lambda *_: None)
    assert target.read_alias("tiny-chat", "production")["version"] == "v1"
    target.point_alias(ship_request(models, "v2"), r2)
    assert target.read_alias("tiny-chat", "production")["version"] == "v2"

    target.restore_alias("tiny-chat", "production", r1)
    pointer = target.read_alias("tiny-chat", "production")
    assert pointer["version"] == "v1" and pointer["manifest_sha256"] == r1.details["manifest_sha256"]

    target.remove("tiny-chat", "production", r2)  # not what the alias serves: the pointer stays
    assert objects(server, r2.details["prefix"]) == {}
    assert target.read_alias("tiny-chat", "production")["version"] == "v1"
    with pytest.raises(FailedPrecondition, match="manifest.json is gone"):
        target.restore_alias("tiny-chat", "production", r2)  # a removed version cannot be pointed at
    target.remove("tiny-chat", "production", r1)
    with pytest.raises(NotFound):
        target.read_alias("tiny-chat", "production")
    assert objects(server, f"{target.prefix}/tiny-chat/") == {}


@pytest.mark.parametrize("victim,with_checksum", [("config.json", True), ("model.safetensors", False)])
def test_a_tampered_upload_is_data_loss_and_the_pointer_stays(server, credentials, models, victim, with_checksum):
    """Another writer replaces one object between its upload and the verification: with a SHA-256
    of its own (the server reports a different checksum) or with none (the target reads it back)."""

    class TamperedStorage(S3Target):
        def _upload(self, client, path, key):
            super()._upload(client, path, key)
            if key.endswith("/v2/" + victim):
                data = path.read_bytes()
                data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]  # one flipped byte, same size
                extra = {"ChecksumAlgorithm": "SHA256"} if with_checksum else {}
                other = server.client(request_checksum_calculation="when_required")
                other.put_object(Bucket=BUCKET, Key=key, Body=data, **extra)
                other.close()

    target = TamperedStorage(server.endpoint_url, BUCKET, prefix=f"tests/tamper-{victim}",
                             multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    r1 = target.ship(ship_request(models, "v1"), lambda *_: None)
    target.point_alias(ship_request(models, "v1"), r1)
    with pytest.raises(DataLoss) as caught:
        target.ship(ship_request(models, "v2"), lambda *_: None)
    assert f"versions/v2/{victim}" in caught.value.message
    assert ("S3 reports sha256" if with_checksum else "read back sha256") in caught.value.message
    base = f"{target.prefix}/tiny-chat/versions/v2/"
    assert base + "manifest.json" not in objects(server, base)  # no manifest for a version that failed
    assert target.read_alias("tiny-chat", "production")["version"] == "v1"


def test_missing_configuration_names_every_field(credentials, monkeypatch, tmp_path):
    assert {v.field for v in S3Target("", "").validate()} == {"s3_endpoint", "s3_bucket"}
    assert [v.field for v in S3Target("s3.example.com", "Bad_Bucket").validate()] == \
        ["s3_endpoint", "s3_bucket"]
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    target = S3Target("http://127.0.0.1:9", "models")
    assert [v.field for v in target.validate()] == ["AWS_ACCESS_KEY_ID"]
    with pytest.raises(InvalidArgument) as caught:
        target.ship(ShipRequest("d", "m", "v1", "mv", "production", tmp_path), lambda *_: None)
    assert [v.field for v in caught.value.violations] == ["AWS_ACCESS_KEY_ID"]


def test_a_missing_bucket_is_a_failed_precondition_naming_it(server, credentials, models):
    target = S3Target(server.endpoint_url, "no-such-bucket")
    with pytest.raises(FailedPrecondition) as caught:
        target.ship(ship_request(models, "v1"), lambda *_: None)
    assert "no-such-bucket" in caught.value.message and "s3_bucket" in caught.value.message


def test_unreachable_endpoint_is_unavailable_naming_the_host(credentials, models):
    port = free_port()  # nothing listens there
    target = S3Target(f"http://127.0.0.1:{port}", BUCKET, max_attempts=1)
    with pytest.raises(Unavailable) as caught:
        target.ship(ship_request(models, "v1"), lambda *_: None)
    assert f"127.0.0.1:{port}" in caught.value.message
    shipped = ShipResult("s3://models/p/", {"manifest_key": "p/manifest.json", "manifest_sha256": "0" * 64,
                                            "version": "v1", "prefix": "p/"})
    health = target.health(shipped, timeout_s=2)
    assert not health.healthy and f"127.0.0.1:{port}" in health.detail
