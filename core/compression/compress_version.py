"""CompressModel as a job of kind COMPRESSION: a registry version, materialised from the verified
store, compressed to int8 in the job's child process and registered as a new `compressed` version
of the same model, if the perplexity gate passes (or the caller forces it).

`plan` checks the request when the job is created (the API's side: registry lookups only, nothing
loaded). The worker then calls `adopt` (a version an earlier attempt of the job registered before
its worker died), `child_request`, runs this module (`python -m
trainforge.core.compression.compress_version`) under its supervision, and `register`s the reply.
The child process keeps model loading, quantization and scoring (CPU-heavy, seconds to minutes)
out of the worker's event loop and GIL, as core.jobs.evaluation does for EvaluateModel."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainforge.core.child_task import child_main
from trainforge.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from trainforge.core.paths import confine
from trainforge.core.registry.models import Lineage, ModelVersion, NewVersion
from trainforge.core.registry.store import RegistryStore
from trainforge.core.registry.validation import VERSION_RE
from trainforge.core.training.model_loading import int8_checkpoint_method

MODULE = "trainforge.core.compression.compress_version"
COMPRESSION_TYPES = ("quantization",)
PRECISIONS = ("int8",)
MODES = ("w8a8_dynamic", "w8a16")  # trainforge.kernels.MODES; not imported: the server must not load torch
DEFAULT_MODE = "w8a8_dynamic"
DEFAULT_MAX_PERPLEXITY_INCREASE = 0.02


@dataclass(frozen=True)
class CompressRequest:
    """CompressModel's fields; empty strings and None mean "the default"."""

    model_id: str
    version: str = ""
    compression_type: str = ""
    precision: str = ""
    mode: str = ""
    max_perplexity_increase: float | None = None
    force: bool = False
    target_version: str = ""


def check_request(req: CompressRequest) -> None:
    """Every violation at once, before anything is loaded."""
    v: list[FieldViolation] = []
    if not req.model_id:
        v.append(FieldViolation("model_id", "is required"))
    if req.compression_type not in COMPRESSION_TYPES:
        v.append(FieldViolation("compression_type", f"{req.compression_type or '(empty)'!r} is not supported; "
                                                    f"choose from {', '.join(COMPRESSION_TYPES)}"))
    if req.precision not in PRECISIONS:
        v.append(FieldViolation("precision", f"{req.precision or '(empty)'!r} is not supported; "
                                             f"choose from {', '.join(PRECISIONS)}"))
    if req.mode and req.mode not in MODES:
        v.append(FieldViolation("mode", f"{req.mode!r} is not a mode; choose from {', '.join(MODES)}"))
    gate = req.max_perplexity_increase
    if gate is not None and not (math.isfinite(gate) and 0 < gate <= 1):
        v.append(FieldViolation("max_perplexity_increase", f"must be in (0, 1] (a fraction: 0.02 is 2%), got {gate}"))
    if req.target_version and not VERSION_RE.match(req.target_version):
        v.append(FieldViolation("target_version", "must be 1-64 characters of letters, digits and ._-+, "
                                                  "starting with a letter or digit"))
    if v:
        raise InvalidArgument(v)


