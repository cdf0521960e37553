"""Evaluation and compression as jobs, through the Envoy gateway and a real worker: the call returns
a QUEUED job at once, the result lands on the job, a bad request is refused with nothing queued,
and cancelling a running evaluation stops its child process."""

from __future__ import annotations

import json
import time

import psutil
import psycopg
import pytest

from tests.jobs.conftest import finished_job, registered_tiny_model, wait_for
from tests.jobs.test_jobs_api import _stream_events
from tests.support import violations
from tests.training.conftest import qa_rows

pytestmark = [pytest.mark.postgres, pytest.mark.envoy]


@pytest.fixture(scope="module")
def tiny_model(rest, settings, tmp_path_factory) -> str:
    return registered_tiny_model(rest, settings, tmp_path_factory, "kinds")


@pytest.fixture(scope="module")
def eval_data(settings) -> str:
    path = settings.data_dir_root / "kinds-eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in qa_rows(repeat=1)))
    return path.name


def _timed_post(rest, path: str, body: dict):
    started = time.monotonic()
    reply = rest.post(path, body)
    return reply, time.monotonic() - started


def _total_jobs(rest) -> int:
    return int(rest.get("/api/training/jobs?page_size=1").body["total_size"])


def test_evaluate_returns_a_job_at_once_and_the_result_lands_on_it(rest, worker, gateway, api_keys, tiny_model,
                                                                     eval_data):
    reply, seconds = _timed_post(rest, f"/api/training/evaluate/{tiny_model}",
                                 {"data_path": eval_data, "metrics": ["perplexity", "f1_score"], "max_new_tokens": 4})
    assert reply.status == 200, reply
    assert seconds < 1.0, seconds  # queued, not run: the worker's child loads the model
    job = reply.body["data"]
    assert (job["status"], job["kind"]) == ("JOB_STATE_QUEUED", "JOB_KIND_EVALUATION")
    assert job["evaluation"]["version"] == "1.0.0"  # "latest" fixed when the job was created
    events = _stream_events(gateway.url, api_keys["viewer"], job["job_id"])  # WatchJob until it ends
    assert events[-1]["status"] == "JOB_STATE_SUCCEEDED", events[-1]
    done = rest.get(f"/api/training/jobs/{job['job_id']}").body["data"]
    result = done["evaluation_result"]
    assert (result["model_name"], result["version"]) == (tiny_model, "1.0.0")
    assert result["metrics"]["perplexity"] > 1 and "f1_score" in result["metrics"]
    assert result["num_samples"] == len(qa_rows(repeat=1)) and result["duration_seconds"] > 0
    kinds = rest.get("/api/training/jobs?kinds=JOB_KIND_EVALUATION&page_size=1000").body["data"]
    assert job["job_id"] in {j["job_id"] for j in kinds} and {j["kind"] for j in kinds} == {"JOB_KIND_EVALUATION"}


def test_compress_returns_a_job_at_once_and_registers_the_version(rest, worker, tiny_model, database_url, api_keys):
    reply, seconds = _timed_post(rest, f"/api/training/models/{tiny_model}/compress",
                                 {"compression_type": "quantization", "precision": "int8"})
    assert reply.status == 200, reply
    assert seconds < 1.0, seconds
    job = reply.body["data"]
    assert (job["status"], job["kind"]) == ("JOB_STATE_QUEUED", "JOB_KIND_COMPRESSION")
    assert job["compression"]["target_version"] == "1.0.0-int8" and job["compression"]["mode"] == "w8a8_dynamic"
    done = finished_job(rest, job["job_id"])
    assert done["status"] == "JOB_STATE_SUCCEEDED", done
    version = rest.get(f"/api/training/models/{tiny_model}/versions/1.0.0-int8").body["data"]
    assert done["result_model_version_id"] == version["model_version_id"]
    assert version["lineage"]["job_id"] == job["job_id"] and version["model_type"] == "compressed"
    report = done["compression_result"]
    assert report["model_version_id"] == version["model_version_id"] and report["gate_passed"]
    assert report["metrics"] == version["performance_metrics"] and 0 < int(report["size_bytes"])
    # The worker's registration is audited in its transaction, as a change by the job's owner.
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT key_id, outcome, request_id FROM audit_log WHERE rpc = "
                            "'worker:RegisterCompressedVersion' AND resource = %s",
                            (f"{tiny_model}/1.0.0-int8",)).fetchall()
    assert [(r[0], r[1]) for r in rows] == [(api_keys["admin"].split("_")[1], "OK")]
    assert rows[0][2].startswith(f"job-{job['job_id']}-")
    # The target exists now: a second request is refused at once, nothing queued.
    before = _total_jobs(rest)
    again = rest.post(f"/api/training/models/{tiny_model}/compress",
                      {"compression_type": "quantization", "precision": "int8", "version": "1.0.0"})
    assert again.status == 409, again
    assert _total_jobs(rest) == before


