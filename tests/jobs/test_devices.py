"""GPU allocation for a worker process's jobs (core.jobs.devices), with fake GPU lists: which GPUs a
process may hand out, how many a job needs, holding, keeping, waiting and giving back; and the
queue's claim taking only jobs that fit the free GPUs. tests/jobs/test_worker_devices.py runs real
jobs through a WorkerGroup with a fake 2-GPU list."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from trainforge.core.db import migrate
from trainforge.core.db.pool import open_pool
from trainforge.core.jobs.devices import DeviceAllocator, visible_gpus
from trainforge.core.jobs.store import JobStore


def _no_nvml() -> int:
    raise AssertionError("NVML must not be asked when the GPUs are already known")


def test_visible_gpus_come_from_the_setting_then_cuda_visible_devices_then_nvml():
    assert visible_gpus("0,1,2,3", env={"CUDA_VISIBLE_DEVICES": "5"}, nvml_count=_no_nvml) == ("0", "1", "2", "3")
    assert visible_gpus("none", env={"CUDA_VISIBLE_DEVICES": "0,1"}, nvml_count=_no_nvml) == ()
    assert visible_gpus("auto", env={"CUDA_VISIBLE_DEVICES": "2, 3"}, nvml_count=_no_nvml) == ("2", "3")
    assert visible_gpus("auto", env={"CUDA_VISIBLE_DEVICES": ""}, nvml_count=_no_nvml) == ()
    # CUDA reads up to the first invalid entry: "-1" hides everything after it.
    assert visible_gpus("auto", env={"CUDA_VISIBLE_DEVICES": "1,-1,2"}, nvml_count=_no_nvml) == ("1",)
    assert visible_gpus("auto", env={"CUDA_VISIBLE_DEVICES": "GPU-8f3a,MIG-1c2d"}, nvml_count=_no_nvml) == \
        ("GPU-8f3a", "MIG-1c2d")
    assert visible_gpus("auto", env={}, nvml_count=lambda: 4) == ("0", "1", "2", "3")
    assert visible_gpus("auto", env={}, nvml_count=lambda: 0) == ()


def test_a_job_needs_its_world_size_on_a_gpu_host_and_nothing_on_a_cpu_host():
    gpu, cpu = DeviceAllocator(["0", "1", "2", "3"]), DeviceAllocator([])
    single = {"distributed": {"enabled": False}}
    pair = {"distributed": {"enabled": True, "devices": [0, 1]}}
    hostfile = {"distributed": {"enabled": True, "world_size": 8, "hostfile": "hosts"}}
    evaluation = {"model": "m:1"}  # a job kind without a distributed section: one process
    assert [gpu.needed(s) for s in (single, pair, hostfile, evaluation)] == [1, 2, 0, 1]
    assert [cpu.needed(s) for s in (single, pair, hostfile, evaluation)] == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="repeat"):
        DeviceAllocator(["0", "0"])


async def test_hold_keep_wait_and_release():
    devices = DeviceAllocator(["0", "1"])
    stop = asyncio.Event()
    first = await devices.hold_free(stop)
    assert first == ["0", "1"] and devices.free == ()
    first = devices.keep(first, 1)  # the job needs one; the other goes back at once
    assert first == ["0"] and devices.free == ("1",)
    second = devices.keep(await devices.hold_free(stop), 1)
    assert second == ["1"] and devices.free == ()

    # No GPU free: a third worker waits instead of claiming ...
    waiting = asyncio.create_task(devices.hold_free(stop))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    # ... until a job ends and gives its GPU back.
    devices.release(second)
    assert await asyncio.wait_for(waiting, 5) == ["1"]
    devices.release(["1"])
    devices.release(["1", "7"])  # twice, and an unknown name: harmless
    devices.release(first)
    assert devices.free == ("0", "1")  # lowest first, whatever the order of release
    with pytest.raises(ValueError, match="needs 3"):
        devices.keep(["0", "1"], 3)

    # A stopping worker stops waiting.
    taken = devices.take_free()
    waiting = asyncio.create_task(devices.hold_free(stop))
    await asyncio.sleep(0.1)
    stop.set()
    assert await asyncio.wait_for(waiting, 10) is None
    devices.release(taken)


async def test_a_cpu_host_never_waits():
    devices = DeviceAllocator([])
    stop = asyncio.Event()
    assert await asyncio.wait_for(devices.hold_free(stop), 1) == []
    assert await asyncio.wait_for(devices.hold_free(stop), 1) == []


@pytest.fixture
async def store(postgres_cluster):
    dsn = postgres_cluster.new_database("device_claims")
    migrate.upgrade(dsn)
    pool = await open_pool(dsn, min_size=1, max_size=4)
    yield JobStore(pool)
    await pool.close()


def _spec(world_size: int, hostfile: str | None = None) -> dict:
    return {"name": "d", "model": "m", "distributed": {"enabled": world_size > 1, "world_size": world_size},
            "resolved": {"world_size": world_size, "hostfile_path": hostfile}}


async def test_a_claim_takes_only_a_job_that_fits_the_free_gpus(store):
    lease = timedelta(seconds=30)
    big = await store.create("big", _spec(2), "k1", start=True)
    small = await store.create("small", _spec(1), "k2", start=True)
    placed = await store.create("placed", _spec(8, "/configs/hosts"), "k3", start=True)
    old = await store.create("old", {"name": "old", "model": "m"}, "k4", start=True)  # no resolved block: 1

    assert await store.claim("w0", lease, max_devices=0) is not None  # the hostfile job: its hosts, not ours
    one = await store.claim("w1", lease, max_devices=1)
    assert one.job_id == small.job_id  # the older 2-GPU job is skipped, not blocking
    assert (await store.claim("w2", lease, max_devices=1)).job_id == old.job_id
    assert await store.claim("w3", lease, max_devices=1) is None
    assert (await store.get(big.job_id)).state == "QUEUED"
    assert (await store.claim("w4", lease, max_devices=2)).job_id == big.job_id
    assert (await store.get(placed.job_id)).worker_id == "w0"
