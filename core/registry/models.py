"""Registry domain objects. Stores return these, never rows or cursors."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MODEL_TYPES = ("pretrained", "fine_tuned", "compressed", "custom")



def split_registry_ref(ref: str) -> tuple[str, str]:
    """`name@alias` or `name:version` -> (name, alias or version); names may hold `/` and `:`
    before the last separator, so the last `@` (else the last `:`) splits."""
    name, _, selector = ref.rpartition("@") if "@" in ref else ref.rpartition(":")
    return name, selector

@dataclass(frozen=True)
class Architecture:
    model_family: str = ""
    layers: int = 0
    hidden_size: int = 0
    attention_heads: int = 0
    vocab_size: int = 0
    max_sequence_length: int = 0


@dataclass(frozen=True)
class Lineage:
    base_model: str = ""
    dataset_digest: str = ""
    job_id: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    parent_model_version_id: str = ""


@dataclass(frozen=True)
class NewVersion:
    """What a caller asks to register; validated by validation.check_new_version."""

    name: str
    version: str
    description: str = ""
    model_type: str = ""
    size_mb: float = 0.0
    parameter_count: int = 0
    architecture: Architecture = field(default_factory=Architecture)
    performance_metrics: dict[str, float] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    lineage: Lineage = field(default_factory=Lineage)
    source: str = ""
    changelog: str = ""


@dataclass(frozen=True)
class ModelVersion:
    model_version_id: str
    model_id: str
    name: str
    version: str
    description: str
    model_type: str
    size_mb: float
    parameter_count: int
    architecture: Architecture
    performance_metrics: dict[str, float]
    tags: tuple[str, ...]
    lineage: Lineage
    source: str
    changelog: str
    aliases: tuple[str, ...]
    manifest_digest: str
    artifact_count: int
    artifact_bytes: int
    deployed: bool
    create_time: datetime
    update_time: datetime
    etag: str


@dataclass(frozen=True)
class Model:
    model_id: str
    name: str
    description: str
    tags: tuple[str, ...]
    aliases: dict[str, str]
    latest_version: str
    version_count: int
    latest: ModelVersion | None
    create_time: datetime
    update_time: datetime
    etag: str


@dataclass(frozen=True)
class ArtifactFile:
    path: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    model_version_id: str
    manifest_digest: str
    files: tuple[ArtifactFile, ...]
    total_bytes: int


@dataclass(frozen=True)
class Page:
    """One page of a listing."""

    items: tuple
    next_page_token: str
    total_size: int


@dataclass(frozen=True)
class UsageStats:
    model_version_id: str
    request_count: int
    error_count: int
    error_rate: float
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    tokens_generated: int
    first_request_time: datetime | None
    last_request_time: datetime | None


@dataclass(frozen=True)
class HistoryEntry:
    model_version_id: str
    version: str
    changelog: str
    performance_metrics: dict[str, float]
    metric_deltas: dict[str, float]
    previous_version: str
    create_time: datetime


@dataclass(frozen=True)
class History:
    model_id: str
    name: str
    entries: tuple[HistoryEntry, ...]


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    values: tuple[float, ...]
    deltas: tuple[float, ...]
    best_model_version_id: str


@dataclass(frozen=True)
class Comparison:
    versions: tuple[ModelVersion, ...]
    metrics: tuple[MetricComparison, ...]


@dataclass(frozen=True)
class Verification:
    model_version_id: str
    ok: bool
    manifest_digest: str
    files_checked: int
    mismatched: tuple[str, ...]
    missing: tuple[str, ...]


@dataclass(frozen=True)
class RegistryHealth:
    status: str
    database_ok: bool
    database_latency_ms: float
    model_count: int
    version_count: int
    artifact_bytes: int
    artifact_store_ok: bool
