"""The deploy benchmark (deploy.py) as a pytest-benchmark test, small: a tiny random Llama deployed
locally with the transformers engine (no GGUF export: its word-level tokenizer has no GGUF form),
on the suite's server, gateway, worker and serving supervisor (tests/deploy/conftest.py). Each
round registers a new version (not timed) and deploys it: POST to the stable path through Envoy
serving that version, so every round is a rollout from the one before. Figures to keep come from
deploy.py (SmolLM2, every target); this one checks the path and shows its fixed costs.

    .venv/bin/pytest benchmarks/test_deploy_benchmark.py --benchmark-only     # ~40 s

The job's `deploy_seconds` and the POST-to-HEALTHY times of the rounds are in `extra_info`.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tests.deploy.conftest import register_tiny, serving  # noqa: F401  (fixture)
from tests.jobs.conftest import finished_job, job_inputs, worker  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.postgres, pytest.mark.envoy]

ROUNDS = 3
MODEL = "bench-deploy-tiny"


def _serves(gateway_url: str, want: str) -> bool:
    try:
        with urllib.request.urlopen(f"{gateway_url}/api/serving/{MODEL}/production/v1/models", timeout=10) as reply:
            return json.loads(reply.read())["data"][0]["id"] == want
    except (OSError, ValueError, KeyError, IndexError):
        return False


def test_local_transformers_deploy_to_serving(benchmark, rest, settings, gateway, worker, serving,  # noqa: F811
                                              tmp_path):
    counter = iter(range(1, 100))
    outcomes: list[dict] = []

    def register():
        k = next(counter)
        version = register_tiny(rest, settings, tmp_path, MODEL, f"{k}.0.0", seed=k)
        return (version,), {}

    def deploy(version: dict) -> None:
        started = time.monotonic()
        reply = rest.post(f"/api/training/deploy/{version['model_version_id']}",
                          {"target": "local", "engine": "transformers", "auto_rollback": True,
                           "health_check_timeout": 60000})
        assert reply.status == 200, reply
        created = reply.body["data"]
        path = f"/api/training/deploy/{version['model_version_id']}/deployments/{created['deployment_id']}"
        healthy_s = None
        while time.monotonic() - started < 240:
            state = rest.get(path).body["data"]["state"]
            if state != "DEPLOYMENT_STATE_PENDING" and state != "DEPLOYMENT_STATE_DEPLOYING":
                assert state == "DEPLOYMENT_STATE_HEALTHY", rest.get(path).body
                healthy_s = time.monotonic() - started
                break
            time.sleep(0.1)
        assert healthy_s is not None, "not HEALTHY within 240 s"
        want = f"{MODEL}:{version['version']}"
        while not _serves(gateway.url, want):
            assert time.monotonic() - started < 240, f"the stable path never served {want}"
            time.sleep(0.1)
        job = finished_job(rest, created["job_id"], timeout=240)
        assert job["status"] == "JOB_STATE_SUCCEEDED", job
        outcomes.append({"version": version["version"], "to_healthy_s": round(healthy_s, 3),
                         "to_serving_s": round(time.monotonic() - started, 3),
                         "job_deploy_seconds": job["deployment_result"]["deploy_seconds"]})

    benchmark.pedantic(deploy, setup=register, rounds=ROUNDS, warmup_rounds=1)
    assert len(outcomes) == ROUNDS + 1
    benchmark.extra_info["rounds"] = outcomes
