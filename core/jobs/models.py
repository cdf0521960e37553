"""Job domain objects and the state machine's vocabulary.

States (docs/training.md draws the machine): PENDING -> QUEUED -> RUNNING -> SUCCEEDED | FAILED |
PAUSED; cancel moves PENDING, QUEUED and PAUSED jobs to CANCELLED at once, and a RUNNING job to
CANCELLING, from which its worker (or, once the worker's lease expired, whoever claims next) moves
it to CANCELLED."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

PENDING, QUEUED, RUNNING, CANCELLING, PAUSED = "PENDING", "QUEUED", "RUNNING", "CANCELLING", "PAUSED"
SUCCEEDED, FAILED, CANCELLED = "SUCCEEDED", "FAILED", "CANCELLED"
STATES = (PENDING, QUEUED, RUNNING, CANCELLING, PAUSED, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
# States in which a worker holds the job under a lease.
LEASED = (RUNNING, CANCELLING)

# What a job runs (JobKind without its prefix): one durable queue for all long work.
TRAINING, EVALUATION, COMPRESSION, DEPLOYMENT = "TRAINING", "EVALUATION", "COMPRESSION", "DEPLOYMENT"
KINDS = (TRAINING, EVALUATION, COMPRESSION, DEPLOYMENT)

# Event types (JobEventType without its prefix).
STATE_CHANGED, PROGRESS, EVALUATION, CHECKPOINT, LOG, ERROR = (
    "STATE_CHANGED", "PROGRESS", "EVALUATION", "CHECKPOINT", "LOG", "ERROR")


@dataclass(frozen=True)
class Job:
    job_id: str
    name: str
    spec: dict[str, Any]
    state: str
    kind: str
    owner_key_id: str
    progress: dict[str, Any]
    metrics: dict[str, Any]
    resources: dict[str, Any]
    error: dict[str, Any] | None
    result_model_version_id: str
    attempt: int
    worker_id: str
    cancel_requested: bool
    pause_requested: bool
    last_checkpoint: str
    create_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    # A finished job's typed result: an evaluation's metrics, a compression's report; {} otherwise.
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True)
class JobEvent:
    job_id: str
    sequence: int
    type: str
    state: str
    message: str
    progress: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    create_time: datetime | None = None


@dataclass(frozen=True)
class Checkpoint:
    job_id: str
    step: int
    epoch: int
    path: str
    size_bytes: int
    metrics: dict[str, float]
    is_best: bool
    create_time: datetime


@dataclass(frozen=True)
class Statistics:
    total_jobs: int
    jobs_by_state: dict[str, int]
    success_rate: float
    average_training_seconds: float
    p50_training_seconds: float
