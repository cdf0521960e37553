"""Evaluation and compression jobs under workers run in this test (no module-wide worker): a
compression whose earlier attempt registered its version before its worker died adopts it; an
evaluation whose worker died is run again by the next claim; two workers honour the per-kind limit."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

import pytest

from tests.jobs.conftest import BackgroundWorker, finished_job, registered_tiny_model
from tests.training.conftest import qa_rows
from trainforge.core.db.pool import open_pool
from trainforge.core.jobs import models as m
from trainforge.core.jobs.store import JobStore
from trainforge.core.jobs.worker import Worker, WorkerConfig
from trainforge.core.registry.artifacts import ArtifactStore
from trainforge.core.registry.store import RegistryStore

pytestmark = [pytest.mark.postgres, pytest.mark.envoy]


@pytest.fixture(scope="module")
def tiny_model(rest, settings, tmp_path_factory) -> str:
    return registered_tiny_model(rest, settings, tmp_path_factory, "kinds-workers")


@pytest.fixture(scope="module")
def eval_data(settings) -> str:
    path = settings.data_dir_root / "kinds-workers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in qa_rows(repeat=1)))
    return path.name


def _run_one(settings, database_url: str, job_id: str, dead_lease: bool = False) -> None:
    """Claims `job_id` as a worker would and executes it here. With `dead_lease`, an earlier worker
    first claims it with a lease that runs out at once and never runs it (it died)."""
    async def main() -> None:
        pool = await open_pool(database_url, min_size=1, max_size=4)
        try:
            jobs = JobStore(pool)
            registry = RegistryStore(pool, ArtifactStore(settings.artifacts_dir), settings.models_dir)
            if dead_lease:
                dead = await jobs.claim("dead-worker", timedelta(milliseconds=50))
                assert dead.job_id == job_id
                await asyncio.sleep(0.2)
            config = WorkerConfig(jobs_dir=settings.data_dir / "jobs", dsn=database_url, heartbeat_seconds=1.0,
                                  model_cache=settings.data_dir / "model-cache", data_root=settings.data_dir_root)
            job = await jobs.claim("resuming-worker", config.lease)
            assert job.job_id == job_id
            await Worker(jobs, registry, config, worker_id="resuming-worker").execute(job)
        finally:
            await pool.close()
    asyncio.run(main())


def test_a_compression_adopts_the_version_its_dead_attempt_registered(rest, settings, database_url, tiny_model):
    reply = rest.post(f"/api/training/models/{tiny_model}/compress",
                      {"compression_type": "quantization", "precision": "int8", "target_version": "1.0.0-adopt"})
    assert reply.status == 200, reply
    job_id = reply.body["data"]["job_id"]
    # What the dead attempt left: the target version, registered with the job in its lineage.
    left = rest.post("/api/training/models", {"name": tiny_model, "version": "1.0.0-adopt", "model_type": "compressed",
                                              "source": tiny_model, "lineage": {"job_id": job_id}})
    assert left.status == 200, left
    _run_one(settings, database_url, job_id, dead_lease=True)
    job = rest.get(f"/api/training/jobs/{job_id}").body["data"]
    assert job["status"] == "JOB_STATE_SUCCEEDED" and job["attempt"] == 2, job
    assert job["result_model_version_id"] == left.body["data"]["model_version_id"]
    assert not list((settings.data_dir / "jobs" / job_id).glob("attempt-*.reply.json"))  # nothing compressed again
    versions = [v["version"] for v in rest.get(f"/api/training/models/{tiny_model}/versions").body["data"]]
    assert versions.count("1.0.0-adopt") == 1


@pytest.mark.slow
def test_an_evaluation_whose_worker_died_is_run_again(rest, settings, database_url, tiny_model, eval_data):
    reply = rest.post(f"/api/training/evaluate/{tiny_model}", {"data_path": eval_data, "metrics": ["perplexity"]})
    assert reply.status == 200, reply
    job_id = reply.body["data"]["job_id"]
    _run_one(settings, database_url, job_id, dead_lease=True)
    job = rest.get(f"/api/training/jobs/{job_id}").body["data"]
    assert job["status"] == "JOB_STATE_SUCCEEDED" and job["attempt"] == 2, job
    assert job["evaluation_result"]["metrics"]["perplexity"] > 1
    history = rest.get(f"/api/training/jobs/{job_id}/events/history").body["data"]
    assert any("lease of the previous worker expired" in e["message"] for e in history)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.slow
def test_two_workers_run_one_evaluation_at_a_time_under_a_limit_of_one(rest, settings, database_url, tiny_model,
                                                                        eval_data):
    workers = [BackgroundWorker(settings, database_url, worker_id=f"limited-{i}", limits={m.EVALUATION: 1})
               for i in range(2)]
    body = {"data_path": eval_data, "metrics": ["perplexity"]}
    jobs = [rest.post(f"/api/training/evaluate/{tiny_model}", body).body["data"]["job_id"] for _ in range(2)]
    for w in workers:
        w.start()
    try:
        done = [finished_job(rest, job_id) for job_id in jobs]
    finally:
        for w in workers:
            w.stop()
    assert [d["status"] for d in done] == ["JOB_STATE_SUCCEEDED"] * 2, done
    first, second = sorted(done, key=lambda d: d["start_time"])
    assert _time(second["start_time"]) >= _time(first["end_time"]), (first, second)  # never side by side
    owners = {e["message"].split("worker ")[1].split(" ")[0] for d in done for e in
              rest.get(f"/api/training/jobs/{d['job_id']}/events/history").body["data"] if "claimed by" in e["message"]}
    assert owners <= {"limited-0", "limited-1"}
