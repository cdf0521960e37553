"""Cancel's state machine, ownership and per-kind running limits, in the job store against a real
PostgreSQL (docs/training.md, "Job states"). The processes side (a cancelled job's processes are
gone) is in test_job_kinds.py, through the gateway and a real worker."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from trainforge.core.db import migrate
from trainforge.core.db.pool import open_pool
from trainforge.core.errors import FailedPrecondition, PermissionDenied
from trainforge.core.jobs import models as m
from trainforge.core.jobs.store import JobStore

SPEC = {"name": "demo", "model": "smollm2-135m", "training_data": {"path": "x.jsonl"}}
LEASE = timedelta(seconds=30)


@pytest.fixture
async def store(postgres_cluster):
    dsn = postgres_cluster.new_database("job_states")
    migrate.upgrade(dsn)
    pool = await open_pool(dsn, min_size=1, max_size=12)
    yield JobStore(pool, max_active_per_key=0)
    await pool.close()


async def _expire(store: JobStore, job_id: str) -> None:
    """What a worker that died looks like: its lease ran out."""
    async with store.pool.connection() as conn:
        await conn.execute("UPDATE jobs SET lease_expires = now() - interval '1 second' WHERE id = %s", (job_id,))


async def test_waiting_jobs_are_cancelled_at_once(store):
    pending = await store.create("p", SPEC, "k", start=False)
    queued = await store.create("q", SPEC, "k", start=True)
    paused = await store.create("z", SPEC, "k", start=True)
    await store.pause(paused.job_id)
    for job in (pending, queued, paused):
        cancelled = await store.cancel(job.job_id)
        assert cancelled.state == m.CANCELLED and cancelled.end_time is not None
        with pytest.raises(FailedPrecondition):
            await store.cancel(job.job_id)
    assert await store.claim("w", LEASE) is None


async def test_running_job_is_cancelling_until_its_worker_stops_it(store):
    job = await store.create("r", SPEC, "k", start=True)
    claimed = await store.claim("w1", LEASE)
    answer = await store.cancel(job.job_id)
    assert answer.state == m.CANCELLING and answer.cancel_requested  # answered as what it is now
    assert (await store.cancel(job.job_id)).state == m.CANCELLING  # a repeated cancel changes nothing
    with pytest.raises(FailedPrecondition):
        await store.pause(job.job_id)
    # The worker keeps its lease while it stops the processes, then records CANCELLED.
    beat = await store.heartbeat(job.job_id, claimed.attempt, LEASE)
    assert beat is not None and beat.cancel_requested
    assert await store.finish(job.job_id, claimed.attempt, m.CANCELLED, "cancelled")
    final = await store.get(job.job_id)
    assert final.state == m.CANCELLED and not final.cancel_requested
    states = [e.state for e in await store.events(job.job_id, 0, 100)]
    assert states == [m.QUEUED, m.RUNNING, m.CANCELLING, m.CANCELLED]


async def test_expired_lease_with_cancel_requested_is_cancelled_never_resumed(store):
    """The old spelling (RUNNING with the flag, as before this state existed) and CANCELLING both
    end CANCELLED at the next claim; the claim goes on to the next job."""
    old = await store.create("old", SPEC, "k", start=True)
    new = await store.create("new", SPEC, "k", start=True)
    first = await store.claim("w1", LEASE)
    second = await store.claim("w1", LEASE)
    assert {first.job_id, second.job_id} == {old.job_id, new.job_id}
    async with store.pool.connection() as conn:  # a row written before CANCELLING existed
        await conn.execute("UPDATE jobs SET cancel_requested = true WHERE id = %s", (old.job_id,))
    await store.cancel(new.job_id)
    await _expire(store, old.job_id)
    await _expire(store, new.job_id)
    waiting = await store.create("waiting", SPEC, "k", start=True)
    claimed = await store.claim("w2", LEASE)
    assert claimed.job_id == waiting.job_id
    for job in (old, new):
        final = await store.get(job.job_id)
        assert final.state == m.CANCELLED and final.attempt == 1 and final.worker_id == ""
        assert "stopped renewing its lease" in (await store.events(job.job_id, 0, 100))[-1].message
    assert await store.claim("w3", LEASE) is None


async def test_cancelling_job_of_a_dead_worker_is_cancelled_by_whoever_notices(store):
    # Noticed by a cancel: the job is CANCELLED at once rather than waiting for a worker.
    job = await store.create("dead", SPEC, "k", start=True)
    await store.claim("w1", LEASE)
    await store.cancel(job.job_id)
    await _expire(store, job.job_id)
    assert (await store.cancel(job.job_id)).state == m.CANCELLED
    # Noticed by an idle worker's claim, with nothing else queued.
    other = await store.create("dead2", SPEC, "k", start=True)
    claimed = await store.claim("w1", LEASE)
    assert (await store.cancel(other.job_id)).state == m.CANCELLING
    await _expire(store, other.job_id)
    assert await store.claim("w2", LEASE) is None
    assert (await store.get(other.job_id)).state == m.CANCELLED
    # Noticed by a busy worker's periodic sweep, which never takes a job.
    third = await store.create("dead3", SPEC, "k", start=True)
    await store.claim("w1", LEASE)
    await store.cancel(third.job_id)
    await _expire(store, third.job_id)
    queued = await store.create("not-swept", SPEC, "k", start=True)
    assert await store.cancel_abandoned("sweeper") == 1
    assert (await store.get(third.job_id)).state == m.CANCELLED
    assert (await store.get(queued.job_id)).state == m.QUEUED
    await store.cancel(queued.job_id)
    # The old worker's late report changes nothing.
    assert not await store.finish(other.job_id, claimed.attempt, m.SUCCEEDED, "late")
    # A running job (no cancel) of a dead worker is resumed, as before.
    running = await store.create("resume", SPEC, "k", start=True)
    await store.claim("w1", LEASE)
    await _expire(store, running.job_id)
    resumed = await store.claim("w2", LEASE)
    assert resumed.job_id == running.job_id and resumed.attempt == 2


async def test_a_stopping_worker_hands_a_cancelling_job_to_cancelled_not_the_queue(store):
    job = await store.create("stop", SPEC, "k", start=True)
    claimed = await store.claim("w1", LEASE)
    await store.cancel(job.job_id)
    assert await store.release(job.job_id, claimed.attempt, "worker shut down")
    assert (await store.get(job.job_id)).state == m.CANCELLED
    # A running job is queued again, keeping a pause asked of it for its next attempt.
    paused = await store.create("paused", SPEC, "k", start=True)
    claimed = await store.claim("w1", LEASE)
    await store.pause(paused.job_id)
    assert await store.release(paused.job_id, claimed.attempt, "worker shut down")
    again = await store.get(paused.job_id)
    assert again.state == m.QUEUED and again.pause_requested and again.worker_id == ""


async def test_only_the_owner_or_an_admin_changes_a_job(store):
    job = await store.create("mine", SPEC, "alice", start=False)
    for action in (lambda: store.start(job.job_id, "bob", only_owner="bob"),
                   lambda: store.pause(job.job_id, only_owner="bob"),
                   lambda: store.resume(job.job_id, "bob", only_owner="bob"),
                   lambda: store.cancel(job.job_id, only_owner="bob")):
        with pytest.raises(PermissionDenied):
            await action()
    assert (await store.get(job.job_id)).state == m.PENDING
    assert (await store.start(job.job_id, "alice", only_owner="alice")).state == m.QUEUED
    assert (await store.cancel(job.job_id, only_owner=None)).state == m.CANCELLED  # an admin


async def test_per_kind_limits_hold_under_concurrent_claims(store):
    """Ten workers claim at once: at most one compression and two evaluations run, and the rest of
    the workers take the training jobs behind them in the queue."""
    limits = {m.COMPRESSION: 1, m.EVALUATION: 2, m.TRAINING: 0}
    for i in range(3):
        await store.create(f"c{i}", {"i": i}, "k", start=True, kind=m.COMPRESSION)
        await store.create(f"e{i}", {"i": i}, "k", start=True, kind=m.EVALUATION)
    for i in range(4):
        await store.create(f"t{i}", SPEC, "k", start=True)
    claims = await asyncio.gather(*(store.claim(f"w{i}", LEASE, limits) for i in range(10)))
    kinds = sorted(c.kind for c in claims if c is not None)
    assert kinds == [m.COMPRESSION] + [m.EVALUATION] * 2 + [m.TRAINING] * 4, kinds
    assert sum(c is None for c in claims) == 3
    # A slot frees when a job ends; a dead worker's job frees its slot only by being reclaimed.
    compression = next(c for c in claims if c and c.kind == m.COMPRESSION)
    assert await store.claim("w", LEASE, limits) is None
    await store.finish(compression.job_id, compression.attempt, m.SUCCEEDED, "done")
    assert (await store.claim("w", LEASE, limits)).kind == m.COMPRESSION
    assert await store.claim("w", LEASE, limits) is None
    page = await store.list([m.QUEUED], 50, "", kinds=[m.COMPRESSION])
    assert [j.kind for j in page.items] == [m.COMPRESSION]
