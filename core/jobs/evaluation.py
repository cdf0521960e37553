"""EvaluateModel: a registered version, materialised from the verified store, scored on a dataset
under the data root. Runs in a child process: model loading and generation are CPU-heavy and
must not stall the server's event loop or hold its GIL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from trainforge.core.child_task import child_main, run_in_child
from trainforge.core.errors import FieldViolation, InvalidArgument
from trainforge.core.paths import confine
from trainforge.core.registry.store import RegistryStore

METRICS = ("accuracy", "f1_score", "perplexity", "bleu")


class ModelEvaluator:
    def __init__(self, registry: RegistryStore, data_root: Path, cache_root: Path, timeout_seconds: float = 3600):
        self.registry, self.data_root, self.cache_root = registry, data_root, cache_root
        self.timeout_seconds = timeout_seconds

    async def evaluate(self, model_name: str, version: str, data_path: str, metrics: list[str], max_samples: int,
                       max_new_tokens: int, batch_size: int) -> dict[str, Any]:
        violations = []
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
        resolved = await self.registry.get_version(model_name, version)
        folder = await self.registry.materialize(model_name, resolved.version, self.cache_root)
        request = {"model_dir": str(folder), "data_path": str(data), "metrics": metrics or list(METRICS),
                   "max_samples": max_samples or None, "max_new_tokens": max_new_tokens or 64,
                   "batch_size": batch_size or 8}
        started = time.monotonic()
        result = await run_in_child("trainforge.core.jobs.evaluation", request, self.timeout_seconds, "evaluation")
        samples = int(result.pop("samples", 0))
        return {"model_name": model_name, "version": resolved.version,
                "metrics": {k: float(v) for k, v in result.items() if isinstance(v, (int, float))},
                "num_samples": samples, "duration_seconds": time.monotonic() - started}


def _evaluate(request: dict[str, Any]) -> dict[str, Any]:
    from trainforge.core.training.evaluate import evaluate

    result = evaluate(Path(request["model_dir"]), Path(request["data_path"]), request["metrics"],
                      request["max_samples"], request["max_new_tokens"], request["batch_size"])
    return {k: v for k, v in result.items() if k != "predictions"}


if __name__ == "__main__":
    child_main(_evaluate)
