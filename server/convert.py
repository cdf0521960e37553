"""Conversions between protobuf messages and domain objects. Pure data mapping, no decisions:
validation lives in core."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import any_pb2, json_format, struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from trainforge.core.registry import models as domain
from trainforge.server.errors import code_of_error_type
from trainforge.v1 import deploy_pb2, training_pb2
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



# -- training ---------------------------------------------------------------------------------
_METRIC_FIELDS = ("train_loss", "eval_loss", "learning_rate", "tokens_per_sec", "grad_norm")
_PROGRESS_FIELDS = ("current_epoch", "total_epochs", "current_step", "total_steps", "percent", "estimated_remaining")


def job_metrics(values: dict) -> training_pb2.JobMetrics:
    known = {k: float(values[k]) for k in _METRIC_FIELDS if k in values}
    extra = {k: float(v) for k, v in values.items() if k not in _METRIC_FIELDS and isinstance(v, (int, float))}
    return training_pb2.JobMetrics(**known, extra=extra)


def progress(values: dict) -> training_pb2.Progress:
    return training_pb2.Progress(**{k: values[k] for k in _PROGRESS_FIELDS if k in values})


def error_status(error: dict | None) -> status_pb2.Status | None:
    """A job's or deployment's recorded error ({code or type, message, reason, metadata})."""
    if not error:
        return None
    details = []
    if error.get("reason"):
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason=error["reason"], domain="trainforge",
                                              metadata=error.get("metadata") or {}))
        details.append(info)
    code = error["code"] if "code" in error else code_of_error_type(error.get("type", ""))
    return status_pb2.Status(code=int(code), message=error.get("message", ""), details=details)


def job(j) -> training_pb2.Job:
    error = error_status(j.error)
    resources = training_pb2.ResourceUsage(**{k: float(v) for k, v in (j.resources or {}).items()
                                              if k in training_pb2.ResourceUsage.DESCRIPTOR.fields_by_name})
    message = training_pb2.Job(
        job_id=j.job_id, status=training_pb2.JobState.Value("JOB_STATE_" + j.state),
        kind=training_pb2.JobKind.Value("JOB_KIND_" + j.kind),
        progress=progress(j.progress or {}), metrics=job_metrics(j.metrics or {}), resources=resources,
        error=error, result_model_version_id=j.result_model_version_id, attempt=j.attempt,
        create_time=timestamp(j.create_time), start_time=timestamp(j.start_time), end_time=timestamp(j.end_time))
    # Each kind's request and result have their own fields; the stored documents may carry keys
    # that are not fields (a training spec's `resolved` paths), which are left out.
    spec_field, result_field = _KIND_FIELDS[j.kind]
    json_format.ParseDict(j.spec, getattr(message, spec_field), ignore_unknown_fields=True)
    if j.result and result_field:
        json_format.ParseDict(j.result, getattr(message, result_field), ignore_unknown_fields=True)
    return message


_KIND_FIELDS = {"TRAINING": ("spec", ""), "EVALUATION": ("evaluation", "evaluation_result"),
                "COMPRESSION": ("compression", "compression_result"),
                "DEPLOYMENT": ("deployment", "deployment_result")}


def job_event(e) -> training_pb2.JobEvent:
    return training_pb2.JobEvent(
        job_id=e.job_id, sequence=e.sequence, type=training_pb2.JobEventType.Value("JOB_EVENT_TYPE_" + e.type),
        create_time=timestamp(e.create_time), status=training_pb2.JobState.Value("JOB_STATE_" + e.state),
        message=e.message, progress=progress(e.progress or {}), metrics=job_metrics(e.metrics or {}))


def checkpoint(c) -> training_pb2.Checkpoint:
    return training_pb2.Checkpoint(job_id=c.job_id, step=c.step, epoch=c.epoch, path=c.path, size_bytes=c.size_bytes,
                                   metrics={k: float(v) for k, v in c.metrics.items()}, is_best=c.is_best,
                                   create_time=timestamp(c.create_time))


def workers_health(r) -> training_pb2.WorkersHealth:
    """core.jobs.worker_heartbeats.WorkersReport -> WorkersHealth."""
    return training_pb2.WorkersHealth(
        live_workers=len(r.live), queued_jobs=r.queued_jobs, oldest_queued_seconds=r.oldest_queued_seconds,
        processes=[training_pb2.WorkerProcess(
            worker_id=w.worker_id, host=w.host, pid=w.pid, start_time=timestamp(w.start_time),
            last_seen_time=timestamp(w.last_seen), concurrency=w.concurrency, running_jobs=w.running_jobs,
            gpus=list(w.gpus)) for w in r.live])


def deployment_health(deployment_id: str, h: dict | None) -> deploy_pb2.DeploymentHealth | None:
    if not h:
        return None
    check_time = timestamp_pb2.Timestamp()
    check_time.FromNanoseconds(int(float(h.get("check_time", 0)) * 1e9))
    return deploy_pb2.DeploymentHealth(deployment_id=deployment_id, healthy=bool(h.get("healthy")),
                                       detail=h.get("detail", ""), latency_ms=float(h.get("latency_ms", 0)),
                                       check_time=check_time)


def deployment(x) -> deploy_pb2.Deployment:
    return deploy_pb2.Deployment(
        deployment_id=x.deployment_id, model_version_id=x.model_version_id, target=x.target, endpoint=x.endpoint,
        state=deploy_pb2.DeploymentState.Value("DEPLOYMENT_STATE_" + x.state), auto_rollback=x.auto_rollback,
        health_check_enabled=x.health_check_enabled, health_check_timeout=x.health_check_timeout_ms,
        deployment_tags=list(x.deployment_tags), previous_deployment_id=x.previous_deployment_id,
        error=error_status(x.error), create_time=timestamp(x.create_time), update_time=timestamp(x.update_time),
        alias=x.alias, job_id=x.job_id, model_name=x.model_name, version=x.version, engine=x.engine,
        serving_path=x.serving_path, last_health=deployment_health(x.deployment_id, x.last_health))
