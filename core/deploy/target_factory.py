"""Builds a deploy target from the server settings, and checks up front that a deployment to it
can work (every problem at once, each naming the setting or environment variable to fix)."""

from __future__ import annotations

from typing import Any

from trainforge.core.deploy import models as d
from trainforge.core.deploy.targets.base import DeployTarget
from trainforge.core.errors import FieldViolation


def target_config(settings: Any) -> dict[str, Any]:
    """The settings the remote targets read, as plain JSON (it crosses into the job's child)."""
    return {"ollama_host": settings.ollama_host, "huggingface_endpoint": settings.huggingface_endpoint,
            "huggingface_namespace": settings.huggingface_namespace, "s3_endpoint": settings.s3_endpoint,
            "s3_bucket": settings.s3_bucket, "s3_prefix": settings.s3_prefix, "s3_region": settings.s3_region}


def build_target(name: str, config: dict[str, Any]) -> DeployTarget:
    """A remote target (`ollama`, `huggingface`, `cloud`). The local target is the serving
    supervisor's (core.serving.supervisor), not one of these."""
    if name == d.OLLAMA:
        from trainforge.core.deploy.targets.ollama import OllamaTarget

        return OllamaTarget(config["ollama_host"])
    if name == d.HUGGINGFACE:
        from trainforge.core.deploy.targets.huggingface import HuggingFaceTarget

        return HuggingFaceTarget(config["huggingface_endpoint"], config["huggingface_namespace"])
    if name == d.CLOUD:
        from trainforge.core.deploy.targets.s3 import S3Target

        return S3Target(config["s3_endpoint"], config["s3_bucket"], config["s3_prefix"], config["s3_region"])
    raise ValueError(f"no remote target {name!r}")


def check_target(target: str, engine: str, config: dict[str, Any]) -> list[FieldViolation]:
    """What stops a deployment to `target` before anything is queued."""
    if target not in d.TARGETS:
        return [FieldViolation("target", f"unknown target {target!r}; one of {', '.join(d.TARGETS)}")]
    problems: list[FieldViolation] = []
    if engine and target != d.LOCAL:
        problems.append(FieldViolation("engine", f"applies to the local target only, not {target!r}"))
    if target == d.LOCAL:
        if engine and engine not in d.ENGINES:
            problems.append(FieldViolation("engine", f"unknown engine {engine!r}; one of {', '.join(d.ENGINES)}"))
        return problems
    return problems + list(build_target(target, config).validate())
