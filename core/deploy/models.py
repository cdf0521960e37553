"""Deployment records and the vocabulary of their lifecycle.

PENDING (accepted, its job queued) -> DEPLOYING (the job verifies, exports, ships, checks health)
-> HEALTHY (live: the alias points at this version) | FAILED (never went live; the previous
deployment kept serving). A live deployment becomes SUPERSEDED when a newer one goes live,
ROLLED_BACK when RollbackDeployment brings back the one it replaced, UNDEPLOYED when taken down,
and UNHEALTHY (still live) when a later health check fails."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

PENDING, DEPLOYING, HEALTHY, UNHEALTHY = "PENDING", "DEPLOYING", "HEALTHY", "UNHEALTHY"
FAILED, ROLLED_BACK, SUPERSEDED, UNDEPLOYED = "FAILED", "ROLLED_BACK", "SUPERSEDED", "UNDEPLOYED"
STATES = (PENDING, DEPLOYING, HEALTHY, UNHEALTHY, FAILED, ROLLED_BACK, SUPERSEDED, UNDEPLOYED)
# The one deployment per model, target and alias that users get (a unique index holds it).
LIVE = (HEALTHY, UNHEALTHY)
# Not finished yet: a job still works on it.
IN_PROGRESS = (PENDING, DEPLOYING)

LOCAL, OLLAMA, HUGGINGFACE, CLOUD = "local", "ollama", "huggingface", "cloud"
TARGETS = (LOCAL, OLLAMA, HUGGINGFACE, CLOUD)
# Local serving engines: llama.cpp on the exported GGUF (CPU default), transformers (int8 kernels on CUDA).
LLAMA_CPP, TRANSFORMERS = "llama_cpp", "transformers"
ENGINES = (LLAMA_CPP, TRANSFORMERS)

DEFAULT_ALIAS = "production"
DEFAULT_HEALTH_CHECK_TIMEOUT_MS = 30_000
# A health check is a real generation; on 2 CPU cores a cold 135M model answers in ~1 s, so below
# 1 s a check would fail healthy servers. Ten minutes is more than any load should take.
MIN_HEALTH_CHECK_TIMEOUT_MS, MAX_HEALTH_CHECK_TIMEOUT_MS = 1_000, 600_000

# NOTIFY channel: a local deployment's wanted state changed (the serving supervisor reconciles).
SERVING_CHANNEL = "trainforge_serving"


def serving_path(model_name: str, alias: str) -> str:
    """The stable path prefix of a model's alias through the gateway."""
    return f"/api/serving/{model_name}/{alias}/v1"


@dataclass(frozen=True)
class Deployment:
    deployment_id: str
    model_version_id: str
    model_id: str
    model_name: str
    version: str
    target: str
    alias: str
    engine: str
    endpoint: str
    state: str
    auto_rollback: bool
    health_check_enabled: bool
    health_check_timeout_ms: int
    deployment_tags: tuple[str, ...]
    previous_deployment_id: str
    error: dict[str, Any] | None
    job_id: str
    owner_key_id: str
    # What the target returned from shipping (rollback's input); never a secret.
    details: dict[str, Any]
    # Local target: {artifact, engine, host, port, pid, ready, routed}.
    serving: dict[str, Any]
    last_health: dict[str, Any] | None
    create_time: datetime
    update_time: datetime

    @property
    def live(self) -> bool:
        return self.state in LIVE

    @property
    def serving_path(self) -> str:
        return serving_path(self.model_name, self.alias) if self.target == LOCAL else ""
