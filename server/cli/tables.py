"""Rich renderers: registry objects (shared by `models` and the REST demo), the service's
endpoints, jobs, API keys and audit records. Pure functions from messages or domain objects to
tables; no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from rich.markup import escape
from rich.table import Table

from trainforge.core.access.audit import AuditRecord
from trainforge.core.access.keys import ApiKey
from trainforge.server.service import Endpoints
from trainforge.v1 import registry_pb2, training_pb2


def num(value: float | str) -> str:
    if isinstance(value, str) or math.isnan(value):  # proto JSON writes NaN as "NaN"
        return "—"
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:.4g}"


def delta(value: float | str) -> str:
    if isinstance(value, str) or math.isnan(value):
        return ""
    return f"{'+' if value >= 0 else ''}{num(value)}"


def metrics_text(metrics: Any) -> str:
    return ", ".join(f"{k}={num(metrics[k])}" for k in sorted(metrics))


def time_text(ts: Any) -> str:
    return ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if ts.seconds else ""


def version_ref(v: registry_pb2.ModelVersion) -> str:
    return f"{v.name}:{v.version}"


def version_table(v: registry_pb2.ModelVersion) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    a = v.architecture
    rows = [
        ("version", version_ref(v)), ("id", v.model_version_id), ("type", v.model_type), ("description", v.description),
        ("size", f"{num(v.size_mb)} MB" if v.size_mb else ""),
        ("parameters", f"{v.parameter_count:,}" if v.parameter_count else ""),
        ("architecture", f"{a.model_family} {a.layers} layers, hidden {a.hidden_size}, {a.attention_heads} heads, "
                         f"vocab {a.vocab_size}, context {a.max_sequence_length}" if a.layers else a.model_family),
        ("metrics", metrics_text(v.performance_metrics)), ("tags", ", ".join(v.tags)), ("aliases", ", ".join(v.aliases)),
        ("base model", v.lineage.base_model),
        ("artifacts", f"{v.artifact_count} files, {v.artifact_bytes:,} bytes, {v.manifest_digest[:16]}"
                      if v.artifact_count else ""),
        ("deployed", "yes" if v.deployed else ""), ("created", time_text(v.create_time)),
    ]
    for key, value in rows:
        if value:
            table.add_row(key, value)
    return table


def model_table(m: registry_pb2.Model) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows = [
        ("model", m.name), ("id", m.model_id), ("description", m.description), ("tags", ", ".join(m.tags)),
        ("versions", str(m.version_count)), ("latest", m.latest_version),
        ("aliases", ", ".join(f"{k} → {m.aliases[k]}" for k in sorted(m.aliases))),
        ("updated", time_text(m.update_time)),
    ]
    for key, value in rows:
        if value:
            table.add_row(key, value)
    return table


def versions_table(versions: Sequence[registry_pb2.ModelVersion], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("version", overflow="fold")
    table.add_column("type")
    table.add_column("metrics", overflow="fold")
    table.add_column("aliases")
    for v in versions:
        table.add_row(version_ref(v), v.model_type, metrics_text(v.performance_metrics), ", ".join(v.aliases))
    return table


def comparison_table(comparison: registry_pb2.ModelComparison, refs: Sequence[str] = ()) -> Table:
    """Metrics down, versions across; each cell is the value and its delta against the first
    version; the best value of a row is starred."""
    names = {v.name for v in comparison.versions}
    one_model = len(names) == 1
    table = Table(title=names.pop() if one_model else None, title_justify="left",
                  caption="deltas against the first version; ★ best", caption_justify="left")
    table.add_column("metric", overflow="fold")
    ids = [v.model_version_id for v in comparison.versions]
    for i, v in enumerate(comparison.versions):
        # With one model the name goes in the title and the columns are its versions.
        header = v.version if one_model else version_ref(v)
        ref = refs[i] if i < len(refs) else ""
        if ref and ref not in (version_ref(v), v.model_version_id):
            header += f"\n({ref[len(v.name):] if one_model and ref.startswith(v.name) else ref})"
        table.add_column(header, justify="right", overflow="fold")
    for row in comparison.metrics:
        cells = []
        for i, value in enumerate(row.values):
            cell = num(value)
            change = delta(row.deltas[i]) if i and i < len(row.deltas) else ""
            if change:
                cell += f" ({change})"
            if row.best_model_version_id and ids[i] == row.best_model_version_id:
                cell += " ★"
            cells.append(cell)
        table.add_row(row.metric, *cells)
    return table


def history_table(history: registry_pb2.ModelHistory) -> Table:
    table = Table(title=f"history of {history.name}", title_justify="left")
    table.add_column("version")
    table.add_column("after")
    table.add_column("metric changes", overflow="fold")
    table.add_column("registered")
    for e in history.entries:
        changes = ", ".join(f"{k} {delta(e.metric_deltas[k])}" for k in sorted(e.metric_deltas))
        table.add_row(e.version, e.previous_version, changes, time_text(e.create_time))
    return table


def health_table(h: registry_pb2.RegistryHealth) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("status", h.status)
    table.add_row("database", f"{'ok' if h.database_ok else 'DOWN'} ({h.database_latency_ms:.1f} ms)")
    table.add_row("models / versions", f"{h.model_count} / {h.version_count}")
    table.add_row("artifact store", f"{'ok' if h.artifact_store_ok else 'NOT WRITABLE'}, {h.artifact_bytes:,} bytes")


def models_list_table(reply: registry_pb2.ListModelsResponse) -> Table:
    table = Table(caption=f"{len(reply.data)} of {reply.total_size} models", caption_justify="left")
    for column in ("model", "latest", "versions", "aliases", "updated"):
        table.add_column(column, overflow="fold")
    for m in reply.data:
        table.add_row(m.name, m.latest_version, str(m.version_count),
                      ", ".join(f"{k} → {m.aliases[k]}" for k in sorted(m.aliases)), time_text(m.update_time))
    return table


def endpoints_table(e: Endpoints) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("gRPC", e.grpc_address)
    table.add_row("REST", e.rest_url)
    table.add_row("API docs", e.docs_url)
    table.add_row("metrics", e.metrics_url or "off")
    table.add_row("database", e.database)
    table.add_row("auth", "API keys" if e.auth_enabled else "OFF (loopback only)")
    table.add_row("workers", f"{e.workers} in this process" if e.workers else "none here (run `trainforge worker`)")
    return table


# -- jobs -----------------------------------------------------------------------------------------

def state_name(state: int) -> str:
    return training_pb2.JobState.Name(state).removeprefix("JOB_STATE_")


STATE_STYLES = {"SUCCEEDED": "green", "FAILED": "red", "CANCELLED": "yellow", "CANCELLING": "yellow", "RUNNING": "cyan",
                "PAUSED": "magenta"}


def kind_name(kind: int) -> str:
    return training_pb2.JobKind.Name(kind).removeprefix("JOB_KIND_").lower()


def job_title(j: training_pb2.Job) -> str:
    """What a job is about: a training job's name, or what an evaluation or compression works on."""
    if j.kind == training_pb2.JOB_KIND_EVALUATION:
        return f"evaluate {j.evaluation.model_name}:{j.evaluation.version}"
    if j.kind == training_pb2.JOB_KIND_COMPRESSION:
        return f"compress {j.compression.model_name}:{j.compression.version}"
    return j.spec.name


