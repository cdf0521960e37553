"""RegistryService over gRPC against the real server and PostgreSQL."""

from __future__ import annotations

import hashlib
import math
import os
import threading
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from trainforge.v1 import registry_pb2 as pb


def unique(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def register(registry, name: str, version: str = "1.0.0", **fields) -> pb.ModelVersion:
    fields.setdefault("model_type", "fine_tuned")
    return registry.RegisterModel(pb.RegisterModelRequest(
        model_version=pb.ModelVersion(name=name, version=version, **fields))).data


def error_of(call, *args) -> tuple[grpc.StatusCode, str, dict[str, str], error_details_pb2.ErrorInfo | None]:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    err = info.value
    status = rpc_status.from_call(err)
    violations, error_info = {}, None
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            error_info = error_details_pb2.ErrorInfo()
            detail.Unpack(error_info)
    return err.code(), err.details(), violations, error_info


def test_register_get_and_list_versions(registry):
    name = unique()
    v1 = register(registry, name, "1.0.0", description="first", size_mb=12.5, parameter_count=355_000_000,
                  architecture=pb.Architecture(model_family="GPT", layers=24, hidden_size=1024),
                  performance_metrics={"accuracy": 0.87, "f1_score": 0.84}, tags=["chat"])
    assert uuid.UUID(v1.model_version_id) and uuid.UUID(v1.model_id)
    assert (v1.name, v1.version, v1.parameter_count, v1.architecture.layers) == (name, "1.0.0", 355_000_000, 24)
    assert v1.performance_metrics["accuracy"] == pytest.approx(0.87)
    v2 = register(registry, name, "1.1.0", performance_metrics={"accuracy": 0.9})
    assert v2.model_id == v1.model_id

    model = registry.GetModel(pb.GetModelRequest(model_id=name)).data
    assert (model.latest_version, model.version_count, model.latest.version) == ("1.1.0", 2, "1.1.0")
    assert registry.GetModel(pb.GetModelRequest(model_id=v1.model_id)).data.name == name

    versions = registry.ListModelVersions(pb.ListModelVersionsRequest(model_id=name)).data
    assert [v.version for v in versions] == ["1.1.0", "1.0.0"]
    got = registry.GetModelVersion(pb.GetModelVersionRequest(model_id=name, version="1.0.0")).data
    assert got.description == "first" and list(got.tags) == ["chat"]


def test_register_reports_every_violation_and_writes_nothing(registry):
    name = unique()
    code, _, violations, info = error_of(registry.RegisterModel, pb.RegisterModelRequest(model_version=pb.ModelVersion(
        name=name, version="not a version", model_type="quantum", size_mb=-1, parameter_count=-5,
        performance_metrics={"accuracy": math.inf}, architecture=pb.Architecture(layers=-2))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.reason == "INVALID_ARGUMENT" and info.domain == "trainforge"
    assert set(violations) == {"version", "model_type", "size_mb", "parameter_count",
                               "performance_metrics.accuracy", "architecture.layers"}
    code, *_ = error_of(registry.GetModel, pb.GetModelRequest(model_id=name))
    assert code == grpc.StatusCode.NOT_FOUND


def test_concurrent_registrations_of_one_version_give_one_success(registry):
    name = unique()
    outcomes: list[grpc.StatusCode] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        barrier.wait()
        try:
            register(registry, name, "2.0.0")
            outcomes.append(grpc.StatusCode.OK)
        except grpc.RpcError as err:
            outcomes.append(err.code())

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes, key=str) == sorted([grpc.StatusCode.OK] + [grpc.StatusCode.ALREADY_EXISTS] * 7, key=str)
    assert registry.GetModel(pb.GetModelRequest(model_id=name)).data.version_count == 1


def test_aliases_resolve_and_show_in_get_and_search(registry):
    name = unique()
    register(registry, name, "1.0.0", performance_metrics={"accuracy": 0.5})
    register(registry, name, "2.0.0", performance_metrics={"accuracy": 0.7})
    model = registry.SetModelAlias(pb.SetModelAliasRequest(model_id=name, alias="production", version="1.0.0")).data
    assert dict(model.aliases) == {"production": "1.0.0"}
    by_alias = registry.GetModelVersion(pb.GetModelVersionRequest(model_id=name, version="production")).data
    assert by_alias.version == "1.0.0" and list(by_alias.aliases) == ["production"]
    found = registry.SearchModels(pb.SearchModelsRequest(filter=f'name = "{name}" AND aliases:production')).data
    assert [v.version for v in found] == ["1.0.0"] and list(found[0].aliases) == ["production"]
    # Moving the alias is an upsert; an alias may not shadow a version string.
    registry.SetModelAlias(pb.SetModelAliasRequest(model_id=name, alias="production", version="2.0.0"))
    assert dict(registry.GetModel(pb.GetModelRequest(model_id=name)).data.aliases) == {"production": "2.0.0"}
    code, _, violations, _ = error_of(registry.SetModelAlias,
                                      pb.SetModelAliasRequest(model_id=name, alias="Bad Alias", version="1.0.0"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "alias" in violations
    registry.DeleteModelAlias(pb.DeleteModelAliasRequest(model_id=name, alias="production"))
    code, *_ = error_of(registry.DeleteModelAlias, pb.DeleteModelAliasRequest(model_id=name, alias="production"))
    assert code == grpc.StatusCode.NOT_FOUND


def test_search_filter_order_and_pagination(registry):
    tag = unique("tag")
    names = [unique() for _ in range(5)]
    for i, name in enumerate(names):
        register(registry, name, "1.0.0", tags=[tag], performance_metrics={"accuracy": 0.5 + i / 10},
                 model_type="pretrained" if i == 0 else "fine_tuned")
    request = pb.SearchModelsRequest(filter=f'tags:"{tag}" AND model_type = "fine_tuned" AND metrics.accuracy >= 0.6',
                                     order_by="metrics.accuracy desc", page_size=3)
    first = registry.SearchModels(request)
    assert first.total_size == 4 and [v.name for v in first.data] == [names[4], names[3], names[2]]
    request.page_token = first.next_page_token
    second = registry.SearchModels(request)
    assert [v.name for v in second.data] == [names[1]] and second.next_page_token == ""
    # A token belongs to its query.
    code, _, violations, _ = error_of(registry.SearchModels, pb.SearchModelsRequest(
        filter=f'tags:"{tag}"', page_token=first.next_page_token))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in violations
    text = registry.SearchModels(pb.SearchModelsRequest(query=tag.upper())).data
    assert len(text) == 5


@pytest.mark.parametrize("bad", ["foo = 1", "metrics.accuracy > high", "name = (", "size_mb : 3",
                                 'name = "a" AND', "create_time > yesterday"])
def test_unsupported_filter_is_invalid_argument(registry, bad):
    code, _, violations, _ = error_of(registry.SearchModels, pb.SearchModelsRequest(filter=bad))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "filter" in violations


def test_compare_lists_metrics_with_deltas_and_best(registry):
    name = unique()
    a = register(registry, name, "1.0.0", performance_metrics={"accuracy": 0.80, "inference_latency_ms": 150})
    register(registry, name, "1.1.0", performance_metrics={"accuracy": 0.85, "inference_latency_ms": 170,
                                                           "f1_score": 0.8})
    registry.SetModelAlias(pb.SetModelAliasRequest(model_id=name, alias="production", version="1.1.0"))
    result = registry.CompareModels(pb.CompareModelsRequest(
        model_version_ids=[a.model_version_id, f"{name}@production"])).data
    assert [v.version for v in result.versions] == ["1.0.0", "1.1.0"]
    rows = {m.metric: m for m in result.metrics}
    assert list(rows) == ["accuracy", "f1_score", "inference_latency_ms"]
    assert rows["accuracy"].deltas[1] == pytest.approx(0.05)
    assert rows["accuracy"].best_model_version_id == result.versions[1].model_version_id
    assert rows["inference_latency_ms"].best_model_version_id == a.model_version_id  # lower is better
    assert math.isnan(rows["f1_score"].values[0])
    code, *_ = error_of(registry.CompareModels, pb.CompareModelsRequest(model_version_ids=[f"{name}:9.9"] * 2))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _, violations, _ = error_of(registry.CompareModels, pb.CompareModelsRequest(model_version_ids=["x:1"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "model_version_ids" in violations


def test_update_with_mask_and_stale_etag(registry):
    name = unique()
    register(registry, name)
    model = registry.GetModel(pb.GetModelRequest(model_id=name)).data
    updated = registry.UpdateModel(pb.UpdateModelRequest(
        model_id=name, model=pb.Model(description="new", tags=["x"], etag=model.etag),
        update_mask=field_mask_pb2.FieldMask(paths=["description"]))).data
    assert (updated.description, list(updated.tags)) == ("new", [])
    assert updated.etag != model.etag
    code, message, _, info = error_of(registry.UpdateModel, pb.UpdateModelRequest(
        model_id=name, model=pb.Model(description="lost", etag=model.etag)))
    assert code == grpc.StatusCode.ABORTED and "etag" in message
    assert registry.GetModel(pb.GetModelRequest(model_id=name)).data.description == "new"
    code, _, violations, _ = error_of(registry.UpdateModel, pb.UpdateModelRequest(
        model_id=name, model=pb.Model(description="x"), update_mask=field_mask_pb2.FieldMask(paths=["name"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "update_mask" in violations

    version = registry.GetModelVersion(pb.GetModelVersionRequest(model_id=name, version="1.0.0")).data
    changed = registry.UpdateModelVersion(pb.UpdateModelVersionRequest(
        model_id=name, version="1.0.0", model_version=pb.ModelVersion(
            changelog="retrained", performance_metrics={"accuracy": 0.9}, etag=version.etag))).data
    assert changed.changelog == "retrained" and changed.performance_metrics["accuracy"] == pytest.approx(0.9)
    code, *_ = error_of(registry.UpdateModelVersion, pb.UpdateModelVersionRequest(
        model_id=name, version="1.0.0", model_version=pb.ModelVersion(changelog="stale", etag=version.etag)))
    assert code == grpc.StatusCode.ABORTED


def test_history_has_changelog_and_metric_deltas(registry):
    name = unique()
    register(registry, name, "1.0.0", changelog="first", performance_metrics={"accuracy": 0.8, "loss": 1.0})
    register(registry, name, "1.1.0", changelog="more data", performance_metrics={"accuracy": 0.86})
    history = registry.GetModelHistory(pb.GetModelHistoryRequest(model_id=name)).data
    assert [(e.version, e.changelog, e.previous_version) for e in history.entries] == [
        ("1.0.0", "first", ""), ("1.1.0", "more data", "1.0.0")]
    assert dict(history.entries[1].metric_deltas) == {"accuracy": pytest.approx(0.06)}


def _make_model_dir(root: Path, name: str) -> dict[str, bytes]:
    files = {"config.json": b'{"model_type": "llama"}', "weights/model.safetensors": os.urandom(300_000)}
    for rel, data in files.items():
        (root / name / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / name / rel).write_bytes(data)
    return files


def test_artifacts_are_content_addressed_and_verified_on_read(registry, models_root, settings):
    name = unique()
    files = _make_model_dir(models_root, name)
    version = register(registry, name, source=name)
    assert version.artifact_count == 2 and version.artifact_bytes == sum(map(len, files.values()))
    assert version.size_mb == pytest.approx(version.artifact_bytes / 2**20, abs=1e-3)
    manifest = registry.ListArtifacts(pb.ListArtifactsRequest(model_id=name, version="1.0.0")).data
    assert {f.path: f.sha256 for f in manifest.files} == {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}
    assert manifest.manifest_digest == version.manifest_digest

    chunks = registry.DownloadArtifact(pb.DownloadArtifactRequest(
        model_id=name, version="1.0.0", path="weights/model.safetensors"))
    assert b"".join(c.data for c in chunks) == files["weights/model.safetensors"]
    assert registry.VerifyModelVersion(pb.VerifyModelVersionRequest(model_id=name, version="1.0.0")).data.ok

    # Flip one byte of the stored blob: verify names the file, download refuses it.
    sha = hashlib.sha256(files["weights/model.safetensors"]).hexdigest()
    blob = settings.artifacts_dir / "sha256" / sha[:2] / sha[2:]
    data = bytearray(blob.read_bytes())
    data[1000] ^= 0xFF
    blob.write_bytes(bytes(data))
    result = registry.VerifyModelVersion(pb.VerifyModelVersionRequest(model_id=name, version="1.0.0")).data
    assert not result.ok and list(result.mismatched) == ["weights/model.safetensors"]
    code, *_ = error_of(lambda r: list(registry.DownloadArtifact(r)), pb.DownloadArtifactRequest(
        model_id=name, version="1.0.0", path="weights/model.safetensors"))
    assert code == grpc.StatusCode.DATA_LOSS


def test_upload_stream_then_attach_refused(registry, models_root):
    name = unique()
    register(registry, name)
    payload = os.urandom(5 * 1024 * 1024 + 17)

    def chunks():
        yield pb.UploadArtifactsRequest(model_id=name, version="1.0.0", path="config.json", data=b"{}")
        for offset in range(0, len(payload), 1 << 20):
            yield pb.UploadArtifactsRequest(path="model.bin", data=payload[offset:offset + (1 << 20)])

    manifest = registry.UploadArtifacts(chunks()).data
    assert {f.path: f.size_bytes for f in manifest.files} == {"config.json": 2, "model.bin": len(payload)}
    _make_model_dir(models_root, name)
    code, *_ = error_of(registry.AttachArtifacts, pb.AttachArtifactsRequest(
        model_id=name, version="1.0.0", source_path=name))
    assert code == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("path", ["../../etc", "/etc", "nonexistent-dir", "a/../../..", "link-out"])
def test_attach_refuses_paths_outside_the_models_root(registry, models_root, path):
    name = unique()
    register(registry, name)
    (models_root / "link-out").unlink(missing_ok=True)
    (models_root / "link-out").symlink_to("/etc")
    code, _, violations, _ = error_of(registry.AttachArtifacts, pb.AttachArtifactsRequest(
        model_id=name, version="1.0.0", source_path=path))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "source_path" in violations
    assert registry.GetModelVersion(pb.GetModelVersionRequest(model_id=name, version="1.0.0")).data.artifact_count == 0


def test_delete_refuses_aliased_unless_forced_and_collects_blobs(registry, models_root, settings):
    name = unique()
    files = _make_model_dir(models_root, name)
    register(registry, name, "1.0.0", source=name)
    register(registry, name, "2.0.0")
    registry.SetModelAlias(pb.SetModelAliasRequest(model_id=name, alias="production", version="1.0.0"))
    code, message, _, info = error_of(registry.DeleteModelVersion,
                                      pb.DeleteModelVersionRequest(model_id=name, version="1.0.0"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "production" in message and info.reason == "MODEL_IN_USE"
    code, *_ = error_of(registry.DeleteModel, pb.DeleteModelRequest(model_id=name))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    registry.DeleteModelVersion(pb.DeleteModelVersionRequest(model_id=name, version="2.0.0"))
    deleted = registry.DeleteModelVersion(pb.DeleteModelVersionRequest(model_id=name, version="1.0.0", force=True))
    assert deleted.data.version == "1.0.0"
    sha = hashlib.sha256(files["weights/model.safetensors"]).hexdigest()
    assert not (settings.artifacts_dir / "sha256" / sha[:2] / sha[2:]).exists()
    registry.DeleteModel(pb.DeleteModelRequest(model_id=name))
    code, *_ = error_of(registry.GetModel, pb.GetModelRequest(model_id=name))
    assert code == grpc.StatusCode.NOT_FOUND


def test_usage_counts_and_percentiles(registry):
    name = unique()
    register(registry, name)
    registry.RecordModelUsage(pb.RecordModelUsageRequest(
        model_id=name, version="1.0.0", request_count=100, error_count=5,
        latencies_ms=[float(i) for i in range(1, 101)], tokens_generated=1000))
    stats = registry.GetModelUsage(pb.GetModelUsageRequest(model_id=name, version="1.0.0")).data
    assert (stats.request_count, stats.error_count, stats.tokens_generated) == (100, 5, 1000)
    assert stats.error_rate == pytest.approx(0.05)
    assert stats.latency_mean_ms == pytest.approx(50.5)
    assert stats.latency_p50_ms == pytest.approx(50, rel=0.05)
    assert stats.latency_p99_ms == pytest.approx(99, rel=0.05)
    code, _, violations, _ = error_of(registry.RecordModelUsage, pb.RecordModelUsageRequest(
        model_id=name, version="1.0.0", request_count=1, error_count=3, latencies_ms=[-1.0]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and {"error_count", "latencies_ms"} <= set(violations)


def test_registry_health(registry):
    health = registry.GetRegistryHealth(pb.GetRegistryHealthRequest()).data
    assert health.status == "ok" and health.database_ok and health.model_count >= 0


def test_compress_checks_its_fields_first(registry):
    code, _, violations, _ = error_of(registry.CompressModel, pb.CompressModelRequest(model_id="x"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and {"compression_type", "precision"} <= set(violations)


def test_list_models_pages_through_everything(registry):
    for _ in range(3):
        register(registry, unique("page"))
    seen, token = [], ""
    while True:
        page = registry.ListModels(pb.ListModelsRequest(page_size=2, page_token=token))
        seen += [m.name for m in page.data]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == page.total_size == len(set(seen))
