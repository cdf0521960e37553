"""The contract every deploy target implements, and the documents that cross the job's process
boundary (plain dataclasses that serialise to JSON).

A deploy job calls, in order: `validate()` (before anything is queued), `ship()` (upload and verify
at the destination; nothing an alias points at changes), `health()` (a real generation or read-back
within the budget), `point_alias()` (the one step that makes the new version what users get,
atomic at the destination). Rollback calls `restore_alias()` with the details a previous `ship()`
returned; undeploy calls `remove()`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from trainforge.core.errors import FieldViolation

# progress(message, fraction in [0, 1]) -> None; fraction may be None for a message without one.
Progress = Callable[[str, "float | None"], None]


@dataclass(frozen=True)
class ShipRequest:
    """What a target needs to ship one version. `model_dir` is the registry's verified folder
    (config.json, *.safetensors, tokenizer files, generation_config.json when present);
    `gguf_path` the exported GGUF (targets that serve GGUF); `card` the model-card facts:
    base_model, datasets, metrics (name -> value), tags, lineage (a dict), description."""

    deployment_id: str
    model_name: str
    version: str
    model_version_id: str
    alias: str
    model_dir: Path
    gguf_path: Path | None = None
    card: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["model_dir"] = str(self.model_dir)
        d["gguf_path"] = str(self.gguf_path) if self.gguf_path else None
        return d

    @classmethod
    def from_json(cls, d: dict) -> ShipRequest:
        return cls(**{**d, "model_dir": Path(d["model_dir"]),
                      "gguf_path": Path(d["gguf_path"]) if d.get("gguf_path") else None})


@dataclass(frozen=True)
class ShipResult:
    """Where the version now is (`endpoint`, shown to users) and what rollback and undeploy need
    later (`details`: JSON-able, stored on the deployment record, never a secret)."""

    endpoint: str
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class HealthResult:
    healthy: bool
    detail: str
    latency_ms: float


class DeployTarget(Protocol):
    """One destination kind: `local`, `ollama`, `huggingface` or `cloud`."""

    name: str

    def validate(self) -> list[FieldViolation]:
        """Every configuration problem at once (missing host, token, bucket), each naming the setting
        or environment variable; no network call."""

    def ship(self, request: ShipRequest, progress: Progress) -> ShipResult:
        """Uploads the version and verifies it at the destination (checksums read back). Raises
        trainforge.core.errors.Unavailable naming the host when the destination cannot be reached,
        DataLoss when what arrived differs from what was sent. Moves no alias."""

    def health(self, result: ShipResult, timeout_s: float) -> HealthResult:
        """A real check within `timeout_s`: a generation where the target serves, a read-back of the
        objects where it stores."""

    def point_alias(self, request: ShipRequest, result: ShipResult) -> None:
        """Makes `request.alias` of the model resolve to this version at the destination, atomically."""

    def restore_alias(self, model_name: str, alias: str, previous: ShipResult) -> None:
        """Points the alias back at a previously shipped version (rollback)."""

    def remove(self, model_name: str, alias: str, result: ShipResult) -> None:
        """Removes what `ship` left at the destination (undeploy); an alias pointing at it is removed too."""


def error_cause(err: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of `kinds` in err's chain: client libraries re-raise transport errors
    wrapped (huggingface_hub's uploads in RuntimeError, s3transfer's ClientError)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, kinds):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
