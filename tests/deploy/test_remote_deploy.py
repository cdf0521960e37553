"""Deployments to the remote targets through the whole stack (REST through Envoy, the deploy job in
a worker, the target over the network): SmolLM2 pushed to the Ollama stand-in answers and stops
at its template's end under the alias; an unreachable host fails the deployment naming the host,
with nothing half-deployed. The server and worker here carry target settings of their own."""

from __future__ import annotations

import shutil
import uuid

import ollama
import pytest

from tests.deploy.conftest import deployed
from tests.jobs.conftest import BackgroundWorker
from tests.standins.ollama_standin import OllamaStandin
from tests.support import Rest, free_port
from trainforge.server.envoy_process import EnvoyGateway
from trainforge.server.runner import BackgroundServer

pytestmark = [pytest.mark.postgres, pytest.mark.envoy]

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


class _Standins:
    """The module's Ollama stand-in; `restart()` replaces it with a new one on the same port and
    store (a stopped aiohttp app cannot start again)."""

    def __init__(self, root):
        self.root, self.ollama = root, OllamaStandin(root).start()

    @property
    def url(self) -> str:
        return self.ollama.url

    def stop(self) -> None:
        self.ollama.stop()

    def restart(self) -> None:
        self.ollama = OllamaStandin(self.root, port=self.ollama.port).start()


@pytest.fixture(scope="module")
def ollama_standin(tmp_path_factory):
    standins = _Standins(tmp_path_factory.mktemp("ollama"))
    yield standins
    standins.stop()


@pytest.fixture(scope="module")
def remote(settings, database_url, api_keys, ollama_standin, tmp_path_factory):
    """A server, gateway and worker on the suite's database whose settings name the stand-ins."""
    configured = settings.model_copy(update={"ollama_host": ollama_standin.url})
    server = BackgroundServer(configured, database_url)
    server.start()
    gateway = EnvoyGateway(tmp_path_factory.mktemp("remote-envoy"), grpc_address="127.0.0.1", grpc_port=server.port,
                           http_port=free_port(), admin_port=0, max_request_bytes=settings.max_request_bytes)
    gateway.start()
    worker = BackgroundWorker(configured, database_url, worker_id="remote-deploy-worker")
    worker.start()
    yield Rest(gateway.url, api_keys["admin"])
    worker.stop()
    gateway.stop()
    server.stop()


@pytest.fixture(scope="module")
def smollm2_version(remote, settings, smollm2_dir) -> dict:
    """SmolLM2-135M-Instruct registered as a version (its safetensors folder from the model cache)."""
    name = f"smollm2-remote-{uuid.uuid4().hex[:6]}"
    shutil.copytree(smollm2_dir, settings.models_dir / name, ignore=shutil.ignore_patterns(".complete*"))
    reply = remote.post("/api/training/models", {"name": name, "version": "1.0.0", "model_type": "pretrained",
                                                 "source": name, "tags": ["chat"]})
    assert reply.status == 200, reply
    return reply.body["data"]


def test_ollama_deploy_answers_and_stops_under_its_alias(remote, smollm2_version, ollama_standin):
    name = smollm2_version["name"]
    live, job = deployed(remote, smollm2_version["model_version_id"],
                         {"target": "ollama", "auto_rollback": True, "health_check_timeout": 60000})
    assert live["state"] == "DEPLOYMENT_STATE_HEALTHY", (live, job)
    assert live["endpoint"].startswith("ollama://") and live["last_health"]["healthy"], live
    assert job["deployment_result"]["deploy_seconds"] > 0
    client = ollama.Client(host=ollama_standin.url)
    names = {m.model for m in client.list().models}
    model_tag = live["endpoint"].rsplit("/", 1)[1]
    alias_tag = model_tag.rsplit(":", 1)[0] + ":production"
    assert {model_tag, alias_tag} <= names, names
    shown = client.show(alias_tag)
    assert "<|im_start|>" in shown.template and '"<|im_end|>"' in shown.parameters
    answer = client.chat(model=alias_tag, messages=FRANCE, options={"temperature": 0, "num_predict": 64})
    assert "Paris" in answer.message.content, answer.message.content
    assert answer.done_reason == "stop" and answer.eval_count < 64  # stopped at <|im_end|>, not at the limit
    assert remote.get(f"/api/training/models/{name}").body["data"]["aliases"]["production"] == "1.0.0"


def test_an_unreachable_ollama_host_fails_naming_the_host_and_deploys_nothing(remote, smollm2_version,
                                                                              ollama_standin):
    ollama_standin.stop()
    try:
        failed, job = deployed(remote, smollm2_version["model_version_id"], {"target": "ollama"})
    finally:
        ollama_standin.restart()
    assert failed["state"] == "DEPLOYMENT_STATE_FAILED" and job["status"] == "JOB_STATE_FAILED", failed
    assert failed["error"]["code"] == 14 and ollama_standin.url.split("//")[1] in failed["error"]["message"], failed
    # The live deployment of the first test is untouched.
    listed = remote.get(f"/api/training/deploy/{smollm2_version['model_version_id']}?"
                        "states=DEPLOYMENT_STATE_HEALTHY&targets=ollama").body["data"]
    assert len(listed) <= 1
