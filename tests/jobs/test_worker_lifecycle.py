"""How a worker lives and dies with its jobs: a supervision failure stops the job's processes
before the job is recorded as failed, a database hiccup during a heartbeat and a GPU probe that
NVML refuses do not fail the job, a stopping worker checkpoints its job and hands it back to the
queue, and a starting worker resumes at once the jobs of dead workers on its host."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pynvml
import pytest
from psycopg.rows import dict_row

from tests.jobs.conftest import BackgroundWorker, tiny_job, wait_for
from tests.training.conftest import qa_rows
from trainforge.core.db import migrate
from trainforge.core.db.pool import open_pool
from trainforge.core.jobs import models as m
from trainforge.core.jobs.spec import JobSpecPreparer
from trainforge.core.jobs.store import JobStore

TRAINFORGE = str(Path(sys.executable).with_name("trainforge"))


@pytest.fixture(scope="module")
def dsn(postgres_cluster) -> str:
    # A database of its own: no job another module left queued is claimed by these workers.
    url = postgres_cluster.new_database("worker_lifecycle")
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="module")
def inputs(settings, request) -> dict[str, str]:
    settings.ensure_dirs()  # the suite's server makes them; these tests may run without it
    return request.getfixturevalue("job_inputs")


def _run(dsn: str, work):
    async def main():
        pool = await open_pool(dsn, min_size=1, max_size=2)
        try:
            return await work(JobStore(pool))
        finally:
            await pool.close()
    return asyncio.run(main())


def _create(dsn: str, settings, name: str, **hyperparameters) -> str:
    spec = tiny_job(name, hyperparameters={"eval_steps": 100000, **hyperparameters})
    prepared = JobSpecPreparer(settings.data_dir_root, settings.models_dir).prepare(spec)
    return _run(dsn, lambda s: s.create(name, prepared, "test", start=True)).job_id


def _query(dsn: str, sql: str, *params):
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def _job(dsn: str, job_id: str) -> dict:
    return _query(dsn, "SELECT * FROM jobs WHERE id = %s", job_id)[0]


def _ended(dsn: str, job_id: str, timeout: float = 180) -> dict:
    wait_for(lambda: _job(dsn, job_id)["state"] in m.TERMINAL, timeout=timeout)
    return _job(dsn, job_id)


def _processes_of(job_id: str) -> list[int]:
    """Live processes whose command line names the job's folder (its config and output)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if job_id in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def _kill_leftovers(job_id: str) -> None:
    for pid in _processes_of(job_id):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- item 6: supervision failures ------------------------------------------------------------------

def test_nvml_refusing_gpu_utilisation_does_not_fail_the_job(dsn, settings, inputs, monkeypatch):
    # A MIG instance: NVML lists the device and reads its memory, but utilisation is NOT_SUPPORTED.
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 1)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: object())
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", lambda h: SimpleNamespace(used=512 * 2**20))

    def not_supported(handle):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetUtilizationRates", not_supported)
    job_id = _create(dsn, settings, "mig-probe", max_steps=5)
    worker = BackgroundWorker(settings, dsn, lease_seconds=1.5)  # a heartbeat every 0.5 s
    worker.start()
    try:
        job = _ended(dsn, job_id)
    finally:
        worker.stop()
    assert job["state"] == m.SUCCEEDED, job["error"]
    # What could be measured is reported; what NVML refused is left out.
    assert job["resources"]["gpu_memory_mb"] == 512 and "cpu_percent" in job["resources"]
    assert "gpu_utilization" not in job["resources"]


def test_transient_database_errors_in_heartbeats_are_retried(dsn, settings, inputs):
    failures = []

    class FlakyHeartbeats(JobStore):
        async def heartbeat(self, *args, **kwargs):
            if len(failures) < 2:
                failures.append(time.monotonic())
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return await super().heartbeat(*args, **kwargs)

    job_id = _create(dsn, settings, "flaky-heartbeat", max_steps=5)
    worker = BackgroundWorker(settings, dsn, lease_seconds=3.0, jobs_class=FlakyHeartbeats)
    worker.start()
    try:
        job = _ended(dsn, job_id)
    finally:
        worker.stop()
    assert len(failures) == 2
    assert job["state"] == m.SUCCEEDED and job["attempt"] == 1, job["error"]


def test_a_supervision_failure_stops_the_job_before_it_is_marked_failed(dsn, settings, inputs):
    at_finish: dict[str, list[int]] = {}

    class BrokenHeartbeats(JobStore):
        async def heartbeat(self, *args, **kwargs):
            raise RuntimeError("heartbeat bug")

        async def finish(self, job_id, attempt, state, message, **kwargs):
            at_finish[job_id] = _processes_of(job_id)  # what still runs when the job is recorded
            return await super().finish(job_id, attempt, state, message, **kwargs)

    job_id = _create(dsn, settings, "broken-supervision", max_steps=5000, epochs=1000)
    worker = BackgroundWorker(settings, dsn, lease_seconds=3.0, jobs_class=BrokenHeartbeats)
    worker.start()
    try:
        job = _ended(dsn, job_id, timeout=60)
        assert job["state"] == m.FAILED and "heartbeat bug" in job["error"]["message"]
        assert at_finish[job_id] == [], "the job was marked FAILED while its processes still ran"
        assert _processes_of(job_id) == []
    finally:
        worker.stop()
        _kill_leftovers(job_id)