class VersionCompressor:
    def __init__(self, registry: RegistryStore, data_root: Path):
        """`data_root`: the only place evaluation data is read from."""
        self.registry, self.data_root = registry, data_root

    async def plan(self, req: CompressRequest) -> dict[str, Any]:
        """The job's spec (CompressionSpec's fields), or the error to answer at once: every field
        violation, NOT_FOUND, ALREADY_COMPRESSED, or ALREADY_EXISTS for a taken target version."""
        check_request(req)
        version = req.version or (await self.registry.get_model(req.model_id)).latest_version
        if not version:
            raise FailedPrecondition(f"model {req.model_id!r} has no versions to compress",
                                     metadata={"model": req.model_id})
        source = await self.registry.get_version(req.model_id, version)
        if source.model_type == "compressed":
            raise FailedPrecondition(f"version {source.version!r} of {source.name!r} is already compressed; "
                                     "compress its parent instead", reason="ALREADY_COMPRESSED",
                                     metadata={"model": source.name, "version": source.version})
        target = req.target_version or f"{source.version}-int8"
        if not VERSION_RE.match(target):
            raise InvalidArgument.one("target_version", f"the default {target!r} is not a valid version string "
                                                        "(1-64 characters); pass target_version")
        await self._refuse_existing(source.name, target)
        gate = DEFAULT_MAX_PERPLEXITY_INCREASE if req.max_perplexity_increase is None else req.max_perplexity_increase
        return {"model_name": source.name, "version": source.version,
                "source_model_version_id": source.model_version_id, "compression_type": req.compression_type,
                "precision": req.precision, "mode": req.mode or DEFAULT_MODE, "max_perplexity_increase": gate,
                "force": req.force, "target_version": target}

    async def adopt(self, spec: dict[str, Any], job_id: str) -> ModelVersion | None:
        """The target version when this job registered it already (an attempt whose worker died
        after registering): a job never registers two versions, nor compresses twice."""
        try:
            version = await self.registry.get_version(spec["model_name"], spec["target_version"])
        except NotFound:
            return None
        return version if version.lineage.job_id == job_id else None

    async def child_request(self, spec: dict[str, Any], folder: Path, output: Path) -> dict[str, Any]:
        """What the child reads on stdin; `folder` is the materialised source."""
        source = await self.registry.get_version(spec["model_name"], spec["version"])
        if int8_checkpoint_method(folder) is not None:
            raise FailedPrecondition(f"version {source.version!r} of {source.name!r} holds a quantized checkpoint",
                                     reason="ALREADY_COMPRESSED",
                                     metadata={"model": source.name, "version": source.version})
        return {"source_dir": str(folder), "output_dir": str(output), "mode": spec["mode"],
                "max_perplexity_increase": spec["max_perplexity_increase"], **_eval_data(source, self.data_root)}

    async def register(self, spec: dict[str, Any], result: dict[str, Any], job_id: str, output: Path) -> ModelVersion:
        """Applies the gate to the child's result and registers the int8 folder (lineage names the
        job, for `adopt`). Raises FAILED_PRECONDITION PERPLEXITY_GATE_FAILED, registering nothing."""
        source = await self.registry.get_version(spec["model_name"], spec["version"])
        mode, gate = spec["mode"], spec["max_perplexity_increase"]
        metrics = {k: float(v) for k, v in result["metrics"].items()}
        if not result["gate_passed"] and not spec["force"]:
            raise _gate_failure(source, mode, gate, metrics)
        new = NewVersion(
            name=source.name, version=spec["target_version"],
            description=f"int8 ({mode}) compression of {source.name}:{source.version}",
            model_type="compressed", parameter_count=int(result["parameter_count"]),
            architecture=source.architecture, performance_metrics=metrics, tags=source.tags,
            lineage=Lineage(base_model=f"{source.name}:{source.version}", job_id=job_id,
                            parent_model_version_id=source.model_version_id,
                            config={"compression": _compression_record(result, spec["force"], self.data_root)}),
            changelog=_changelog(source, mode, metrics, gate, result["gate_passed"]))
        try:
            return await self.registry.register(new, artifacts_dir=output)
        except AlreadyExists:
            adopted = await self.adopt(spec, job_id)
            if adopted is None:
                raise
            return adopted

    async def _refuse_existing(self, name: str, target: str) -> None:
        """Fail before minutes of work rather than at register (which still enforces uniqueness)."""
        try:
            await self.registry.get_version(name, target)
        except NotFound:
            return
        raise AlreadyExists(f"model {name!r} already has a version {target!r}; pass another target_version",
                            metadata={"model": name, "version": target})


def job_result(version: ModelVersion) -> dict[str, Any]:
    """The job's `compression_result` (CompressionResult's fields), read from the registered
    version so that an adopted version reports the same as a fresh one."""
    record = (version.lineage.config or {}).get("compression") or {}
    return {"model_version_id": version.model_version_id, "model_name": version.name, "version": version.version,
            "metrics": dict(version.performance_metrics), "gate_passed": bool(record.get("gate_passed")),
            "format": str(record.get("format", "")), "source_size_bytes": int(record.get("source_size_bytes", 0)),
            "size_bytes": int(record.get("size_bytes", 0)), "eval_data": str(record.get("eval_data", ""))}


