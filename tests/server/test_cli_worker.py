"""`trainforge worker` as a real process on a fresh database: it claims a queued job, runs it,
records the outcome, and stops cleanly on SIGTERM; without a database it says so."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import psycopg

from tests.server.test_cli import TRAINFORGE, app, runner, wide_env
from trainforge.core.db import migrate
from trainforge.core.db.pool import open_pool
from trainforge.core.jobs import models as m
from trainforge.core.jobs.store import JobStore


def _store(dsn: str, work):
    async def main():
        pool = await open_pool(dsn, min_size=1, max_size=1)
        try:
            return await work(JobStore(pool))
        finally:
            await pool.close()
    return asyncio.run(main())


def test_worker_claims_runs_and_records_a_job(postgres_cluster, tmp_path: Path):
    dsn = postgres_cluster.new_database("cli_worker")
    migrate.upgrade(dsn)
    # Stored as is (no CreateJob validation): the training process rejects it and the job fails,
    # which is all this test needs to see the worker claim, launch and record.
    spec = {"name": "cli-worker-job", "model": "no-such-model", "training_data": {"path": "missing.jsonl"}}
    job_id = _store(dsn, lambda s: s.create("cli-worker-job", spec, "cli-test", start=True)).job_id

    worker = subprocess.Popen([TRAINFORGE, "worker", "--database-url", dsn, "--data-dir", str(tmp_path),
                               "--concurrency", "2", "--gpus", "0,1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=wide_env())
    try:
        banner = worker.stdout.readline()
        assert "2 worker(s) claiming jobs from" in banner and "on GPUs 0,1" in banner, banner
        # The process heartbeats as one worker row, idle or busy (GetSystemHealth's workers component).
        deadline = time.monotonic() + 30
        while not (rows := _rows(dsn, "SELECT pid, concurrency, gpus FROM workers")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rows == [(worker.pid, 2, ["0", "1"])]
        deadline = time.monotonic() + 60
        while (job := _store(dsn, lambda s: s.get(job_id))).state not in m.TERMINAL and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "workers stopped" in out
    assert job.state == m.FAILED and job.attempt == 1 and job.error["message"], job
    events = _store(dsn, lambda s: s.events(job_id, 0, 100))
    assert any("claimed by worker" in e.message for e in events)
    assert "CUDA_VISIBLE_DEVICES=0" in (tmp_path / "jobs" / job_id / "attempt-1.log").read_text()
    assert _rows(dsn, "SELECT id FROM workers") == []  # removed on a clean stop


def _rows(dsn: str, query: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


def test_worker_without_a_database_says_so(tmp_path: Path):
    result = runner.invoke(app, ["worker", "--data-dir", str(tmp_path / "nothing-runs-here")],
                           env={"DATABASE_URL": None, "TRAINFORGE_DATABASE_URL": None})
    assert result.exit_code == 1, result.output
    assert "no database" in result.output and "DATABASE_URL" in result.output
    # It never starts an embedded cluster of its own: that would take the data directory from `serve`.
    assert not (tmp_path / "nothing-runs-here" / "postgres").exists()


class _StubWorker:
    """Stands in for core.jobs.worker.Worker inside a WorkerGroup."""

    def __init__(self, behaviour: str):
        self.worker_id, self.behaviour, self.runs = f"stub-{behaviour}", behaviour, 0

    async def run(self, stop: asyncio.Event) -> None:
        self.runs += 1
        if self.behaviour == "fails-once" and self.runs == 1:
            raise OSError("database went away")
        if self.behaviour == "busy":
            await asyncio.sleep(3600)  # a job that does not look at the stop event
        await stop.wait()


async def test_worker_group_restarts_a_failed_worker_and_cancels_a_busy_one(monkeypatch):
    from trainforge.server import service

    monkeypatch.setattr(service, "WORKER_RESTART_SECONDS", 0.01)
    group = service.WorkerGroup(jobs=None, registry=None, config=None, count=0, gpus=[], heartbeat=False)
    flaky, busy, idle = _StubWorker("fails-once"), _StubWorker("busy"), _StubWorker("idle")
    group.workers = [flaky, busy, idle]
    group.start()
    await asyncio.sleep(0.1)
    assert flaky.runs == 2  # restarted after its failure
    started = time.monotonic()
    await group.stop(grace=0.2)
    assert time.monotonic() - started < 2  # the busy one was cancelled after the grace period
