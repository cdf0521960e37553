"""What the worker and the training process agree on across the process boundary, defined once and
imported by both sides: the exit codes, how many processes a job runs as (its world size), and the
documents the process leaves in its output folder (`result.json` on success, pause or cancel;
`error.json` on failure).

Torch-free on purpose: the worker (and the server validating a spec) import it without the
training stack."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

# Exit codes of `python -m trainforge.core.training.entrypoint`.
EXIT_OK = 0  # succeeded, or stopped early
EXIT_FAILED = 1  # error.json says why
EXIT_PAUSED = 3  # a checkpoint was written; ResumeJob continues from it
EXIT_CANCELLED = 4  # stopped at a step boundary; the last checkpoint is kept
EXIT_RELEASED = 5  # the worker is shutting down: checkpointed, the job goes back to the queue

RESULT_FILE = "result.json"
ERROR_FILE = "error.json"

Status = Literal["succeeded", "early_stopped", "paused", "cancelled", "released"]
_EXIT_BY_STATUS = {"paused": EXIT_PAUSED, "cancelled": EXIT_CANCELLED, "released": EXIT_RELEASED}


def exit_code(status: str) -> int:
    """The exit code of a training run that ended with `status` (TrainResult.status)."""
    return _EXIT_BY_STATUS.get(status, EXIT_OK)


def _get(section: Any, key: str, default: Any = None) -> Any:
    if isinstance(section, Mapping):
        return section.get(key, default)
    return getattr(section, key, default)


def world_size(distributed: Any) -> int:
    """Processes a job runs as, from its `distributed` section (a mapping, the JobSpec dict, or the
    typed config.Distributed): 1 unless distributed training is enabled; then `world_size` when
    set, else one process per listed device. A hostfile job states its `world_size` (the hostfile
    only says where the processes run)."""
    if not distributed or not _get(distributed, "enabled", False):
        return 1
    explicit = int(_get(distributed, "world_size", 0) or 0)
    if explicit:
        return explicit
    return max(1, len(_get(distributed, "devices", None) or []))


def uses_hostfile(distributed: Any) -> bool:
    """True when the job's processes are placed by a hostfile (possibly on other machines)."""
    return bool(distributed) and bool(_get(distributed, "enabled", False)) and bool(_get(distributed, "hostfile", ""))


@dataclass
class TrainResult:
    """`result.json`: what a finished, paused or cancelled training run reports (rank 0 writes it)."""

    status: Status
    global_step: int
    epoch: int
    total_steps: int
    metrics: dict[str, float] = field(default_factory=dict)  # latest train and eval metrics
    model_dir: Path | None = None  # output_dir/model when training finished
    checkpoint_dir: Path | None = None  # the newest checkpoint written
    best_metric: float | None = None
    best_step: int | None = None
    dataset_sha256: str = ""
    parameter_count: int = 0
    trainable_parameters: int = 0
    world_size: int = 1  # processes that trained (ranks)
    losses: list[float] = field(default_factory=list)  # train loss of each step this run made
    eval_history: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("model_dir", "checkpoint_dir"):
            out[key] = str(out[key]) if out[key] else None
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TrainResult:
        """The inverse of to_json; keys this version does not know are ignored (a newer process)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        for key in ("model_dir", "checkpoint_dir"):
            values[key] = Path(values[key]) if values.get(key) else None
        return cls(**values)

    def write(self, output_dir: Path) -> None:
        _write_json(Path(output_dir) / RESULT_FILE, self.to_json())

    @classmethod
    def read(cls, output_dir: Path) -> TrainResult:
        return cls.from_json(json.loads((Path(output_dir) / RESULT_FILE).read_text()))


@dataclass
class TrainError:
    """`error.json`: why a training run failed (rank 0 writes it; every rank prints it on stderr)."""

    error: str  # the exception's type name
    message: str
    reason: str = "INTERNAL"
    rank: int = 0
    violations: list[dict[str, str]] = field(default_factory=list)  # {"field", "description"}

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if not self.violations:
            del out["violations"]
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TrainError:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known and v is not None})

    def write(self, output_dir: Path) -> None:
        _write_json(Path(output_dir) / ERROR_FILE, self.to_json())

    @classmethod
    def read(cls, output_dir: Path) -> TrainError | None:
        """The error the process left, or None when it left none (or an unreadable one)."""
        try:
            return cls.from_json(json.loads((Path(output_dir) / ERROR_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Written beside and renamed: a reader never sees half a document."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    tmp.replace(path)