def styled_state(state: int) -> str:
    name = state_name(state)
    style = STATE_STYLES.get(name)
    return f"[{style}]{name}[/]" if style else name


def duration(seconds: float) -> str:
    """Seconds as H:MM:SS (M:SS under an hour); empty for unknown or negative."""
    if not seconds or seconds < 0 or math.isnan(seconds):
        return ""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_text(p: training_pb2.Progress) -> str:
    if not p.total_steps:
        return ""
    text = f"step {p.current_step}/{p.total_steps} ({p.percent:.0f}%)"
    if p.total_epochs:
        text += f", epoch {p.current_epoch}/{p.total_epochs}"
    return text


def job_metrics_text(m: training_pb2.JobMetrics) -> str:
    parts = [f"{name}={num(getattr(m, name))}" for name in
             ("train_loss", "eval_loss", "learning_rate", "tokens_per_sec", "grad_norm") if m.HasField(name)]
    parts += [f"{k}={num(m.extra[k])}" for k in sorted(m.extra)]
    return ", ".join(parts)


def job_result_text(j: training_pb2.Job) -> str:
    """An evaluation's metrics or a compression's outcome; empty for training and unfinished jobs."""
    if j.HasField("evaluation_result"):
        r = j.evaluation_result
        return ", ".join(f"{k}={num(r.metrics[k])}" for k in sorted(r.metrics)) + f" on {r.num_samples} samples"
    if j.HasField("compression_result"):
        r = j.compression_result
        increase = r.metrics.get("perplexity_increase")
        return (f"registered {r.model_name}:{r.version}, {r.size_bytes:,} bytes (from {r.source_size_bytes:,})"
                + (f", perplexity {increase:+.2%}" if increase is not None else ""))
    return ""