# -- item 5: leases of dead workers on this host ----------------------------------------------------

def test_a_starting_worker_resumes_at_once_the_jobs_of_dead_workers_on_its_host(dsn, settings):
    gone = subprocess.Popen(["true"])
    gone.wait()
    host = socket.gethostname()
    holders = {"dead": f"{host}:{gone.pid}:a1b2c3", "alive": f"{host}:{os.getpid()}:d4e5f6",
               "elsewhere": f"other-host:{gone.pid}:a7b8c9"}

    async def claim_all(store: JobStore) -> dict[str, str]:
        ids = {}
        for label, worker_id in holders.items():
            # Stored as is: the worker that resumes it fails it at once (no such model), which is
            # all this test needs to see it claimed.
            await store.create(f"held-{label}", {"name": "x", "model": "no-such-model"}, "test", start=True)
            ids[label] = (await store.claim(worker_id, timedelta(hours=1))).job_id
        return ids

    ids = _run(dsn, claim_all)
    worker = BackgroundWorker(settings, dsn)
    started = time.monotonic()
    worker.start()
    try:
        # The lease (1 h) is not waited out: the dead worker's job is taken over within seconds.
        wait_for(lambda: _job(dsn, ids["dead"])["attempt"] == 2, timeout=30)
        assert time.monotonic() - started < 30
        events = _query(dsn, "SELECT message FROM job_events WHERE job_id = %s ORDER BY seq", ids["dead"])
        assert any(f"process {gone.pid} is not running" in e["message"] for e in events)
        time.sleep(1.0)
        # A live worker of this host and a worker of another host keep their jobs.
        for label in ("alive", "elsewhere"):
            job = _job(dsn, ids[label])
            assert (job["state"], job["attempt"], job["worker_id"]) == (m.RUNNING, 1, holders[label])
    finally:
        worker.stop()


# -- item 7: shutdown checkpoints and hands the job back --------------------------------------------

@pytest.fixture
def worker_data_dir(settings, inputs):
    data_dir = Path(tempfile.mkdtemp(prefix="trainforge-lifecycle-"))
    shutil.copytree(settings.models_dir / "tiny-llama", data_dir / "models" / "tiny-llama")
    (data_dir / "training-data").mkdir()
    (data_dir / "training-data" / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_rows(repeat=6)))
    yield data_dir
    shutil.rmtree(data_dir, ignore_errors=True)


def _cli_worker(dsn: str, data_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": dsn, "TRAINFORGE_DATA_DIR": str(data_dir),
           "TRAINFORGE_JOB_LEASE_SECONDS": "6"}
    return subprocess.Popen([TRAINFORGE, "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def test_sigterm_to_a_worker_checkpoints_the_job_and_the_next_worker_resumes_there(dsn, worker_data_dir):
    data_dir = worker_data_dir
    spec = tiny_job("released", hyperparameters={"max_steps": 5000, "epochs": 1000, "save_steps": 1000,
                                                 "eval_steps": 100000})
    prepared = JobSpecPreparer(data_dir / "training-data", data_dir / "models").prepare(spec)
    job_id = _run(dsn, lambda s: s.create("released", prepared, "test", start=True)).job_id
    first = _cli_worker(dsn, data_dir)
    second = None
    try:
        # Past step 5, with no checkpoint yet (save_steps 1000): stopping now used to lose them all.
        wait_for(lambda: _job(dsn, job_id)["progress"].get("current_step", 0) >= 5, timeout=120)
        assert _query(dsn, "SELECT * FROM job_checkpoints WHERE job_id = %s", job_id) == []
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=90)
        assert first.returncode == 0, err

        job = _job(dsn, job_id)
        assert job["state"] == m.QUEUED and job["attempt"] == 1, job
        [checkpoint] = _query(dsn, "SELECT * FROM job_checkpoints WHERE job_id = %s", job_id)
        assert checkpoint["step"] >= 5 and job["last_checkpoint"] == checkpoint["path"]
        assert Path(checkpoint["path"]).name == f"step-{checkpoint['step']:08d}"
        events = [e["message"] for e in _query(dsn, "SELECT message FROM job_events WHERE job_id = %s "
                                                    "ORDER BY seq", job_id)]
        assert any(f"released at step {checkpoint['step']}" in e for e in events), events
        assert _processes_of(job_id) == []

        # The next worker resumes from that very step.
        second = _cli_worker(dsn, data_dir)
        wait_for(lambda: _job(dsn, job_id)["attempt"] == 2 and _query(
            dsn, "SELECT 1 FROM job_events WHERE job_id = %s AND type = 'PROGRESS' AND seq > "
                 "(SELECT max(seq) FROM job_events WHERE job_id = %s AND message LIKE 'claimed by worker%%')",
            job_id, job_id), timeout=120)
        claim = _query(dsn, "SELECT max(seq) AS seq FROM job_events WHERE job_id = %s "
                            "AND message LIKE 'claimed by worker%%'", job_id)[0]["seq"]
        first_step = _query(dsn, "SELECT progress FROM job_events WHERE job_id = %s AND type = 'PROGRESS' "
                                 "AND seq > %s ORDER BY seq LIMIT 1", job_id, claim)[0]["progress"]["current_step"]
        assert first_step == checkpoint["step"] + 1
        _run(dsn, lambda s: s.cancel(job_id))
        assert _ended(dsn, job_id, timeout=60)["state"] == m.CANCELLED
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
        _kill_leftovers(job_id)
