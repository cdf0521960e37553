"""Local deployments end to end, through the Envoy gateway: a version deploys as a job, a server
process answers on the stable path `/api/serving/{model}/{alias}/v1/...`, the alias and the
`deployed` flag follow; a rollout, a failed deployment and a rollback each leave a client that
sends requests all the while with zero failed requests; a tampered artifact ships nothing.

The transformers engine on tiny random models keeps this fast; the llama.cpp engine on SmolLM2's
GGUF is covered in tests/deploy/test_smollm2_deploy.py."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request

import psycopg
import pytest

from tests.deploy.conftest import SERVING_AUTH, deployed, deployment, register_tiny, served_version
from tests.jobs.conftest import wait_for
from tests.support import error_reason
from trainforge.core.registry.artifacts import ArtifactStore

pytestmark = [pytest.mark.postgres, pytest.mark.envoy, pytest.mark.usefixtures("serving_auth")]

LOCAL = {"target": "local", "engine": "transformers", "auto_rollback": True, "health_check_timeout": 60000}


def _post_json(url: str, body: dict, timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json", **SERVING_AUTH})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {"raw": exc.read().decode(errors="replace")[:300]}


class SteadyClient:
    """Sends completions to a stable path back to back from its own thread, counting failures."""

    def __init__(self, url: str):
        self.url, self.ok, self.failures = url, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = _post_json(self.url, {"prompt": "hello", "max_tokens": 2, "temperature": 0})
            except OSError as exc:
                status, body = 0, {"raw": str(exc)}
            if status == 200 and body.get("choices"):
                self.ok += 1
            else:
                self.failures.append((status, body))

    def __enter__(self) -> SteadyClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)


def test_a_local_deployment_serves_on_the_stable_path(rest, settings, gateway, worker, serving, tmp_path):
    name = "local-serve"
    v1 = register_tiny(rest, settings, tmp_path, name, "1.0.0")
    started = time.monotonic()
    reply = rest.post(f"/api/training/deploy/{v1['model_version_id']}", LOCAL)
    assert reply.status == 200 and time.monotonic() - started < 1.0, reply
    assert reply.body["data"]["state"] == "DEPLOYMENT_STATE_PENDING" and reply.body["data"]["job_id"]
    created = reply.body["data"]
    from tests.jobs.conftest import finished_job

    job = finished_job(rest, created["job_id"], timeout=240)
    assert job["status"] == "JOB_STATE_SUCCEEDED", job
    assert job["kind"] == "JOB_KIND_DEPLOYMENT" and job["deployment_result"]["deployment_id"] == created["deployment_id"]
    live = deployment(rest, v1["model_version_id"], created["deployment_id"])
    assert live["state"] == "DEPLOYMENT_STATE_HEALTHY", live
    assert live["serving_path"] == f"/api/serving/{name}/production/v1" and live["last_health"]["healthy"]

    status, body = _post_json(f"{gateway.url}/api/serving/{name}/production/v1/chat/completions",
                              {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4,
                               "temperature": 0})
    assert status == 200 and body["choices"][0]["message"]["role"] == "assistant", body
    assert body["usage"]["completion_tokens"] >= 1
    anonymous = urllib.request.Request(f"{gateway.url}/api/serving/{name}/production/v1/models")
    with pytest.raises(urllib.error.HTTPError) as refused_call:
        urllib.request.urlopen(anonymous, timeout=30)
    assert refused_call.value.code == 401  # the serving paths are behind API keys too
    model = rest.get(f"/api/training/models/{name}").body["data"]
    assert model["aliases"]["production"] == "1.0.0"
    version = rest.get(f"/api/training/models/{name}/versions/1.0.0").body["data"]
    assert version["deployed"] is True
    refused = rest.delete(f"/api/training/models/{name}/versions/1.0.0?force=true")
    assert refused.status == 400 or refused.status == 409, refused
    assert "undeploy" in refused.body["message"]
    # Listed with a state filter; health through the API is a real generation.
    listed = rest.get("/api/training/deploy/-?states=DEPLOYMENT_STATE_HEALTHY&targets=local&page_size=1000").body
    assert created["deployment_id"] in {x["deployment_id"] for x in listed["data"]}
    health = rest.get(f"/api/training/deploy/{v1['model_version_id']}/deployments/{created['deployment_id']}/health")
    assert health.status == 200 and health.body["data"]["healthy"] is True, health
    # Undeploy: the stable path is gone, the alias too, and the version can be deleted again.
    gone = rest.post(f"/api/training/deploy/{v1['model_version_id']}/deployments/{created['deployment_id']}/undeploy",
                     {})
    assert gone.status == 200 and gone.body["data"]["state"] == "DEPLOYMENT_STATE_UNDEPLOYED", gone
    wait_for(lambda: _post_json(f"{gateway.url}/api/serving/{name}/production/v1/completions",
                                {"prompt": "x", "max_tokens": 1})[0] == 404, timeout=30)
    assert "production" not in rest.get(f"/api/training/models/{name}").body["data"].get("aliases", {})


def test_rollout_failed_deploy_and_rollback_drop_no_request(rest, settings, gateway, worker, serving, tmp_path):
    name = "local-rollout"
    v1 = register_tiny(rest, settings, tmp_path, name, "1.0.0", seed=1)
    v2 = register_tiny(rest, settings, tmp_path, name, "2.0.0", seed=2)
    broken = register_tiny(rest, settings, tmp_path, name, "3.0.0", seed=3, break_config=True)
    first, _ = deployed(rest, v1["model_version_id"], LOCAL)
    assert first["state"] == "DEPLOYMENT_STATE_HEALTHY", first
    assert served_version(gateway.url, name) == f"{name}:1.0.0"

    with SteadyClient(f"{gateway.url}/api/serving/{name}/production/v1/completions") as client:
        time.sleep(1)
        second, job = deployed(rest, v2["model_version_id"], LOCAL)
        assert second["state"] == "DEPLOYMENT_STATE_HEALTHY", (second, job)
        assert second["previous_deployment_id"] == first["deployment_id"]
        wait_for(lambda: served_version(gateway.url, name) == f"{name}:2.0.0", timeout=30)
        assert deployment(rest, v1["model_version_id"], first["deployment_id"])["state"] == \
            "DEPLOYMENT_STATE_SUPERSEDED"

        failed, job = deployed(rest, broken["model_version_id"], LOCAL)
        assert failed["state"] == "DEPLOYMENT_STATE_FAILED" and job["status"] == "JOB_STATE_FAILED", failed
        assert failed["error"]["message"]
        assert served_version(gateway.url, name) == f"{name}:2.0.0"
        assert rest.get(f"/api/training/models/{name}").body["data"]["aliases"]["production"] == "2.0.0"

        rolled = rest.post(f"/api/training/deploy/{v2['model_version_id']}/deployments/{second['deployment_id']}"
                           "/rollback", {})
        assert rolled.status == 200 and rolled.body["data"]["deployment_id"] == first["deployment_id"], rolled
        wait_for(lambda: served_version(gateway.url, name) == f"{name}:1.0.0", timeout=60)
        time.sleep(1)
    assert client.failures == [], client.failures[:3]
    assert client.ok > 10, client.ok
    assert rest.get(f"/api/training/models/{name}").body["data"]["aliases"]["production"] == "1.0.0"
    assert deployment(rest, v2["model_version_id"], second["deployment_id"])["state"] == "DEPLOYMENT_STATE_ROLLED_BACK"
    # Nothing to roll back to from the first deployment.
    again = rest.post(f"/api/training/deploy/{v1['model_version_id']}/deployments/{first['deployment_id']}/rollback",
                      {})
    assert again.status == 400 and error_reason(again) == "NOTHING_TO_ROLL_BACK", again


def test_a_tampered_artifact_fails_with_data_loss_and_ships_nothing(rest, settings, database_url, worker, serving,
                                                                      tmp_path):
    name = "local-tampered"
    # A seed of its own: materialised copies are shared by content across sessions (and verified
    # when used), so a model deployed before would ship from its verified copy, tamper or not.
    v1 = register_tiny(rest, settings, tmp_path, name, "1.0.0", seed=random.randrange(10**9))
    manifest = rest.get(f"/api/training/models/{name}/versions/1.0.0/artifacts").body["data"]
    weights = next(f for f in manifest["files"] if f["path"].endswith(".safetensors"))
    blob = ArtifactStore(settings.artifacts_dir).blob_path(weights["sha256"])
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    failed, job = deployed(rest, v1["model_version_id"], LOCAL)
    assert failed["state"] == "DEPLOYMENT_STATE_FAILED" and failed["error"]["code"] == 15, failed  # DATA_LOSS
    assert weights["path"] in failed["error"]["message"] or "sha256" in failed["error"]["message"], failed
    assert failed["endpoint"] == ""
    with psycopg.connect(database_url) as conn:  # no server was ever asked for
        serving_record = conn.execute("SELECT serving FROM deployments WHERE id = %s",
                                      (failed["deployment_id"],)).fetchone()[0]
    assert serving_record == {}, serving_record
    assert "production" not in rest.get(f"/api/training/models/{name}").body["data"].get("aliases", {})
