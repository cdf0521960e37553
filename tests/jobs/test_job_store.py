"""The job state machine, the queue and its leases against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from trainforge.core.db import migrate
from trainforge.core.db.pool import open_pool
from trainforge.core.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from trainforge.core.jobs import models as m
from trainforge.core.jobs.queue_wake import QueueWake
from trainforge.core.jobs.reporter import LeaseLost, PostgresReporter
from trainforge.core.jobs.store import JobStore

SPEC = {"name": "demo", "model": "smollm2-135m", "training_data": {"path": "/data/x.jsonl"}}


@pytest.fixture
def store_dsn(postgres_cluster) -> str:
    dsn = postgres_cluster.new_database("job_store")
    migrate.upgrade(dsn)
    return dsn


@pytest.fixture
async def store(store_dsn):
    pool = await open_pool(store_dsn, min_size=1, max_size=8)
    yield JobStore(pool, max_active_per_key=2)
    await pool.close()


async def test_lifecycle_and_event_log(store):
    job = await store.create("demo", SPEC, "key1", start=False)
    assert job.state == m.PENDING
    assert (await store.start(job.job_id)).state == m.QUEUED
    with pytest.raises(FailedPrecondition):
        await store.start(job.job_id)
    assert (await store.pause(job.job_id)).state == m.PAUSED
    assert (await store.resume(job.job_id)).state == m.QUEUED
    assert (await store.cancel(job.job_id)).state == m.CANCELLED
    with pytest.raises(FailedPrecondition):
        await store.resume(job.job_id)
    events = await store.events(job.job_id, 0, 100)
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5]
    assert [e.state for e in events] == [m.PENDING, m.QUEUED, m.PAUSED, m.QUEUED, m.CANCELLED]
    with pytest.raises(NotFound):
        await store.get("00000000-0000-4000-8000-000000000000")
    with pytest.raises(InvalidArgument):
        await store.get("not-a-uuid")


async def test_claims_never_hand_one_job_to_two_workers(store):
    jobs = [await store.create(f"j{i}", SPEC, f"key{i}", start=True) for i in range(6)]
    claims = await asyncio.gather(*(store.claim(f"w{i}", timedelta(seconds=30)) for i in range(10)))
    claimed = [c.job_id for c in claims if c is not None]
    assert sorted(claimed) == sorted(j.job_id for j in jobs)
    assert all(c.state == m.RUNNING and c.attempt == 1 for c in claims if c)


async def test_expired_lease_is_reclaimed_and_the_old_attempt_is_fenced_off(store, postgres_cluster):
    job = await store.create("lease", SPEC, "key1", start=True)
    first = await store.claim("w1", timedelta(milliseconds=200))
    assert first.job_id == job.job_id
    old_reporter = PostgresReporter(job.job_id, postgres_cluster.dsn_for("job_store"), attempt=first.attempt)
    old_reporter.progress(1, 10, 1, 1, {"train_loss": 2.0})
    assert await store.claim("w2", timedelta(seconds=30)) is None  # lease still valid
    await asyncio.sleep(0.3)
    second = await store.claim("w2", timedelta(seconds=30))
    assert second.job_id == job.job_id and second.attempt == first.attempt + 1
    assert await store.heartbeat(job.job_id, first.attempt, timedelta(seconds=30)) is None
    with pytest.raises(LeaseLost):
        old_reporter.progress(10, 10, 1, 1, {"train_loss": 1.9})  # the last step always reports
    with pytest.raises(LeaseLost):
        old_reporter.log("still here?")
    assert not await store.finish(job.job_id, first.attempt, m.SUCCEEDED, "stale")
    assert await store.finish(job.job_id, second.attempt, m.SUCCEEDED, "done")
    final = await store.get(job.job_id)
    assert final.state == m.SUCCEEDED and final.progress["current_step"] == 1
    old_reporter.close()


async def test_running_jobs_are_stopped_through_flags(store, postgres_cluster):
    job = await store.create("flags", SPEC, "key1", start=True)
    claimed = await store.claim("w1", timedelta(seconds=30))
    reporter = PostgresReporter(job.job_id, postgres_cluster.dsn_for("job_store"), attempt=claimed.attempt)
    assert reporter.should_stop() is None
    assert (await store.pause(job.job_id)).pause_requested
    reporter._last_flags = 0
    assert reporter.should_stop() == "pause"
    assert (await store.cancel(job.job_id)).cancel_requested
    reporter._last_flags = 0
    assert reporter.should_stop() == "cancel"
    reporter.checkpoint(5, 1, "/tmp/ckpt-5", {"eval_loss": 1.5}, True)
    assert (await store.get(job.job_id)).last_checkpoint == "/tmp/ckpt-5"
    page = await store.checkpoints(job.job_id, 10, "")
    assert [c.step for c in page.items] == [5] and page.items[0].is_best
    reporter.close()


async def test_active_jobs_per_key_are_limited(store):
    await store.create("a", SPEC, "busy", start=True)
    await store.create("b", SPEC, "busy", start=True)
    with pytest.raises(ResourceExhausted):
        await store.create("c", SPEC, "busy", start=True)
    pending = await store.create("d", SPEC, "busy", start=False)
    with pytest.raises(ResourceExhausted):
        await store.start(pending.job_id)
    assert (await store.create("e", SPEC, "other", start=True)).state == m.QUEUED


async def test_statistics_and_listing(store):
    done = await store.create("s", SPEC, "k", start=True)
    claimed = await store.claim("w", timedelta(seconds=30))
    await store.finish(done.job_id, claimed.attempt, m.SUCCEEDED, "ok")
    await store.create("p", SPEC, "k", start=False)
    stats = await store.statistics()
    assert stats.total_jobs == 2 and stats.jobs_by_state[m.SUCCEEDED] == 1 and stats.success_rate == 1.0
    page = await store.list([m.PENDING], 10, "")
    assert [j.name for j in page.items] == ["p"]
    with pytest.raises(InvalidArgument):
        await store.list(["EXPLODED"], 10, "")


async def test_an_idle_worker_is_woken_when_a_job_is_queued_not_at_its_next_poll(store, store_dsn):
    wake = QueueWake(store_dsn)
    wake.start()
    stop = asyncio.Event()
    try:
        await wake.wait(stop, 5.0)  # the first wake after LISTEN: look once for what is queued
        loop = asyncio.get_running_loop()

        async def waited(action, timeout: float) -> float:
            waiting = asyncio.ensure_future(wake.wait(stop, timeout))
            await asyncio.sleep(0.2)
            started = loop.time()
            await action()
            await waiting
            return loop.time() - started

        # A job created without start is not queued: the wait runs to its timeout.
        pending = await store.create("quiet", SPEC, "wake1", start=False)
        assert await waited(lambda: store.create("quiet2", SPEC, "wake2", start=False), 1.5) > 1.2
        # Started, or created with start: the wait ends at once, far before its 20 s poll.
        assert await waited(lambda: store.start(pending.job_id), 20.0) < 2.0
        assert await waited(lambda: store.create("loud", SPEC, "wake3", start=True), 20.0) < 2.0
    finally:
        await wake.close()
