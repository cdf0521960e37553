"""`trainforge jobs ...` against the suite's gRPC server. Jobs are put in the suite's database through
JobStore, with the events a worker would write (`train` goes through CreateJob: test_cli_train.py);
the suite's server runs no workers, so nothing claims them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid

import pytest
from psycopg.types.json import Jsonb

from tests.server.test_cli import TRAINFORGE, invoke, wide_env
from trainforge.core.db.pool import open_pool
from trainforge.core.jobs import models as m
from trainforge.core.jobs.store import JobStore, append_event


@pytest.fixture
def server(grpc_server) -> str:
    return f"127.0.0.1:{grpc_server.port}"


@pytest.fixture
def cli(server: str, api_keys):
    """`trainforge jobs ...` in-process with the admin key against the suite's server."""

    def run(*args: str, expect: int = 0) -> str:
        return invoke(*args, "--server", server, expect=expect, api_key=api_keys["admin"]).output
    return run


def _spec(name: str) -> dict:
    return {"name": name, "model": "smollm2-135m", "training_data": {"path": "chat.jsonl"}}


def _with_store(database_url: str, work):
    async def main():
        pool = await open_pool(database_url, min_size=1, max_size=2)
        try:
            return await work(JobStore(pool), pool)
        finally:
            await pool.close()
    return asyncio.run(main())


def _pending_job(database_url: str, name: str) -> str:
    return _with_store(database_url, lambda store, pool: _create(store, name))


async def _create(store: JobStore, name: str) -> str:
    return (await store.create(name, _spec(name), "cli-test", start=False)).job_id


def _trained_job(database_url: str, name: str) -> str:
    """A job that ran and succeeded, with the events a worker's reporter writes on the way."""

    async def work(store: JobStore, pool) -> str:
        job_id = await _create(store, name)
        async with pool.connection() as conn:
            await conn.execute("UPDATE jobs SET state = 'RUNNING', attempt = 1, start_time = now() WHERE id = %s",
                               (job_id,))
            await append_event(conn, job_id, m.STATE_CHANGED, "claimed by worker test (attempt 1)")
            for step in (5, 10):
                await append_event(conn, job_id, m.PROGRESS, progress={
                    "current_epoch": 1, "total_epochs": 1, "current_step": step, "total_steps": 10,
                    "percent": step * 10.0, "estimated_remaining": 60.0 - 6 * step},
                    metrics={"train_loss": 2.0 - step / 10, "tokens_per_sec": 1234.0})
            await append_event(conn, job_id, m.CHECKPOINT, "saved checkpoint-10", progress={"current_step": 10})
            # The reporter keeps the latest progress and metrics on the job row as well.
            await conn.execute("UPDATE jobs SET progress = %s, metrics = %s WHERE id = %s", (
                Jsonb({"current_epoch": 1, "total_epochs": 1, "current_step": 10, "total_steps": 10, "percent": 100.0}),
                Jsonb({"train_loss": 1.0, "tokens_per_sec": 1234.0}), job_id))
        assert await store.finish(job_id, 1, m.SUCCEEDED, "succeeded; registered cli-model:job-1")
        return job_id

    return _with_store(database_url, work)


def test_list_get_and_lifecycle(cli, database_url: str):
    job_id = _pending_job(database_url, "cli-job-lifecycle")

    listed = json.loads(cli("jobs", "list", "--json"))
    assert job_id in [j["job_id"] for j in listed["data"]]
    pending = json.loads(cli("jobs", "list", "--state", "pending", "--json"))["data"]
    assert job_id in [j["job_id"] for j in pending] and {j["status"] for j in pending} == {"JOB_STATE_PENDING"}
    done = json.loads(cli("jobs", "list", "--state", "SUCCEEDED", "--state", "failed", "--json"))["data"]
    assert job_id not in [j["job_id"] for j in done]
    table = cli("jobs", "list", "--state", "pending")
    assert job_id in table and "PENDING" in table  # the id whole, on any terminal: it is what the commands take
    assert "is not one of PENDING, QUEUED" in cli("jobs", "list", "--state", "sleeping", expect=2)

    got = json.loads(cli("jobs", "get", job_id, "--json"))["data"]
    assert (got["spec"]["name"], got["status"]) == ("cli-job-lifecycle", "JOB_STATE_PENDING")
    shown = cli("jobs", "get", job_id)
    assert "PENDING" in shown and "smollm2-135m" in shown and "chat.jsonl" in shown

    assert f"job {job_id} is QUEUED" in cli("jobs", "start", job_id)
    assert f"job {job_id} is PAUSED" in cli("jobs", "pause", job_id)
    assert f"job {job_id} is QUEUED" in cli("jobs", "resume", job_id)
    assert f"job {job_id} is CANCELLED" in cli("jobs", "cancel", job_id)
    refused = cli("jobs", "cancel", job_id, expect=1)
    assert "FAILED_PRECONDITION" in refused and "it is CANCELLED" in refused


