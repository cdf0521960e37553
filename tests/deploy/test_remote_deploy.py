"""Deployments to the remote targets through the whole stack (REST through Envoy, the deploy job in
a worker, the target over the network): SmolLM2 pushed to the Ollama stand-in answers and stops
at its template's end under the alias; a version in a real S3 server (SeaweedFS) reads back with
every checksum equal to the registry's, and its alias pointer follows rollouts and rollbacks; a
Hugging Face repo gets the files, the card and an alias branch; an unreachable host fails the
deployment naming the host, and a missing token is refused before anything is queued. The server
and worker here carry target settings of their own."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid

import ollama
import pytest

from tests.deploy.conftest import deployed, register_tiny
from tests.jobs.conftest import BackgroundWorker
from tests.standins.hf_hub_standin import HubStandin
from tests.standins.ollama_standin import OllamaStandin
from tests.standins.seaweedfs import seaweedfs_s3
from tests.support import Rest, free_port, violations
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


BUCKET = "trainforge-deploy"
HF_TOKEN = "hf_remote_deploy_test_token"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    with seaweedfs_s3(tmp_path_factory.mktemp("seaweedfs")) as server:
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        client.close()
        yield server


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubStandin(tmp_path_factory.mktemp("hub"), {HF_TOKEN: "team"}) as standin:
        yield standin


@pytest.fixture(scope="module")
def credentials(s3_server, tmp_path_factory):
    """The environment a deploying server is given: S3 keys and a hub token (never in settings)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
        env.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
        env.delenv("AWS_PROFILE", raising=False)
        env.setenv("AWS_CONFIG_FILE", str(tmp_path_factory.mktemp("aws") / "none"))
        env.setenv("HF_TOKEN", HF_TOKEN)
        yield env


@pytest.fixture(scope="module")
def remote(settings, database_url, api_keys, ollama_standin, s3_server, hub, credentials, tmp_path_factory):
    """A server, gateway and worker on the suite's database whose settings name the stand-ins."""
    configured = settings.model_copy(update={
        "ollama_host": ollama_standin.url, "s3_endpoint": s3_server.endpoint_url, "s3_bucket": BUCKET,
        "s3_prefix": "models", "huggingface_endpoint": hub.url, "huggingface_namespace": "team"})
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


def _jobs_total(rest) -> int:
    return int(rest.get("/api/training/jobs?page_size=1").body["total_size"])


def test_a_cloud_deploy_round_trips_with_verified_checksums_and_its_pointer_rolls_back(remote, settings, s3_server,
                                                                                       tmp_path):
    name = f"cloud-{uuid.uuid4().hex[:6]}"
    v1 = register_tiny(remote, settings, tmp_path, name, "1.0.0", seed=1)
    v2 = register_tiny(remote, settings, tmp_path, name, "2.0.0", seed=2)
    first, job = deployed(remote, v1["model_version_id"], {"target": "cloud", "auto_rollback": True,
                                                            "deployment_tags": ["production"]})
    assert first["state"] == "DEPLOYMENT_STATE_HEALTHY", (first, job)
    s3 = s3_server.client()

    def pointer() -> dict:
        return json.loads(s3.get_object(Bucket=BUCKET, Key=f"models/{name}/aliases/production.json")["Body"].read())

    def objects_match_the_registry(version: str) -> None:
        registry = remote.get(f"/api/training/models/{name}/versions/{version}/artifacts").body["data"]["files"]
        assert registry
        for f in registry:
            body = s3.get_object(Bucket=BUCKET, Key=f"models/{name}/versions/{version}/{f['path']}")["Body"].read()
            assert hashlib.sha256(body).hexdigest() == f["sha256"], f["path"]

    assert pointer()["version"] == "1.0.0"
    objects_match_the_registry("1.0.0")
    second, _ = deployed(remote, v2["model_version_id"], {"target": "cloud", "auto_rollback": True})
    assert second["state"] == "DEPLOYMENT_STATE_HEALTHY" and pointer()["version"] == "2.0.0"
    objects_match_the_registry("2.0.0")
    rolled = remote.post(f"/api/training/deploy/{v2['model_version_id']}/deployments/{second['deployment_id']}"
                         "/rollback", {})
    assert rolled.status == 200 and rolled.body["data"]["deployment_id"] == first["deployment_id"], rolled
    assert pointer()["version"] == "1.0.0"
    assert remote.get(f"/api/training/models/{name}").body["data"]["aliases"]["production"] == "1.0.0"
    s3.close()


def test_a_huggingface_deploy_uploads_files_card_and_alias_branch(remote, settings, hub, tmp_path):
    name = f"hub-{uuid.uuid4().hex[:6]}"
    v1 = register_tiny(remote, settings, tmp_path, name, "1.0.0", seed=5)
    live, job = deployed(remote, v1["model_version_id"], {"target": "huggingface",
                                                           "deployment_tags": ["conversational", "fine-tuned"]})
    assert live["state"] == "DEPLOYMENT_STATE_HEALTHY", (live, job)
    readme = hub.read(f"team/{name}", "main", "README.md").decode()
    assert "conversational" in readme and "fine-tuned" in readme and "library_name: transformers" in readme
    config = json.loads(hub.read(f"team/{name}", "production", "config.json"))
    assert config["model_type"] == "llama"
    assert HF_TOKEN not in json.dumps(live) and HF_TOKEN not in json.dumps(job)


def test_a_missing_hf_token_is_refused_before_anything_is_queued(remote, settings, credentials, tmp_path):
    v1 = register_tiny(remote, settings, tmp_path, f"hub-notoken-{uuid.uuid4().hex[:6]}", "1.0.0")
    before = _jobs_total(remote)
    credentials.delenv("HF_TOKEN")
    try:
        reply = remote.post(f"/api/training/deploy/{v1['model_version_id']}", {"target": "huggingface"})
    finally:
        credentials.setenv("HF_TOKEN", HF_TOKEN)
    assert reply.status == 400 and "HF_TOKEN" in violations(reply), reply
    assert _jobs_total(remote) == before
