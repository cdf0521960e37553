"""Deploy test setup: the suite's server, gateway and a worker (tests/jobs/conftest.py), plus the
serving supervisor that `trainforge serve` runs (core.serving.supervisor), routing the gateway's
stable paths. Models are registered through REST, as users do."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.jobs.conftest import finished_job, job_inputs, wait_for, worker  # noqa: F401  (fixtures)
from tests.training.conftest import build_tiny_model
from trainforge.core.db.pool import open_pool
from trainforge.core.deploy.store import DeploymentStore
from trainforge.core.jobs.store import JobStore
from trainforge.core.serving.supervisor import ServingSupervisor


class BackgroundSupervisor:
    """The serving supervisor on its own event loop in a thread, as `serve` runs it."""

    def __init__(self, settings, dsn: str, gateway):
        self.settings, self.dsn, self.gateway = settings, dsn, gateway
        self.supervisor: ServingSupervisor | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        pool = await open_pool(self.dsn, min_size=1, max_size=4)
        routes = getattr(self.gateway, "serving_routes", None)
        try:
            self.supervisor = ServingSupervisor(
                DeploymentStore(pool, JobStore(pool)), self.dsn, self.settings.data_dir / "serving" / "run",
                drain_seconds=10, apply_routes=(lambda t: asyncio.to_thread(routes.apply, t)) if routes else None)
            await self.supervisor.run(self._stop)
        finally:
            await pool.close()

    def start(self) -> None:
        self._thread.start()
        while self._stop is None:
            time.sleep(0.01)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from trainforge.core.training.model_loading import default_cache_dir, packaged_smollm2

    return packaged_smollm2(default_cache_dir())  # converted once per machine (~25 s), then instant


@pytest.fixture(scope="session")
def smollm2_f16(smollm2_dir, tmp_path_factory):
    """SmolLM2-135M-Instruct exported to an F16 GGUF by our exporter (~5 s): what a deployment ships."""
    from trainforge.core.deploy.gguf_export import export_gguf

    out = tmp_path_factory.mktemp("gguf") / "smollm2-f16.gguf"
    result = export_gguf(smollm2_dir, out, outtype="f16")
    print(f"\nSmolLM2-135M F16 export: {result.seconds:.1f} s, {result.size_bytes / 1e6:.1f} MB, "
          f"{result.tensor_count} tensors, pre {result.tokenizer_pre}")
    return result


@pytest.fixture(scope="module")
def serving(settings, database_url, gateway):
    background = BackgroundSupervisor(settings, database_url, gateway)
    background.start()
    yield background
    background.stop()


def register_tiny(rest, settings, tmp_path: Path, name: str, version: str, *, seed: int = 0,
                  break_config: bool = False) -> dict:
    """Registers a tiny random Llama (transformers engine; WordLevel tokenizer) as `name:version`.
    `break_config`: a config.json whose hidden size does not fit the weights, so a server cannot
    load it (the checksums are right: the registry vouches for the bytes, not for the model)."""
    folder = build_tiny_model(tmp_path / f"{name}-{version}", seed=seed, hidden=32)
    if break_config:
        config = (folder / "config.json").read_text().replace('"hidden_size": 32', '"hidden_size": 48')
        (folder / "config.json").write_text(config)
    source = f"{name}-{version}-{uuid.uuid4().hex[:6]}"
    shutil.copytree(folder, settings.models_dir / source)
    reply = rest.post("/api/training/models", {"name": name, "version": version, "model_type": "pretrained",
                                               "source": source})
    assert reply.status == 200, reply
    return reply.body["data"]


def deployment(rest, version_id: str, deployment_id: str) -> dict:
    reply = rest.get(f"/api/training/deploy/{version_id}/deployments/{deployment_id}")
    assert reply.status == 200, reply
    return reply.body["data"]


def deployed(rest, version_id: str, body: dict, timeout: float = 240) -> tuple[dict, dict]:
    """POSTs a deployment and follows its job to the end: (deployment, job)."""
    reply = rest.post(f"/api/training/deploy/{version_id}", body)
    assert reply.status == 200, reply
    first = reply.body["data"]
    job = finished_job(rest, first["job_id"], timeout=timeout)
    return deployment(rest, version_id, first["deployment_id"]), job


# The stable serving paths need an API key like the API (any role): the viewer's, once a test
# module asks for it with `pytest.mark.usefixtures("serving_auth")`.
SERVING_AUTH: dict[str, str] = {}


@pytest.fixture
def serving_auth(api_keys) -> dict[str, str]:
    SERVING_AUTH["authorization"] = f"Bearer {api_keys['viewer']}"
    return SERVING_AUTH


def served_version(gateway_url: str, name: str, alias: str = "production") -> str:
    """The `model:version` a stable path answers with now (its /v1/models)."""
    request = urllib.request.Request(f"{gateway_url}/api/serving/{name}/{alias}/v1/models", headers=SERVING_AUTH)
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())["data"][0]["id"]