def jobs_table(reply: training_pb2.ListJobsResponse) -> Table:
    table = Table(caption=f"{len(reply.data)} of {plural(reply.total_size, 'job')}; times in UTC",
                  caption_justify="left", box=None, padding=(0, 1), collapse_padding=True, pad_edge=False)
    table.add_column("job", no_wrap=True, min_width=36)  # whole: it is what `jobs get` and `jobs watch` take
    table.add_column("name", overflow="fold")
    table.add_column("state", no_wrap=True, min_width=9)
    table.add_column("steps", overflow="fold")
    table.add_column("loss", no_wrap=True)
    table.add_column("created", min_width=10)
    for j in reply.data:
        loss = num(j.metrics.train_loss) if j.metrics.HasField("train_loss") else ""
        p = j.progress
        steps = f"{p.current_step}/{p.total_steps} {p.percent:.0f}%" if p.total_steps else ""
        table.add_row(j.job_id, escape(job_title(j)), styled_state(j.status), steps, loss, time_text(j.create_time))
    return table


def job_table(j: training_pb2.Job) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    spec, r = j.spec, j.resources
    data = spec.training_data
    rows = [
        ("job", j.job_id), ("kind", kind_name(j.kind)), ("name", escape(job_title(j))), ("state", styled_state(j.status)),
        ("model", escape(spec.model)), ("data", escape(f"{data.path} ({data.format or 'jsonl'})") if data.path else ""),
        ("evaluated on", escape(j.evaluation.data_path)),
        ("compression", escape(f"{j.compression.mode} -> {j.compression.target_version}, gate "
                               f"{j.compression.max_perplexity_increase:.2%}") if j.compression.mode else ""),
        ("method", spec.method), ("attempt", str(j.attempt) if j.attempt else ""),
        ("progress", progress_text(j.progress)),
        ("remaining", duration(j.progress.estimated_remaining)),
        ("metrics", job_metrics_text(j.metrics)),
        ("resources", f"CPU {r.cpu_percent:.0f}%, RSS {r.rss_mb:.0f} MB"
                      + (f", GPU {r.gpu_utilization:.0f}% {r.gpu_memory_mb:.0f} MB" if r.gpu_memory_mb else "")
         if r.rss_mb else ""),
        ("error", escape(j.error.message) if j.HasField("error") else ""),
        ("model version", j.result_model_version_id),
        ("result", escape(job_result_text(j))),
        ("created", time_text(j.create_time)), ("started", time_text(j.start_time)), ("ended", time_text(j.end_time)),
    ]
    for key, value in rows:
        if value:
            table.add_row(key, value)
    return table


# -- API keys and audit ---------------------------------------------------------------------------

def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def when(value: datetime | None) -> str:
    """A timestamp in UTC, to the second; empty for None."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def key_status(key: ApiKey, now: datetime) -> str:
    if key.revoke_time is not None:
        return "[red]revoked[/]"
    if key.expire_time is not None and key.expire_time <= now:
        return "[yellow]expired[/]"
    return "[green]active[/]"


def keys_table(keys: Sequence[ApiKey], now: datetime) -> Table:
    """Every field but the secret, which is not stored (only its hash is); descriptions are in
    `--json`. Times wrap under their date on an 80-column terminal."""
    table = Table(caption=f"{plural(len(keys), 'key')}; times in UTC", caption_justify="left", box=None,
                  padding=(0, 1), collapse_padding=True, pad_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("owner", overflow="fold")
    table.add_column("role", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for column in ("created", "expires", "last used", "revoked"):
        table.add_column(column, min_width=10)
    for k in keys:
        table.add_row(k.key_id, escape(k.owner), k.role, key_status(k, now), when(k.create_time),
                      when(k.expire_time) or "never", when(k.last_used_time), when(k.revoke_time))
    return table


def key_table(key: ApiKey) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, value in (("id", key.key_id), ("owner", escape(key.owner)), ("role", key.role),
                         ("created", when(key.create_time) + " UTC"),
                         ("expires", when(key.expire_time) + " UTC" if key.expire_time else "never"),
                         ("description", escape(key.description))):
        if value:
            table.add_row(label, value)
    return table


def audit_table(records: Sequence[AuditRecord]) -> Table:
    """One line per record (client address, request id and hashes are in `--json`)."""
    table = Table(caption=f"{plural(len(records), 'record')}; times in UTC", caption_justify="left", box=None,
                  padding=(0, 1), collapse_padding=True, pad_edge=False)
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("time", min_width=10)
    for column in ("key", "role"):
        table.add_column(column, no_wrap=True)
    for column in ("rpc", "resource"):
        table.add_column(column, overflow="fold")
    table.add_column("outcome", no_wrap=True)
    for r in records:
        outcome = escape(r.outcome) if r.outcome == "OK" else f"[red]{escape(r.outcome)}[/]"
        table.add_row(str(r.seq), when(r.time), escape(r.key_id), r.role, escape(r.rpc.rsplit("/", 1)[-1]),
                      escape(r.resource), outcome)
    return table