def _eval_data(source: ModelVersion, data_root: Path) -> dict[str, Any]:
    """The source's validation data when its lineage names a data file that still exists under
    the data root (a job-trained version), with the split training used; otherwise none (the
    built-in text). Lineage is user-writable through RegisterModel, hence the confinement."""
    config = source.lineage.config or {}
    path = (config.get("resolved") or {}).get("data_path")
    try:
        path = str(confine(data_root, str(path or ""), "lineage.config.resolved.data_path", kind="file"))
    except InvalidArgument:
        return {"eval_data_path": None}
    data = config.get("training_data") or {}
    hyper = config.get("hyperparameters") or {}
    return {"eval_data_path": path, "data_format": data.get("format"),
            "validation_split": float(data.get("validation_split") or 0.0), "seed": int(hyper.get("seed", 42))}


def _gate_failure(source: ModelVersion, mode: str, gate: float, metrics: dict[str, float]) -> FailedPrecondition:
    increase = metrics["perplexity_increase"]
    return FailedPrecondition(
        f"int8 ({mode}) compression of {source.name}:{source.version} raised perplexity from "
        f"{metrics['perplexity_source']:.4f} to {metrics['perplexity']:.4f}, a relative increase of {increase:.4g} "
        f"({increase:+.2%}) over the allowed {gate:.4g}; nothing was registered (set force to register it anyway)",
        reason="PERPLEXITY_GATE_FAILED",
        metadata={"model": source.name, "version": source.version, "mode": mode,
                  # repr: the exact measured floats, for clients that compare them
                  "perplexity": repr(metrics["perplexity"]), "perplexity_source": repr(metrics["perplexity_source"]),
                  "perplexity_increase": repr(increase), "max_perplexity_increase": repr(gate)})


def _compression_record(result: dict[str, Any], forced: bool, data_root: Path) -> dict[str, Any]:
    """What lineage.config.compression keeps. Data files are named relative to the data root, as
    users name them: the server's own directories are not the registry readers' business."""
    keys = ("mode", "format", "dtype", "skip", "max_perplexity_increase", "gate_passed", "eval_data", "eval_samples",
            "source_size_bytes", "size_bytes", "seconds")
    record = {"type": "quantization", "precision": "int8", "forced": forced, **{k: result[k] for k in keys}}
    # smoothing: {method, alpha, mappings, kinds, refused, calibration_tokens, calibration_data}, or None (w8a16)
    smoothing = dict(result["smoothing"]) if result.get("smoothing") else None
    root = str(Path(data_root).resolve()) + "/"
    record["eval_data"] = str(record["eval_data"]).replace(root, "")
    if smoothing and isinstance(smoothing.get("calibration_data"), str):
        smoothing["calibration_data"] = smoothing["calibration_data"].replace(root, "")
    return {**record, "smoothing": smoothing}


def _changelog(source: ModelVersion, mode: str, metrics: dict[str, float], gate: float, passed: bool) -> str:
    verdict = "within" if passed else "over (forced)"
    return (f"int8 {mode} of {source.version}: perplexity {metrics['perplexity_source']:.4f} -> "
            f"{metrics['perplexity']:.4f} ({metrics['perplexity_increase']:+.2%}, {verdict} the {gate:.2%} gate)")


def _compress(request: dict[str, Any]) -> dict[str, Any]:
    from trainforge.core.compression.compress import compress

    started = time.monotonic()
    result = compress(Path(request["source_dir"]), Path(request["output_dir"]), request["mode"],
                      Path(request["eval_data_path"]) if request.get("eval_data_path") else None,
                      request["max_perplexity_increase"], data_format=request.get("data_format"),
                      validation_split=request.get("validation_split", 0.0), seed=request.get("seed", 42))
    return {**result.to_dict(), "child_seconds": time.monotonic() - started}


if __name__ == "__main__":
    child_main(_compress)
