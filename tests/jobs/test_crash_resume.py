"""SIGKILL a job's worker mid-training: after its lease expires another worker resumes the job
from its last checkpoint (the global step continues), the dead attempt can write nothing more,
and exactly one model version is registered."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.jobs.conftest import tiny_job, wait_for
from tests.training.conftest import build_tiny_model, qa_rows
from trainforge.core.db import migrate
from trainforge.core.db.pool import open_pool
from trainforge.core.jobs.spec import JobSpecPreparer
from trainforge.core.jobs.store import JobStore

TRAINFORGE = str(Path(sys.executable).with_name("trainforge"))


@pytest.fixture
def crash_env(postgres_cluster, tiny_model_dir):
    dsn = postgres_cluster.new_database("crash_resume")
    migrate.upgrade(dsn)
    data_dir = Path(tempfile.mkdtemp(prefix="trainforge-crash-"))
    shutil.copytree(tiny_model_dir, data_dir / "models" / "tiny-llama")
    (data_dir / "training-data").mkdir()
    (data_dir / "training-data" / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_rows(repeat=6)))
    env = {**os.environ, "DATABASE_URL": dsn, "TRAINFORGE_DATA_DIR": str(data_dir), "TRAINFORGE_JOB_LEASE_SECONDS": "3"}
    yield dsn, data_dir, env
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("crash-models") / "tiny-llama")


def _create_job(dsn: str, data_dir: Path) -> str:
    async def create() -> str:
        pool = await open_pool(dsn, min_size=1, max_size=2)
        try:
            spec = tiny_job("crash-model", hyperparameters={"epochs": 100, "max_steps": 400, "save_steps": 10,
                                                             "eval_steps": 100000})
            prepared = JobSpecPreparer(data_dir / "training-data", data_dir / "models").prepare(spec)
            return (await JobStore(pool).create("crash-model", prepared, "test", start=True)).job_id
        finally:
            await pool.close()

    return asyncio.run(create())


def _query(dsn: str, sql: str, *params):
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def _worker(env: dict) -> subprocess.Popen:
    return subprocess.Popen([TRAINFORGE, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def test_killed_worker_is_replaced_and_the_job_resumes(crash_env):
    dsn, data_dir, env = crash_env
    job_id = _create_job(dsn, data_dir)
    first = _worker(env)
    second = None
    try:
        wait_for(lambda: _query(dsn, "SELECT 1 FROM job_checkpoints WHERE job_id = %s AND step >= 20", job_id),
                 timeout=180)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        killed_at = _query(dsn, "SELECT max(step) AS step FROM job_checkpoints WHERE job_id = %s", job_id)[0]["step"]
        second = _worker(env)
        wait_for(lambda: _query(dsn, "SELECT state FROM jobs WHERE id = %s", job_id)[0]["state"] == "SUCCEEDED",
                 timeout=240)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)

    job = _query(dsn, "SELECT * FROM jobs WHERE id = %s", job_id)[0]
    assert job["attempt"] == 2
    events = _query(dsn, "SELECT * FROM job_events WHERE job_id = %s ORDER BY seq", job_id)
    claim = next(e["seq"] for e in events if "lease of the previous worker expired" in e["message"])
    after = [e for e in events if e["seq"] > claim and e["type"] == "PROGRESS"]
    # Resumed from the checkpoint, not from step 0: the first step after the takeover follows it.
    assert after and after[0]["progress"]["current_step"] > killed_at - 10
    steps = [e["progress"]["current_step"] for e in after]
    assert steps == sorted(steps) and steps[-1] == 400
    # The dead attempt wrote nothing after the takeover (every write is fenced by the attempt).
    assert all(e["progress"]["current_step"] >= after[0]["progress"]["current_step"] for e in after)
    versions = _query(dsn, "SELECT v.id FROM model_versions v WHERE v.lineage->>'job_id' = %s", job_id)
    assert len(versions) == 1 and str(versions[0]["id"]) == str(job["result_model_version_id"])
