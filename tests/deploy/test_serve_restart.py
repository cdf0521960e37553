"""A local deployment outlives `trainforge serve`: after `kill -9` of serve its inference server goes
with it (parent-death signal), nothing is left behind, and the next `serve` on the same data
directory starts the server again and routes the stable path to it, with the deployment still
live and its alias unchanged."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.jobs.conftest import finished_job, wait_for
from tests.server.test_cli import TOKEN_RE, _processes_mentioning
from tests.server.test_serve_crash import Serve, _env, _kill_9, crash_dir  # noqa: F401  (fixture)
from tests.support import Rest, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.envoy]


def _chat(url: str, token: str, name: str) -> int:
    request = urllib.request.Request(
        f"{url}/api/serving/{name}/production/v1/chat/completions", method="POST",
        data=json.dumps({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_a_local_deployment_serves_again_after_serve_is_killed_and_restarted(crash_dir: Path):  # noqa: F811
    env, http_port = _env(), free_port()
    first = Serve(crash_dir, env, http_port)
    second = None
    try:
        [token] = TOKEN_RE.findall(first.banner)
        rest = Rest(first.url, token)
        name = "restart-serving"
        registered = rest.post("/api/training/models", {"name": name, "version": "1.0.0", "model_type": "pretrained",
                                                        "source": "tiny-llama"})
        assert registered.status == 200, registered
        version_id = registered.body["data"]["model_version_id"]
        created = rest.post(f"/api/training/deploy/{version_id}", {"target": "local", "engine": "transformers"})
        assert created.status == 200, created
        job = finished_job(rest, created.body["data"]["job_id"], timeout=240)
        assert job["status"] == "JOB_STATE_SUCCEEDED", job
        assert _chat(first.url, token, name) == 200

        _kill_9(first)
        wait_for(lambda: not [p for p in _processes_mentioning(str(crash_dir)) if "openai_server" in p],
                 timeout=30)  # the model server died with its serve (parent-death signal)
        second = Serve(crash_dir, env, http_port)
        wait_for(lambda: _chat(second.url, token, name) == 200, timeout=120)
        deployment = Rest(second.url, token).get(
            f"/api/training/deploy/{version_id}/deployments/{created.body['data']['deployment_id']}").body["data"]
        assert deployment["state"] == "DEPLOYMENT_STATE_HEALTHY", deployment
        assert Rest(second.url, token).get(f"/api/training/models/{name}").body["data"]["aliases"] == \
            {"production": "1.0.0"}
    finally:
        for serve in (first, second):
            if serve is not None:
                serve.stop()
    assert _processes_mentioning(str(crash_dir)) == []
