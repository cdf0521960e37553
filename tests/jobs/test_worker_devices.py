"""Real jobs through workers claiming from the queue (a private database, the tiny model, the CPU):
a `distributed: {enabled: true, devices: [0, 1]}` job runs as two ranks over gloo and succeeds, and
two concurrent jobs of a WorkerGroup given a fake 2-GPU list each get a GPU of their own (read from
the running processes' environment) and give it back when cancelled.

Timing on 2 busy CPU cores: the two-rank job ~20 s once DeepSpeed's shared-memory comm op is built
(the first run on a machine builds it, ~25 s more, cached under TORCH_EXTENSIONS_DIR as
tests/training/test_deepspeed.py caches it); the two concurrent jobs a few seconds (cancelled while
they import torch)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path

import psutil
import pytest

from tests.jobs.conftest import tiny_job
from tests.training.conftest import build_tiny_model, qa_rows
from trainforge.core.db import migrate
from trainforge.core.db.pool import open_pool
from trainforge.core.jobs import models as m
from trainforge.core.jobs.devices import DeviceAllocator
from trainforge.core.jobs.spec import JobSpecPreparer
from trainforge.core.jobs.store import JobStore
from trainforge.core.jobs.worker import Worker
from trainforge.core.registry.artifacts import ArtifactStore
from trainforge.core.registry.store import RegistryStore
from trainforge.core.settings import load_settings
from trainforge.core.training.process_contract import TrainResult
from trainforge.server.service import WorkerGroup, worker_config

EXTENSIONS = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "trainforge" / "torch_extensions")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("device-models") / "tiny-llama")


@pytest.fixture
def queue(postgres_cluster, tmp_path, tiny_model):
    """Settings on a private database and data dir holding the tiny model and the QA data."""
    dsn = postgres_cluster.new_database("worker_devices")
    migrate.upgrade(dsn)
    settings = load_settings(env={}, data_dir=str(tmp_path / "data"), database_url=dsn, job_lease_seconds=6)
    settings.ensure_dirs()
    shutil.copytree(tiny_model, settings.models_dir / "tiny-llama")
    (settings.data_dir_root / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_rows(repeat=6)))
    # The DeepSpeed op build is shared with the other DeepSpeed tests (~25 s once per machine).
    EXTENSIONS.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "jobs").mkdir()
    (settings.data_dir / "jobs" / ".torch_extensions").symlink_to(EXTENSIONS, target_is_directory=True)
    return settings, dsn


async def _queue_jobs(store: JobStore, settings, *specs: dict) -> list[str]:
    preparer = JobSpecPreparer(settings.data_dir_root, settings.models_dir)
    return [(await store.create(s["name"], preparer.prepare(s), "test", start=True)).job_id for s in specs]


async def _until_finished(store: JobStore, job_ids: list[str], timeout: float) -> list[m.Job]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        jobs = [await store.get(j) for j in job_ids]
        if all(j.state in (m.SUCCEEDED, m.FAILED, m.CANCELLED, m.PAUSED) for j in jobs):
            return jobs
        assert asyncio.get_running_loop().time() < deadline, [(j.job_id, j.state) for j in jobs]
        await asyncio.sleep(0.5)


def _log(settings, job_id: str) -> str:
    return (settings.data_dir / "jobs" / job_id / "attempt-1.log").read_text(errors="replace")


async def test_a_two_device_job_runs_two_ranks_through_the_worker(queue):
    """Before the fix this job validated as world size 2 and ran as one process."""
    pytest.importorskip("deepspeed")
    settings, dsn = queue
    pool = await open_pool(dsn, min_size=1, max_size=4)
    stop = asyncio.Event()
    try:
        store = JobStore(pool)
        registry = RegistryStore(pool, ArtifactStore(settings.artifacts_dir), settings.models_dir)
        spec = tiny_job("two-ranks", hyperparameters={"epochs": 1}, distributed={"enabled": True, "devices": [0, 1]})
        [job_id] = await _queue_jobs(store, settings, spec)
        # A CPU host (no GPU to hand out): the two ranks run on DeepSpeed's CPU accelerator over gloo.
        worker = Worker(store, registry, worker_config(settings, dsn), worker_id="two-rank-worker",
                        devices=DeviceAllocator([]))
        running = asyncio.create_task(worker.run(stop))
        [job] = await _until_finished(store, [job_id], timeout=240)
        log = _log(settings, job_id)
        assert job.state == m.SUCCEEDED, (job.error, log[-3000:])
        result = TrainResult.read(settings.data_dir / "jobs" / job_id / "output")
        assert result.world_size == 2 and result.status == "succeeded"
        assert "2 process(es)" in log
        assert re.search(r"--num_gpus', '2'|num_local_procs=2|dist_world_size=2", log), log[-3000:]
        events = await store.events(job_id, 0, 1000)
        assert any("2 process(es) on cpu" in e.message for e in events)
        version = await registry.get_version("two-ranks", f"job-{job_id[:8]}")
        assert version.lineage.dataset_digest == result.dataset_sha256 and version.parameter_count == \
            result.parameter_count > 0
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)
        await pool.close()


def _job_process_env(job_ids: list[str]) -> dict[str, str]:
    """job id -> CUDA_VISIBLE_DEVICES of its running training process, read from /proc."""
    found: dict[str, str] = {}
    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get("TRAINFORGE_JOB_ID") in job_ids:
            found[env["TRAINFORGE_JOB_ID"]] = env.get("CUDA_VISIBLE_DEVICES", "(unset)")
    return found


async def test_two_concurrent_jobs_get_a_gpu_each(queue):
    """Both jobs run at once, each process seeing only its own GPU; cancelled, both give it back."""
    settings, dsn = queue
    pool = await open_pool(dsn, min_size=1, max_size=8)
    group = None
    try:
        store = JobStore(pool)
        registry = RegistryStore(pool, ArtifactStore(settings.artifacts_dir), settings.models_dir)
        job_ids = await _queue_jobs(store, settings, *(tiny_job(f"gpu-{i}", hyperparameters={"epochs": 50})
                                                       for i in range(2)))
        group = WorkerGroup(store, registry, worker_config(settings, dsn), 2, gpus=["0", "1"])
        group.start()
        deadline = asyncio.get_running_loop().time() + 60
        while len(seen := await asyncio.to_thread(_job_process_env, job_ids)) < 2:
            assert asyncio.get_running_loop().time() < deadline, seen
            await asyncio.sleep(0.2)
        assert sorted(seen.values()) == ["0", "1"], seen
        assert group.devices.free == ()
        for job_id, gpu in seen.items():
            assert f"CUDA_VISIBLE_DEVICES={gpu}" in _log(settings, job_id)
            await store.cancel(job_id)
        jobs = await _until_finished(store, job_ids, timeout=60)
        assert [j.state for j in jobs] == [m.CANCELLED, m.CANCELLED]
        deadline = asyncio.get_running_loop().time() + 10
        while group.devices.free != ("0", "1"):  # given back however the job ended
            assert asyncio.get_running_loop().time() < deadline, group.devices.free
            await asyncio.sleep(0.1)
    finally:
        if group is not None:
            await group.stop()
        await pool.close()
