"""EvaluateModel as a job of kind EVALUATION: `plan` checks the request and resolves the version
when the job is created (the API's side, nothing loaded); the worker materialises the version from
the verified store and runs this module (`python -m trainforge.core.jobs.evaluation`) as the job's
child process (`child_request` in, `result` out). Model loading and generation are CPU-heavy and
run for minutes: never on the server's event loop, never behind a gateway timeout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainforge.core.child_task import child_main
from trainforge.core.errors import FailedPrecondition, FieldViolation, InvalidArgument
from trainforge.core.paths import confine
from trainforge.core.registry.store import RegistryStore

MODULE = "trainforge.core.jobs.evaluation"
METRICS = ("accuracy", "f1_score", "perplexity", "bleu")


class ModelEvaluator:
    def __init__(self, registry: RegistryStore, data_root: Path):
        self.registry, self.data_root = registry, data_root

    async def plan(self, model_name: str, version: str, data_path: str, metrics: list[str], max_samples: int,
                   max_new_tokens: int, batch_size: int) -> dict[str, Any]:
        """The job's spec: every violation at once (INVALID_ARGUMENT), then NOT_FOUND for a missing
        model or version; the version an alias or "latest" names is fixed now."""
        violations = []
        if not model_name:
            violations.append(FieldViolation("model_name", "is required"))
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            violations.append(FieldViolation("metrics", f"unknown {unknown}; choose from {', '.join(METRICS)}"))
        for field, value, low, high in (("max_samples", max_samples, 0, 100_000),
                                        ("max_new_tokens", max_new_tokens, 0, 4096),
                                        ("batch_size", batch_size, 0, 256)):
            if not low <= value <= high:
                violations.append(FieldViolation(field, f"must be between {low} and {high}"))
        try:
            data = confine(self.data_root, data_path, "data_path", kind="file")
        except InvalidArgument as exc:
            violations += exc.violations
        if violations:
            raise InvalidArgument(violations)
        if not version:
            version = (await self.registry.get_model(model_name)).latest_version
            if not version:
                raise FailedPrecondition(f"model {model_name!r} has no versions to evaluate",
                                         metadata={"model": model_name})
        resolved = await self.registry.get_version(model_name, version)
        return {"model_name": resolved.name, "version": resolved.version,
                "data_path": str(data.relative_to(self.data_root.resolve())),
                "metrics": list(metrics) or list(METRICS), "max_samples": max_samples,
                "max_new_tokens": max_new_tokens or 64, "batch_size": batch_size or 8}

    def child_request(self, spec: dict[str, Any], model_dir: Path) -> dict[str, Any]:
        """What the child reads on stdin. The data path is confined again: the data root is this
        worker's, which need not be the API's."""
        data = confine(self.data_root, spec["data_path"], "data_path", kind="file")
        return {"model_dir": str(model_dir), "data_path": str(data), "metrics": spec["metrics"],
                "max_samples": spec["max_samples"] or None, "max_new_tokens": spec["max_new_tokens"],
                "batch_size": spec["batch_size"]}


def result(spec: dict[str, Any], reply: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The job's `evaluation_result` (EvaluationResult's fields)."""
    return {"model_name": spec["model_name"], "version": spec["version"],
            "metrics": {k: float(v) for k, v in reply.items() if k != "samples" and isinstance(v, (int, float))},
            "num_samples": int(reply.get("samples", 0)), "duration_seconds": seconds}


def _evaluate(request: dict[str, Any]) -> dict[str, Any]:
    from trainforge.core.training.evaluate import evaluate

    scores = evaluate(Path(request["model_dir"]), Path(request["data_path"]), request["metrics"],
                      request["max_samples"], request["max_new_tokens"], request["batch_size"])
    return {k: v for k, v in scores.items() if k != "predictions"}


if __name__ == "__main__":
    child_main(_evaluate)