def test_missing_and_malformed_ids(cli):
    missing = str(uuid.uuid4())
    out = cli("jobs", "get", missing, expect=1)
    assert "NOT_FOUND" in out and missing in out
    assert "NOT_FOUND" in cli("jobs", "cancel", missing, expect=1)
    assert "NOT_FOUND" in cli("jobs", "watch", missing, expect=1)
    assert "INVALID_ARGUMENT" in cli("jobs", "get", "not-a-job", expect=1)


def test_watch_replays_a_finished_job_and_exits_by_its_outcome(cli, database_url: str):
    succeeded = _trained_job(database_url, "cli-job-watched")
    out = cli("jobs", "watch", succeeded)
    assert "claimed by worker test" in out
    assert "checkpoint step 10" in out and "saved checkpoint-10" in out
    assert "10/10" in out and "loss 1" in out and "1,234 tok/s" in out
    assert f"job {succeeded} SUCCEEDED" in out
    shown = cli("jobs", "get", succeeded)
    assert "step 10/10 (100%)" in shown and "train_loss=1" in shown

    cancelled = _pending_job(database_url, "cli-job-watched-cancel")
    cli("jobs", "cancel", cancelled)
    out = cli("jobs", "watch", cancelled, expect=1)
    assert f"job {cancelled} CANCELLED" in out


def test_watch_follows_a_live_job(server: str, api_keys, cli, database_url: str):
    job_id = _pending_job(database_url, "cli-job-live")
    env = {**wide_env(), "TRAINFORGE_API_KEY": api_keys["viewer"], "TRAINFORGE_SERVER": server}
    watch = subprocess.Popen([TRAINFORGE, "jobs", "watch", job_id], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    try:
        first = watch.stdout.readline()  # the stream is open and has replayed the job's first event
        assert "job created (pending)" in first, first + watch.stderr.read()
        cli("jobs", "cancel", job_id)
        out, err = watch.communicate(timeout=15)  # WatchJob wakes on the NOTIFY, not its 5 s poll
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 1, out + err
    assert f"job {job_id} CANCELLED" in err


def test_delete_files_frees_an_ended_jobs_folder(cli, server: str, api_keys, database_url: str, settings):
    running = _pending_job(database_url, "cli-job-files-pending")
    refused = cli("jobs", "delete-files", running, expect=1)
    assert "FAILED_PRECONDITION" in refused and "it is PENDING" in refused

    job_id = _trained_job(database_url, "cli-job-files")
    folder = settings.jobs_dir / job_id / "output" / "checkpoints" / "step-00000010"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"\0" * 12_345)
    (settings.jobs_dir / job_id / "attempt-1.log").write_text("x" * 655)
    # A trainer may delete only its own jobs' files; this job belongs to another key.
    other = invoke("jobs", "delete-files", job_id, "--server", server, expect=1, api_key=api_keys["trainer"]).output
    assert "PERMISSION_DENIED" in other and folder.is_dir()

    assert f"job {job_id}: working files deleted, 13,000 bytes freed" in cli("jobs", "delete-files", job_id)
    assert not (settings.jobs_dir / job_id).exists()
    assert json.loads(cli("jobs", "delete-files", job_id, "--json"))["bytes_freed"] == "0"
