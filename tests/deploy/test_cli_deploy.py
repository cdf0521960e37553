"""The deploy commands as a user types them: `trainforge deploy --wait` follows the job and prints
the stable path; `deployments list|get|health|rollback|undeploy`; `trainforge chat` streams an
answer through the gateway; bad input is one clear error with exit status 1, never a traceback."""

from __future__ import annotations

import json

import pytest

from tests.deploy.conftest import register_tiny
from tests.server.test_cli import invoke

pytestmark = [pytest.mark.postgres, pytest.mark.envoy]


def test_deploy_follow_list_health_chat_rollback_and_undeploy(rest, settings, grpc_server, gateway, worker, serving,
                                                              api_keys, tmp_path):
    server = f"127.0.0.1:{grpc_server.port}"
    key = api_keys["admin"]
    name = "cli-deploy"
    v1 = register_tiny(rest, settings, tmp_path, name, "1.0.0", seed=21)
    register_tiny(rest, settings, tmp_path, name, "2.0.0", seed=22)

    out = invoke("deploy", f"{name}:1.0.0", "--target", "local", "--engine", "transformers", "--server", server,
                 api_key=key).output
    assert "HEALTHY" in out and f"/api/serving/{name}/production/v1/chat/completions" in out, out
    second = json.loads(invoke("deploy", f"{name}:2.0.0", "--target", "local",
                               "--engine", "transformers", "--json", "--server", server, api_key=key).output)
    assert second["state"] == "DEPLOYMENT_STATE_HEALTHY" and second["version"] == "2.0.0", second

    listed = json.loads(invoke("deployments", "list", "--state", "healthy", "--target", "local", "--json",
                               "--server", server, api_key=key).output)
    assert second["deployment_id"] in {d["deployment_id"] for d in listed["data"]}
    assert "healthy" in invoke("deployments", "health", second["deployment_id"], "--server", server,
                               api_key=key).output

    answer = invoke("chat", f"{name}@production", "-m", "hello", "--max-tokens", "3", "--gateway", gateway.url,
                    api_key=key).output
    assert answer.strip() != ""  # the streamed answer went to stdout

    rolled = json.loads(invoke("deployments", "rollback", second["deployment_id"], "--json", "--server", server,
                               api_key=key).output)
    assert rolled["version"] == "1.0.0" and rolled["state"] == "DEPLOYMENT_STATE_HEALTHY", rolled
    gone = json.loads(invoke("deployments", "undeploy", rolled["deployment_id"], "--json", "--server", server,
                             api_key=key).output)
    assert gone["state"] == "DEPLOYMENT_STATE_UNDEPLOYED"
    assert v1["model_version_id"] == gone["model_version_id"]

    bad = invoke("deploy", f"{name}:1.0.0", "--target", "mars", "--server", server, api_key=key, expect=1).output
    assert "target" in bad and "mars" in bad
    missing = invoke("deploy", f"{name}:9.9.9", "--server", server, api_key=key, expect=1).output
    assert "9.9.9" in missing
    no_route = invoke("chat", "nobody@production", "-m", "hi", "--gateway", gateway.url, api_key=key, expect=1).output
    assert "404" in no_route