def test_bad_requests_are_refused_whole_and_queue_nothing(rest, tiny_model, eval_data):
    before = _total_jobs(rest)
    bad = rest.post(f"/api/training/evaluate/{tiny_model}",
                    {"data_path": "../outside.jsonl", "metrics": ["vibes"], "max_samples": -1, "batch_size": 999})
    assert bad.status == 400, bad
    assert set(violations(bad)) == {"data_path", "metrics", "max_samples", "batch_size"}
    assert rest.post("/api/training/evaluate/no-such-model", {"data_path": eval_data}).status == 404
    missing_version = rest.post(f"/api/training/evaluate/{tiny_model}", {"data_path": eval_data, "version": "9.9"})
    assert missing_version.status == 404, missing_version
    bad = rest.post(f"/api/training/models/{tiny_model}/compress",
                    {"compression_type": "pruning", "precision": "int4", "mode": "w4a16"})
    assert bad.status == 400 and set(violations(bad)) == {"compression_type", "precision", "mode"}, bad
    assert rest.post("/api/training/models/no-such-model/compress",
                     {"compression_type": "quantization", "precision": "int8"}).status == 404
    assert _total_jobs(rest) == before


def _children_of(job_id: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if job_id in " ".join(proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def test_cancel_of_a_running_evaluation_stops_its_child_process(rest, worker, settings, tiny_model):
    # Perplexity of 60,000 rows one at a time: minutes of work, cancelled after it started.
    path = settings.data_dir_root / "kinds-long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in qa_rows(repeat=3000)))
    reply = rest.post(f"/api/training/evaluate/{tiny_model}",
                      {"data_path": path.name, "metrics": ["perplexity"], "batch_size": 1})
    assert reply.status == 200, reply
    job_id = reply.body["data"]["job_id"]
    wait_for(lambda: rest.get(f"/api/training/jobs/{job_id}").body["data"]["status"] == "JOB_STATE_RUNNING",
             timeout=60)
    children = wait_for(lambda: _children_of(job_id), timeout=30)
    cancelled = rest.post(f"/api/training/jobs/{job_id}/cancel", {})
    assert cancelled.status == 200 and cancelled.body["data"]["status"] == "JOB_STATE_CANCELLING", cancelled
    started = time.monotonic()
    done = finished_job(rest, job_id, timeout=30)
    assert done["status"] == "JOB_STATE_CANCELLED", done
    assert time.monotonic() - started < 15
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive and not _children_of(job_id)
    assert "evaluation_result" not in done


@pytest.mark.slow  # ~30 s on 2 busy cores: two evaluations and a compression; the API tests above are the fast path
def test_cli_evaluate_and_compress_wait_for_their_jobs_and_print_the_result(worker, grpc_server, api_keys,
                                                                            tiny_model, eval_data):
    from tests.server.test_cli import invoke

    server = ("--server", f"127.0.0.1:{grpc_server.port}")
    out = invoke("models", "evaluate", tiny_model, "--data", eval_data, "--metric", "perplexity", *server,
                 api_key=api_keys["trainer"]).output
    assert "queued job" in out and "SUCCEEDED" in out and "perplexity=" in out, out
    out = invoke("models", "compress", tiny_model, "--version", "1.0.0", "--mode", "w8a16", "--target-version", "1.0.0-cli", *server,
                 api_key=api_keys["trainer"]).output
    assert "SUCCEEDED" in out and f"registered {tiny_model}:1.0.0-cli" in out, out
    job = json.loads(invoke("models", "evaluate", tiny_model, "--data", eval_data, "--version", "1.0.0-cli",
                            "--metric", "perplexity", "--no-wait", "--json", *server, api_key=api_keys["trainer"]).stdout)
    assert job["status"] == "JOB_STATE_QUEUED" and job["evaluation"]["version"] == "1.0.0-cli"
    watched = invoke("jobs", "watch", job["job_id"], *server, api_key=api_keys["trainer"]).output
    assert "SUCCEEDED" in watched and "perplexity=" in watched, watched
    refused = invoke("models", "evaluate", tiny_model, "--data", "../nope.jsonl", *server, expect=1,
                     api_key=api_keys["trainer"]).output
    assert "INVALID_ARGUMENT" in refused and "data_path" in refused
