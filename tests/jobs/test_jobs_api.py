"""Jobs through the Envoy gateway with a real worker: the seed's body, every violation at once,
an event stream in order, a registered model with lineage, cancel, pause and resume."""

from __future__ import annotations

import json
import urllib.request
import uuid

import psycopg
from psycopg.rows import dict_row

from tests.jobs.conftest import tiny_job, wait_for
from tests.server.test_cli import invoke
from tests.support import violations


def _job(rest, job_id: str) -> dict:
    reply = rest.get(f"/api/training/jobs/{job_id}")
    assert reply.status == 200, reply
    return reply.body["data"]


def _total_jobs(rest) -> int:
    return int(rest.get("/api/training/jobs?page_size=1").body["total_size"])


def test_bad_config_lists_every_violation_and_creates_nothing(rest, job_inputs, settings):
    before = _total_jobs(rest)
    outside = settings.data_dir / "outside.jsonl"
    outside.write_text('{"prompt": "a", "completion": "b"}\n')
    body = tiny_job("bad job!", hyperparameters={"learning_rate": -1, "batch_size": 0, "epochs": 0},
                    optimization={"optimizer": "lion", "scheduler": "sometimes"},
                    trainingData={"path": "../outside.jsonl", "validation_split": 0.9})
    reply = rest.post("/api/training/jobs", body)
    assert reply.status == 400, reply
    found = violations(reply)
    for field in ("name", "hyperparameters.learning_rate", "hyperparameters.batch_size", "hyperparameters.epochs",
                  "optimization.optimizer", "optimization.scheduler", "training_data.path",
                  "training_data.validation_split"):
        assert field in found, (field, found)
    assert "outside" in found["training_data.path"]
    missing = rest.post("/api/training/jobs", tiny_job("missing-file", trainingData={"path": "nope.jsonl"}))
    assert missing.status == 400 and "does not exist" in violations(missing)["training_data.path"]
    hub = rest.post("/api/training/jobs", tiny_job("hub-model", model="microsoft/DialoGPT-medium"))
    assert hub.status == 400 and "offline" in violations(hub)["model"]
    assert _total_jobs(rest) == before


