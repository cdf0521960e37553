"""Conversions between protobuf messages and domain objects. Pure data mapping, no decisions:
validation lives in core."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from trainforge.core.registry import models as domain
from trainforge.v1 import registry_pb2 as pb


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def new_version(msg: pb.ModelVersion) -> domain.NewVersion:
    arch, lineage = msg.architecture, msg.lineage
    return domain.NewVersion(
        name=msg.name,
        version=msg.version,
        description=msg.description,
        model_type=msg.model_type,
        size_mb=msg.size_mb,
        parameter_count=msg.parameter_count,
        architecture=domain.Architecture(
            model_family=arch.model_family, layers=arch.layers, hidden_size=arch.hidden_size,
            attention_heads=arch.attention_heads, vocab_size=arch.vocab_size,
            max_sequence_length=arch.max_sequence_length),
        performance_metrics=dict(msg.performance_metrics),
        tags=tuple(msg.tags),
        lineage=domain.Lineage(
            base_model=lineage.base_model, dataset_digest=lineage.dataset_digest, job_id=lineage.job_id,
            config=json_format.MessageToDict(lineage.config) if lineage.HasField("config") else {},
            parent_model_version_id=lineage.parent_model_version_id),
        source=msg.source,
        changelog=msg.changelog,
    )


def model_version(v: domain.ModelVersion) -> pb.ModelVersion:
    config = struct_pb2.Struct()
    config.update(v.lineage.config)
    a = v.architecture
    return pb.ModelVersion(
        model_version_id=v.model_version_id,
        model_id=v.model_id,
        name=v.name,
        version=v.version,
        description=v.description,
        model_type=v.model_type,
        size_mb=v.size_mb,
        parameter_count=v.parameter_count,
        architecture=pb.Architecture(
            model_family=a.model_family, layers=a.layers, hidden_size=a.hidden_size,
            attention_heads=a.attention_heads, vocab_size=a.vocab_size, max_sequence_length=a.max_sequence_length),
        performance_metrics=v.performance_metrics,
        tags=v.tags,
        lineage=pb.Lineage(base_model=v.lineage.base_model, dataset_digest=v.lineage.dataset_digest,
                           job_id=v.lineage.job_id, config=config,
                           parent_model_version_id=v.lineage.parent_model_version_id),
        source=v.source,
        changelog=v.changelog,
        aliases=v.aliases,
        manifest_digest=v.manifest_digest,
        artifact_count=v.artifact_count,
        artifact_bytes=v.artifact_bytes,
        deployed=v.deployed,
        create_time=timestamp(v.create_time),
        update_time=timestamp(v.update_time),
        etag=v.etag,
    )


def model(m: domain.Model) -> pb.Model:
    return pb.Model(
        model_id=m.model_id,
        name=m.name,
        description=m.description,
        tags=m.tags,
        aliases=m.aliases,
        latest_version=m.latest_version,
        version_count=m.version_count,
        latest=model_version(m.latest) if m.latest else None,
        create_time=timestamp(m.create_time),
        update_time=timestamp(m.update_time),
        etag=m.etag,
    )


def manifest(m: domain.Manifest) -> pb.ArtifactManifest:
    return pb.ArtifactManifest(
        model_version_id=m.model_version_id,
        manifest_digest=m.manifest_digest,
        files=[pb.ArtifactFile(path=f.path, size_bytes=f.size_bytes, sha256=f.sha256) for f in m.files],
        total_bytes=m.total_bytes,
    )


def usage(u: domain.UsageStats) -> pb.UsageStats:
    return pb.UsageStats(
        model_version_id=u.model_version_id,
        request_count=u.request_count,
        error_count=u.error_count,
        error_rate=u.error_rate,
        latency_mean_ms=u.latency_mean_ms,
        latency_p50_ms=u.latency_p50_ms,
        latency_p95_ms=u.latency_p95_ms,
        latency_p99_ms=u.latency_p99_ms,
        tokens_generated=u.tokens_generated,
        first_request_time=timestamp(u.first_request_time),
        last_request_time=timestamp(u.last_request_time),
    )


def history(h: domain.History) -> pb.ModelHistory:
    return pb.ModelHistory(model_id=h.model_id, name=h.name, entries=[
        pb.ModelHistoryEntry(model_version_id=e.model_version_id, version=e.version, changelog=e.changelog,
                             performance_metrics=e.performance_metrics, metric_deltas=e.metric_deltas,
                             previous_version=e.previous_version, create_time=timestamp(e.create_time))
        for e in h.entries
    ])


def comparison(c: domain.Comparison) -> pb.ModelComparison:
    return pb.ModelComparison(
        versions=[model_version(v) for v in c.versions],
        metrics=[pb.MetricComparison(metric=m.metric, values=m.values, deltas=m.deltas,
                                     best_model_version_id=m.best_model_version_id) for m in c.metrics],
    )


def verification(v: domain.Verification) -> pb.VerificationResult:
    return pb.VerificationResult(model_version_id=v.model_version_id, ok=v.ok, manifest_digest=v.manifest_digest,
                                 files_checked=v.files_checked, mismatched=v.mismatched, missing=v.missing)


def registry_health(h: domain.RegistryHealth) -> pb.RegistryHealth:
    return pb.RegistryHealth(status=h.status, database_ok=h.database_ok, database_latency_ms=h.database_latency_ms,
                             model_count=h.model_count, version_count=h.version_count,
                             artifact_bytes=h.artifact_bytes, artifact_store_ok=h.artifact_store_ok)

