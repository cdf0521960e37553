"""Jobs test setup: a tiny model under the suite's models root, a small dataset under its data
root, and a training worker running beside the suite's server."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import timedelta

import pytest

from tests.training.conftest import build_tiny_model, qa_rows
from trainforge.core.db.pool import open_pool
from trainforge.core.deploy.target_factory import target_config
from trainforge.core.jobs.store import JobStore
from trainforge.core.jobs.worker import Worker, WorkerConfig
from trainforge.core.registry.artifacts import ArtifactStore
from trainforge.core.registry.store import RegistryStore
from trainforge.core.training.model_loading import default_cache_dir


@pytest.fixture(scope="session")
def job_inputs(settings) -> dict[str, str]:
    """Relative names of the tiny model (models root) and the QA dataset (data root)."""
    settings.ensure_dirs()  # a test may ask for these before anything started the server
    models, data = settings.models_dir, settings.data_dir_root
    if not (models / "tiny-llama").exists():
        build_tiny_model(models / "tiny-llama")
    (data / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_rows(repeat=6)))
    return {"model": "tiny-llama", "data": "qa.jsonl"}


def tiny_job(name: str, **sections) -> dict:
    """The seed's REST body shape, for the tiny model."""
    body = {
        "name": name, "model": "tiny-llama",
        "trainingData": {"source": "file", "path": "qa.jsonl", "format": "jsonl", "validation_split": 0.2},
        "hyperparameters": {"learning_rate": 1e-2, "batch_size": 4, "epochs": 2, "max_seq_length": 64, "seed": 3,
                            "save_steps": 1000, "warmup_steps": 0},
        "optimization": {"optimizer": "adamw", "scheduler": "constant"},
    }
    for key, value in sections.items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    return body


class BackgroundWorker:
    """One training worker on its own event loop in a thread, like `serve` runs them. Its model
    cache is the user's (~/.cache/trainforge/models): the packaged base model is converted once per
    machine (~21 s), not once per test session."""

    def __init__(self, settings, dsn: str, lease_seconds: float = 6.0, *, jobs_class: type[JobStore] = JobStore,
                 worker_id: str = "test-worker", stop_checkpoint_seconds: float = 60.0,
                 limits: dict[str, int] | None = None, jobs_dir=None):
        self.settings, self.dsn, self.lease = settings, dsn, lease_seconds
        self.jobs_dir = jobs_dir or settings.data_dir / "jobs"
        self.jobs_class, self.worker_id, self.stop_checkpoint_seconds = jobs_class, worker_id, stop_checkpoint_seconds
        self.limits = limits
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        pool = await open_pool(self.dsn, min_size=1, max_size=4)
        try:
            registry = RegistryStore(pool, ArtifactStore(self.settings.artifacts_dir), self.settings.models_dir)
            config = WorkerConfig(jobs_dir=self.jobs_dir, dsn=self.dsn,
                                  lease=timedelta(seconds=self.lease), heartbeat_seconds=self.lease / 3,
                                  poll_seconds=0.2, model_cache=default_cache_dir(),
                                  data_root=self.settings.data_dir_root, max_running_per_kind=self.limits,
                                  stop_checkpoint_seconds=self.stop_checkpoint_seconds,
                                  deploy_config=target_config(self.settings),
                                  serving_dir=self.settings.data_dir / "serving")
            await Worker(self.jobs_class(pool), registry, config, worker_id=self.worker_id).run(self._stop)
        finally:
            await pool.close()

    def start(self) -> None:
        self._thread.start()
        while self._stop is None:
            time.sleep(0.01)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


@pytest.fixture(scope="module")
def worker(settings, database_url, job_inputs):
    background = BackgroundWorker(settings, database_url)
    background.start()
    yield background
    background.stop()


def registered_tiny_model(rest, settings, tmp_path_factory, prefix: str) -> str:
    """A fresh model name whose version 1.0.0 is a tiny random Llama (hidden 64) registered from
    the models root."""
    import shutil
    import uuid

    from tests.training.conftest import build_tiny_model

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    shutil.copytree(build_tiny_model(tmp_path_factory.mktemp(prefix) / "tiny", hidden=64), settings.models_dir / name)
    reply = rest.post("/api/training/models", {"name": name, "version": "1.0.0", "model_type": "pretrained",
                                               "source": name})
    assert reply.status == 200, reply
    return name


def finished_job(rest, job_id: str, timeout: float = 180) -> dict:
    """The job once it ended (SUCCEEDED, FAILED or CANCELLED)."""
    def ended():
        job = rest.get(f"/api/training/jobs/{job_id}").body["data"]
        return job if job["status"] in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED") else None
    return wait_for(ended, timeout=timeout, interval=0.5)


def wait_for(predicate, timeout: float = 120, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout} s")