def _stream_events(gateway_url: str, token: str, job_id: str, timeout: float = 180) -> list[dict]:
    request = urllib.request.Request(f"{gateway_url}/api/training/jobs/{job_id}/events",
                                     headers={"authorization": f"Bearer {token}"})
    events = []
    with urllib.request.urlopen(request, timeout=timeout) as response:
        assert response.status == 200
        for line in response:
            if line.strip():
                events.append(json.loads(line)["data"])
    return events


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_tiny_job_trains_streams_and_registers(rest, worker, gateway, api_keys, database_url, settings):
    name = f"tiny-{uuid.uuid4().hex[:6]}"
    created = rest.post("/api/training/jobs?start=true", tiny_job(name, hyperparameters={"eval_steps": 3}))
    assert created.status == 200, created
    job_id = created.body["data"]["job_id"]
    assert created.body["data"]["status"] == "JOB_STATE_QUEUED"
    assert created.body["data"]["spec"]["training_data"]["path"] == "qa.jsonl"

    events = _stream_events(gateway.url, api_keys["viewer"], job_id)
    assert [int(e["sequence"]) for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert "JOB_EVENT_TYPE_PROGRESS" in types and "JOB_EVENT_TYPE_EVALUATION" in types
    assert events[-1]["status"] == "JOB_STATE_SUCCEEDED", events[-1]
    progress = [e for e in events if e["type"] == "JOB_EVENT_TYPE_PROGRESS"]
    assert int(progress[-1]["progress"]["current_step"]) == int(progress[-1]["progress"]["total_steps"])
    evals = [e["metrics"]["eval_loss"] for e in events if e["type"] == "JOB_EVENT_TYPE_EVALUATION"]
    assert evals[-1] < evals[0], evals

    job = _job(rest, job_id)
    assert job["status"] == "JOB_STATE_SUCCEEDED" and job["progress"]["percent"] == 100
    assert job["metrics"]["train_loss"] > 0 and job["metrics"]["tokens_per_sec"] > 0
    version = rest.get(f"/api/training/models/{name}/versions/job-{job_id[:8]}").body["data"]
    assert version["model_version_id"] == job["result_model_version_id"]
    assert version["lineage"]["job_id"] == job_id and len(version["lineage"]["dataset_digest"]) == 64
    assert version["lineage"]["base_model"] == "tiny-llama" and version["artifact_count"] >= 3
    assert "eval_loss" in version["performance_metrics"]
    assert rest.post(f"/api/training/models/{name}/versions/job-{job_id[:8]}/verify", {}).body["data"]["ok"]
    # The worker's registration is audited in its transaction, as a change by the job's owner.
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        [record] = conn.execute("SELECT * FROM audit_log WHERE rpc = 'worker:RegisterJobVersion' AND resource = %s",
                                (f"{name}/job-{job_id[:8]}",)).fetchall()
    assert (record["key_id"], record["outcome"]) == (api_keys["admin"].split("_")[1], "OK")
    assert record["request_id"].startswith(f"job-{job_id}-") and record["client"] == "worker:test-worker"
    assert "rows verified" in invoke("audit", "verify", "--database-url", database_url).output
    # The version describes the model it holds: the tiny model's own config.json.
    tiny = json.loads((settings.models_dir / "tiny-llama" / "config.json").read_text())
    assert version["architecture"] == {
        "model_family": tiny["model_type"], "layers": tiny["num_hidden_layers"], "hidden_size": tiny["hidden_size"],
        "attention_heads": tiny["num_attention_heads"], "vocab_size": tiny["vocab_size"],
        "max_sequence_length": tiny["max_position_embeddings"]}, version["architecture"]
    # Lineage names files relative to their roots, never by server path.
    lineage = version["lineage"]
    leaked = [s for s in _strings(lineage) if s.startswith("/") or str(settings.data_dir) in s]
    assert not leaked, leaked
    assert lineage["config"]["training_data"]["path"] == lineage["config"]["resolved"]["data_path"] == "qa.jsonl"
    assert lineage["config"]["resolved"]["model_path"] == "tiny-llama"

    stats = rest.get("/api/training/statistics").body["data"]
    assert int(stats["jobs_by_state"]["SUCCEEDED"]) >= 1 and stats["average_training_seconds"] > 0


def _long_job(rest, name: str) -> str:
    body = tiny_job(name, hyperparameters={"epochs": 400, "max_steps": 4000, "save_steps": 5, "eval_steps": 100000})
    reply = rest.post("/api/training/jobs?start=true", body)
    assert reply.status == 200, reply
    job_id = reply.body["data"]["job_id"]
    wait_for(lambda: int(_job(rest, job_id)["progress"].get("current_step", 0)) >= 10)
    return job_id


def test_cancel_stops_a_running_job_and_keeps_its_checkpoint(rest, worker):
    job_id = _long_job(rest, f"cancel-{uuid.uuid4().hex[:6]}")
    reply = rest.post(f"/api/training/jobs/{job_id}/cancel", {})
    assert reply.status == 200, reply
    import time
    started = time.monotonic()
    wait_for(lambda: _job(rest, job_id)["status"] == "JOB_STATE_CANCELLED", timeout=15)
    assert time.monotonic() - started < 10
    checkpoints = rest.get(f"/api/training/jobs/{job_id}/checkpoints").body["data"]
    assert checkpoints and int(checkpoints[0]["step"]) >= 5
    assert rest.post(f"/api/training/jobs/{job_id}/resume", {}).status == 400  # a cancelled job stays cancelled


def test_pause_then_resume_continues_the_global_step(rest, worker):
    name = f"pause-{uuid.uuid4().hex[:6]}"
    body = tiny_job(name, hyperparameters={"epochs": 1000, "max_steps": 400, "save_steps": 5, "eval_steps": 100000})
    job_id = rest.post("/api/training/jobs?start=true", body).body["data"]["job_id"]
    wait_for(lambda: int(_job(rest, job_id)["progress"].get("current_step", 0)) >= 6)
    assert rest.post(f"/api/training/jobs/{job_id}/pause", {}).status == 200
    wait_for(lambda: _job(rest, job_id)["status"] == "JOB_STATE_PAUSED", timeout=30)
    paused_at = int(rest.get(f"/api/training/jobs/{job_id}/checkpoints").body["data"][0]["step"])
    assert rest.post(f"/api/training/jobs/{job_id}/resume", {}).body["data"]["status"] == "JOB_STATE_QUEUED"
    wait_for(lambda: _job(rest, job_id)["status"] == "JOB_STATE_SUCCEEDED", timeout=180)
    history = rest.get(f"/api/training/jobs/{job_id}/events/history?page_size=1000").body["data"]
    resumed = [e for e in history if e["type"] == "JOB_EVENT_TYPE_PROGRESS" and int(e.get("sequence")) >
               max(int(x["sequence"]) for x in history if "paused" in x["message"])]
    assert resumed and int(resumed[0]["progress"]["current_step"]) > paused_at
    assert int(_job(rest, job_id)["attempt"]) == 2


def test_event_stream_is_served_as_ndjson(rest, job_inputs):
    """WatchJob through the gateway: one JSON object per line, labelled application/x-ndjson as the
    OpenAPI document says (the transcoder alone labels it application/json)."""
    created = rest.post("/api/training/jobs", tiny_job(f"ndjson-{uuid.uuid4().hex[:6]}"))
    assert created.status == 200, created
    job_id = created.body["data"]["job_id"]
    assert rest.post(f"/api/training/jobs/{job_id}/cancel", {}).status == 200
    reply = rest.get(f"/api/training/jobs/{job_id}/events")  # the job has ended: the stream ends at once
    assert reply.status == 200, reply
    assert reply.headers["content-type"] == "application/x-ndjson", reply.headers
    lines = reply.raw.decode().splitlines()
    assert lines and all(json.loads(line)["data"]["job_id"] == job_id for line in lines), lines
    missing = rest.get(f"/api/training/jobs/{uuid.uuid4()}/events")
    assert missing.status == 404 and missing.headers["content-type"].startswith("application/json"), missing
