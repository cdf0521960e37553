"""Server settings: the defaults below (configs/server.yaml spells them out, and a test keeps the
two equal), then a user file, then TRAINFORGE_* environment variables. Validated up front; every
problem is reported at once."""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from trainforge.core.errors import FieldViolation, InvalidArgument

DEFAULT_DATA_DIR = "~/.local/share/trainforge"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class TlsFiles:
    """The server's certificate chain and key (PEM), and the CA its clients' certificates must be
    signed by when clients must present one (mutual TLS)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


def _tls_path(value: str, info: ValidationInfo) -> Path:
    path = Path(os.path.expanduser(value))
    data_dir = info.data.get("data_dir") or Path(os.path.expanduser(DEFAULT_DATA_DIR))
    return path if path.is_absolute() else data_dir / path


def _readable(path: Path) -> str:
    """'' when `path` is a readable file, else what is wrong with it."""
    if not path.is_file():
        return f"{path} does not exist or is not a file"
    try:
        path.read_bytes()
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror}"
    return ""


def _certificate_problem(path: Path) -> str:
    """'' when `path` is a readable PEM certificate (or bundle), else what is wrong with it."""
    problem = _readable(path)
    if not problem:
        try:
            ssl.create_default_context(cafile=str(path))
        except ssl.SSLError as exc:
            problem = f"{path} is not a PEM certificate ({exc.reason or exc})"
    return problem


def _no_password() -> bytes:
    return b""  # an encrypted key then fails to load, rather than OpenSSL asking on the terminal


class Settings(BaseModel):
    """Everything a trainforge process needs to know about where it runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = Path(os.path.expanduser(DEFAULT_DATA_DIR))
    database_url: str = ""
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(50051, ge=0, le=65535)
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    envoy_admin_port: int = Field(9901, ge=0, le=65535)
    metrics_port: int = Field(9464, ge=0, le=65535)
    models_root: Path = Path("models")
    data_root: Path = Path("training-data")
    artifacts_root: Path = Path("artifacts")
    # Files a job spec may name besides its data: `distributed.hostfile` is read from under here.
    configs_root: Path = Path("configs")
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=64 * 1024, le=1024 * 1024 * 1024)
    db_pool_min: int = Field(2, ge=1, le=64)
    db_pool_max: int = Field(16, ge=1, le=512)
    log_level: str = "INFO"
    # Off only on purpose, and then every listener must be on loopback (checked below).
    auth_enabled: bool = True
    # Queued or running jobs one API key may have at once.
    max_active_jobs_per_key: int = Field(4, ge=0, le=10_000)
    # Largest training data file a job may read: 10 GiB.
    max_dataset_bytes: int = Field(10 * 2**30, ge=1)
    # In-process training workers started by `trainforge serve` (0: run `trainforge worker` elsewhere).
    workers: int = Field(1, ge=0, le=64)
    # A job whose worker has not renewed its lease for this long is claimed by another worker.
    job_lease_seconds: float = Field(30.0, gt=0)
    # On shutdown (Ctrl-C, SIGTERM) a worker asks each running job to checkpoint at its next step
    # boundary and waits this long before stopping it; the job then goes back to the queue and the
    # next worker resumes from that checkpoint. 0: stop at once (resume from the last periodic one).
    job_stop_checkpoint_seconds: float = Field(60.0, ge=0, le=3600)
    # gRPC server processes behind the gateway (server.api_processes): one serves on one core.
    api_processes: int = Field(1, ge=1, le=256)
    # The most jobs of each kind running at once, across every worker on this database (0: no
    # limit beyond the number of workers). Compression holds two copies of a model in memory.
    max_running_training_jobs: int = Field(0, ge=0, le=10_000)
    max_running_evaluation_jobs: int = Field(2, ge=0, le=10_000)
    max_running_compression_jobs: int = Field(1, ge=0, le=10_000)
    # Deployments export GGUF files and upload them; a few at once keep disks and links busy enough.
    max_running_deployment_jobs: int = Field(2, ge=0, le=10_000)
    # GPUs this process's workers hand out, one set per job (core.jobs.devices): "auto" reads
    # CUDA_VISIBLE_DEVICES, else counts the GPUs through NVML; "none" runs every job on the CPU;
    # or a list such as "0,1,2,3".
    gpus: str = Field("auto", pattern=r"^(auto|none|[A-Za-z0-9:_-]+(,[A-Za-z0-9:_-]+)*)$")
    # TLS on the REST gateway's listener and the gRPC port: a PEM certificate chain and its key
    # (both or neither; relative paths are under data_dir). Empty: plaintext.
    tls_cert_file: str = Field("", validate_default=True)
    tls_key_file: str = Field("", validate_default=True)
    # With a CA file, clients must present a certificate it signed (mutual TLS).
    tls_client_ca_file: str = Field("", validate_default=True)
    # Backups `serve` takes on its own (pg_dump plus referenced artifacts, trainforge.core.backup):
    # every this many hours; 0 switches them off.
    backup_interval_hours: float = Field(0.0, ge=0.0, le=24 * 366)
    # Where they are written; a relative path is under data_dir.
    backup_dir: Path = Path("backups")
    # How many to keep: after each backup the older ones are deleted.
    backup_keep: int = Field(7, ge=1, le=100_000)
    # Deploy targets (trainforge.core.deploy.targets). Ollama: the server a deployment pushes to.
    ollama_host: str = "http://127.0.0.1:11434"
    # Hugging Face hub: the endpoint and the namespace (user or organisation) repos are created
    # under; the token is read from HF_TOKEN in the environment, never from a file or the database.
    huggingface_endpoint: str = "https://huggingface.co"
    huggingface_namespace: str = ""
    # S3-compatible storage: endpoint, bucket and key prefix; credentials from the standard AWS
    # environment variables or config files.
    s3_endpoint: str = ""
    s3_bucket: str = ""
    s3_prefix: str = "trainforge"
    s3_region: str = "us-east-1"
    # Local deployments: the address their server processes listen on (the gateway reaches them
    # there), and how long a request in flight may take to finish when a rollout replaces one.
    serving_host: str = "127.0.0.1"
    serving_drain_seconds: float = Field(30.0, ge=0, le=3600)

    @field_validator("data_dir", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        return Path(os.path.expanduser(str(value))) if value is not None else value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return value.upper()

    # Each TLS file is checked on its own, so every problem is reported at once; the key and the CA
    # see the fields validated before them (pydantic's field order) for the cross-checks.
    @field_validator("tls_cert_file")
    @classmethod
    def _tls_cert(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            return value
        problem = _certificate_problem(_tls_path(value, info))
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("tls_key_file")
    @classmethod
    def _tls_key(cls, value: str, info: ValidationInfo) -> str:
        cert = info.data.get("tls_cert_file")  # None: the certificate itself is bad (reported there)
        if not value:
            if cert:
                raise ValueError("is required when tls_cert_file is set")
            return value
        if cert == "":
            raise ValueError("is set but tls_cert_file is not; give both or neither")
        path = _tls_path(value, info)
        problem = _readable(path)
        if not problem and b"PRIVATE KEY-----" not in path.read_bytes():
            problem = f"{path} is not a PEM private key"
        if not problem and cert:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(_tls_path(cert, info), path,
                                                                        password=_no_password)
            except ssl.SSLError as exc:
                problem = (f"{path} does not load with tls_cert_file: it is encrypted, or it is not the key of "
                           f"that certificate ({exc.reason or exc})")
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("tls_client_ca_file")
    @classmethod
    def _tls_client_ca(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            return value
        if info.data.get("tls_cert_file") == "":
            raise ValueError("needs tls_cert_file and tls_key_file: clients check the server first")
        problem = _certificate_problem(_tls_path(value, info))
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _loopback_without_auth(self) -> Settings:
        if not self.auth_enabled:
            exposed = [f"{name}={host}" for name, host in (("grpc_host", self.grpc_host), ("http_host", self.http_host))
                       if not is_loopback(host)]
            if exposed:
                raise ValueError("auth_enabled is false, so the server may only listen on loopback; "
                                 f"got {', '.join(exposed)}")
        return self

    @property
    def max_running_per_kind(self) -> dict[str, int]:
        """The per-kind limits keyed by job kind (core.jobs.models.KINDS)."""
        from trainforge.core.jobs import models as jobs

        return {jobs.TRAINING: self.max_running_training_jobs, jobs.EVALUATION: self.max_running_evaluation_jobs,
                jobs.COMPRESSION: self.max_running_compression_jobs,
                jobs.DEPLOYMENT: self.max_running_deployment_jobs}

    @property
    def tls(self) -> TlsFiles | None:
        """The TLS files (absolute), or None for plaintext."""
        if not self.tls_cert_file:
            return None
        return TlsFiles(self.resolve(Path(os.path.expanduser(self.tls_cert_file))),
                        self.resolve(Path(os.path.expanduser(self.tls_key_file))),
                        self.resolve(Path(os.path.expanduser(self.tls_client_ca_file)))
                        if self.tls_client_ca_file else None)

    def plaintext_exposure(self) -> list[str]:
        """The listeners that accept plaintext on an address other hosts can reach: API keys and
        model data would cross the network readable by anyone on the path."""
        if self.tls is not None:
            return []
        return [f"{name}={host}" for name, host in (("grpc_host", self.grpc_host), ("http_host", self.http_host))
                if not is_loopback(host)]

    def resolve(self, path: Path) -> Path:
        """A configured root as an absolute path (relative ones live under data_dir)."""
        return (path if path.is_absolute() else self.data_dir / path).resolve()

    @property
    def models_dir(self) -> Path:
        return self.resolve(self.models_root)

    @property
    def data_dir_root(self) -> Path:
        return self.resolve(self.data_root)

    @property
    def artifacts_dir(self) -> Path:
        return self.resolve(self.artifacts_root)

    @property
    def configs_dir(self) -> Path:
        return self.resolve(self.configs_root)

    @property
    def backups_dir(self) -> Path:
        return self.resolve(self.backup_dir)

    @property
    def jobs_dir(self) -> Path:
        """Each job's working folder (config, logs, checkpoints): data_dir/jobs/<job id>."""
        return self.data_dir / "jobs"

    def ensure_dirs(self) -> None:
        for path in (self.data_dir, self.models_dir, self.data_dir_root, self.artifacts_dir, self.configs_dir):
            path.mkdir(parents=True, exist_ok=True)


def load_settings(config_file: Path | None = None, env: dict[str, str] | None = None,
                  **overrides: Any) -> Settings:
    """Defaults < config file < environment < explicit overrides. Raises InvalidArgument naming
    every bad key."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if config_file is not None:
        loaded = yaml.safe_load(Path(config_file).read_text()) or {}
        if not isinstance(loaded, dict):
            raise InvalidArgument.one(str(config_file), "must be a YAML mapping")
        values.update(loaded)
    for key in Settings.model_fields:
        name = f"TRAINFORGE_{key.upper()}"
        if name in env:
            values[key] = env[name]
    if env.get("DATABASE_URL"):
        values["database_url"] = env["DATABASE_URL"]
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise InvalidArgument(
            [FieldViolation(".".join(str(p) for p in err["loc"]) or "settings", err["msg"]) for err in exc.errors()],
            message="invalid trainforge settings",
        ) from None
