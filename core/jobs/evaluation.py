"""EvaluateModel: a registered version, materialised from the verified store, scored on a dataset
under the data root. Runs in a child process: model loading and generation are CPU-heavy and
must not stall the server's event loop or hold its GIL."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from trainforge.core.errors import FieldViolation, InvalidArgument, Unavailable
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
        result = await _run_child(request, self.timeout_seconds)
        samples = int(result.pop("samples", 0))
        return {"model_name": model_name, "version": resolved.version,
                "metrics": {k: float(v) for k, v in result.items() if isinstance(v, (int, float))},
                "num_samples": samples, "duration_seconds": time.monotonic() - started}


async def _run_child(request: dict[str, Any], timeout: float) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "trainforge.core.jobs.evaluation", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(json.dumps(request).encode()), timeout)
    except TimeoutError:
        process.kill()
        raise Unavailable(f"evaluation took longer than {timeout:.0f} s") from None
    lines = out.decode().strip().splitlines()
    reply = json.loads(lines[-1]) if lines else {}
    if process.returncode != 0 or "error" in reply:
        error = reply.get("error") or err.decode(errors="replace").strip().splitlines()[-1:]
        if reply.get("violations"):
            raise InvalidArgument([FieldViolation(v["field"], v["description"]) for v in reply["violations"]])
        raise Unavailable(f"evaluation failed: {error}")
    return reply["result"]


def _main() -> None:
    from trainforge.core.training.evaluate import evaluate

    request = json.loads(sys.stdin.read())
    try:
        result = evaluate(Path(request["model_dir"]), Path(request["data_path"]), request["metrics"],
                          request["max_samples"], request["max_new_tokens"], request["batch_size"])
        print(json.dumps({"result": {k: v for k, v in result.items() if k != "predictions"}}))
    except InvalidArgument as exc:
        print(json.dumps({"error": exc.message, "violations": [
            {"field": v.field, "description": v.description} for v in exc.violations]}))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one JSON line
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        sys.exit(1)


if __name__ == "__main__":
    _main()
