"""The job store. A job row is the truth: its state, its lease and its fencing token (`attempt`).
Every state change appends an event in the same transaction and NOTIFYs listeners, so a WatchJob
stream sees each change exactly once and in order."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from trainforge.core import pagination
from trainforge.core.access.audit import audited_transaction
from trainforge.core.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from trainforge.core.jobs import models as m
from trainforge.core.jobs.queue_wake import QUEUE_CHANNEL
from trainforge.core.registry.models import Page
from trainforge.core.registry.validation import Violations, check_page_size

NOTIFY_CHANNEL = "trainforge_job_events"

# Appends one event: the per-job counter on the job row hands out gap-free sequence numbers.
# `%(attempt)s` fences writers: NULL means "the API" (always allowed), a number means "the process
# of that attempt", which is refused once another worker has claimed the job.
APPEND_EVENT_SQL = """
WITH bumped AS (
    UPDATE jobs SET event_seq = event_seq + 1
    WHERE id = %(job_id)s AND (%(attempt)s::int IS NULL OR attempt = %(attempt)s::int)
    RETURNING id, event_seq, state
)
INSERT INTO job_events (job_id, seq, type, state, message, progress, metrics)
SELECT id, event_seq, %(type)s, state, %(message)s, %(progress)s, %(metrics)s FROM bumped
RETURNING seq, state
"""


def _job(row: dict[str, Any]) -> m.Job:
    return m.Job(
        job_id=str(row["id"]), name=row["name"], spec=row["spec"], state=row["state"],
        owner_key_id=row["owner_key_id"], progress=row["progress"], metrics=row["metrics"],
        resources=row["resources"], error=row["error"],
        result_model_version_id=str(row["result_model_version_id"] or ""), attempt=row["attempt"],
        worker_id=row["worker_id"] or "", cancel_requested=row["cancel_requested"],
        pause_requested=row["pause_requested"], last_checkpoint=row["last_checkpoint"] or "",
        create_time=row["create_time"], start_time=row["start_time"], end_time=row["end_time"])


job_from_row = _job  # for the modules beside this store that lock and read job rows themselves


def _event(row: dict[str, Any]) -> m.JobEvent:
    return m.JobEvent(str(row["job_id"]), row["seq"], row["type"], row["state"], row["message"],
                      row["progress"], row["metrics"], row["create_time"])


def _uuid(job_id: str, field: str = "job_id") -> uuid.UUID:
    try:
        return uuid.UUID(job_id)
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument.one(field, f"{job_id!r} is not a job id (a UUID)") from None


async def append_event(conn: psycopg.AsyncConnection, job_id: Any, type_: str, message: str = "", *,
                       progress: dict | None = None, metrics: dict | None = None,
                       attempt: int | None = None) -> int | None:
    cur = await conn.execute(APPEND_EVENT_SQL, {
        "job_id": job_id, "attempt": attempt, "type": type_, "message": message,
        "progress": Jsonb(progress or {}), "metrics": Jsonb(metrics or {})})
    row = await cur.fetchone()
    if row is not None:
        await conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, f"{job_id}:{row['seq']}"))
        if row["state"] == m.QUEUED:  # idle workers claim it now rather than at their next poll
            await conn.execute("SELECT pg_notify(%s, %s)", (QUEUE_CHANNEL, str(job_id)))
    return row["seq"] if row else None


class JobStore:
    def __init__(self, pool: AsyncConnectionPool, *, max_active_per_key: int = 4):
        self.pool = pool
        self.max_active_per_key = max_active_per_key

    # -- the API's side ------------------------------------------------------------------------
    async def create(self, name: str, spec: dict[str, Any], owner_key_id: str, *, start: bool) -> m.Job:
        job_id = uuid.uuid4()
        async with self.pool.connection() as conn, audited_transaction(conn):
            if start:
                await self._check_active_limit(conn, owner_key_id)
            cur = await conn.execute(
                "INSERT INTO jobs (id, name, spec, state, owner_key_id, queue_time) "
                "VALUES (%s, %s, %s, %s, %s, CASE WHEN %s THEN now() END) RETURNING *",
                (job_id, name, Jsonb(spec), m.QUEUED if start else m.PENDING, owner_key_id, start))
            row = await cur.fetchone()
            await append_event(conn, job_id, m.STATE_CHANGED, f"job created ({row['state'].lower()})")
        return _job(row)

    async def _check_active_limit(self, conn: psycopg.AsyncConnection, owner_key_id: str) -> None:
        if not owner_key_id or self.max_active_per_key <= 0:
            return
        # Serialise per key, so two concurrent starts cannot both pass the count.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("jobs:" + owner_key_id,))
        cur = await conn.execute("SELECT count(*) AS n FROM jobs WHERE owner_key_id = %s AND state IN "
                                 "('QUEUED', 'RUNNING')", (owner_key_id,))
        if (await cur.fetchone())["n"] >= self.max_active_per_key:
            raise ResourceExhausted(f"API key {owner_key_id} already has {self.max_active_per_key} queued or running "
                                    "jobs; wait for one to finish or cancel one", reason="TOO_MANY_ACTIVE_JOBS",
                                    metadata={"limit": str(self.max_active_per_key)})

    async def get(self, job_id: str) -> m.Job:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM jobs WHERE id = %s", (_uuid(job_id),))
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"job {job_id} does not exist", metadata={"job_id": job_id})
        return _job(row)

    async def list(self, states: list[str], page_size: int, page_token: str) -> Page:
        v = Violations()
        size = check_page_size(v, page_size)
        for i, state in enumerate(states):
            if state not in m.STATES:
                v.add(f"states[{i}]", f"unknown state {state!r}")
        v.raise_if_any()
        key = pagination.fingerprint("jobs", sorted(states), size)
        offset = pagination.decode(page_token, key)
        where, params = ("WHERE state = ANY(%s)", [list(states)]) if states else ("", [])
        async with self.pool.connection() as conn:
            cur = await conn.execute(f"SELECT *, count(*) OVER () AS total FROM jobs {where} "
                                     "ORDER BY create_time DESC, id DESC LIMIT %s OFFSET %s", (*params, size, offset))
            rows = await cur.fetchall()
            if rows:
                total = rows[0]["total"]
            else:
                total = (await (await conn.execute(f"SELECT count(*) AS n FROM jobs {where}", params)).fetchone())["n"]
        return Page(tuple(_job(r) for r in rows), pagination.next_token(offset, size, total, key), total)

    async def _transition(self, job_id: str, allowed: dict[str, str], verb: str, *, flag: str = "",
                          owner_key_id: str = "") -> m.Job:
        """Moves a job along `allowed` (from-state -> to-state) under a row lock; for RUNNING jobs
        that the worker must stop, sets `flag` instead and leaves the state to the worker."""
        async with self.pool.connection() as conn, audited_transaction(conn):
            cur = await conn.execute("SELECT * FROM jobs WHERE id = %s FOR UPDATE", (_uuid(job_id),))
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"job {job_id} does not exist", metadata={"job_id": job_id})
            state = row["state"]
            if state == m.RUNNING and flag:
                cur = await conn.execute(f"UPDATE jobs SET {flag} = true, update_time = now() WHERE id = %s "
                                         "RETURNING *", (row["id"],))
                await append_event(conn, row["id"], m.LOG, f"{verb} requested; the worker is stopping the job")
                return _job(await cur.fetchone())
            if state not in allowed:
                raise FailedPrecondition(f"cannot {verb} job {job_id}: it is {state}",
                                         reason="JOB_STATE", metadata={"job_id": job_id, "state": state})
            target = allowed[state]
            if target == m.QUEUED:
                await self._check_active_limit(conn, owner_key_id or row["owner_key_id"])
            cur = await conn.execute(
                "UPDATE jobs SET state = %s, update_time = now(), "
                "queue_time = CASE WHEN %s = 'QUEUED' THEN now() ELSE queue_time END, "
                "end_time = CASE WHEN %s IN ('SUCCEEDED', 'FAILED', 'CANCELLED') THEN now() ELSE end_time END, "
                "pause_requested = false WHERE id = %s RETURNING *",
                (target, target, target, row["id"]))
            updated = await cur.fetchone()
            await append_event(conn, row["id"], m.STATE_CHANGED, f"{state.lower()} -> {target.lower()}")
            return _job(updated)

    async def start(self, job_id: str, owner_key_id: str = "") -> m.Job:
        return await self._transition(job_id, {m.PENDING: m.QUEUED}, "start", owner_key_id=owner_key_id)

    async def cancel(self, job_id: str) -> m.Job:
        return await self._transition(job_id, {m.PENDING: m.CANCELLED, m.QUEUED: m.CANCELLED,
                                               m.PAUSED: m.CANCELLED}, "cancel", flag="cancel_requested")

    async def pause(self, job_id: str) -> m.Job:
        return await self._transition(job_id, {m.QUEUED: m.PAUSED}, "pause", flag="pause_requested")

    async def resume(self, job_id: str, owner_key_id: str = "") -> m.Job:
        return await self._transition(job_id, {m.PAUSED: m.QUEUED}, "resume", owner_key_id=owner_key_id)

    async def events(self, job_id: str, after: int, limit: int) -> list[m.JobEvent]:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM job_events WHERE job_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                                     (_uuid(job_id), after, limit))
            return [_event(r) for r in await cur.fetchall()]

    async def list_events(self, job_id: str, page_size: int, page_token: str) -> Page:
        await self.get(job_id)
        v = Violations()
        size = check_page_size(v, page_size, default=100)
        v.raise_if_any()
        key = pagination.fingerprint("events", job_id, size)
        offset = pagination.decode(page_token, key)
        events = await self.events(job_id, offset, size + 1)
        more = len(events) > size
        return Page(tuple(events[:size]), pagination.encode(offset + size, key) if more else "", 0)

    async def checkpoints(self, job_id: str, page_size: int, page_token: str) -> Page:
        await self.get(job_id)
        v = Violations()
        size = check_page_size(v, page_size)
        v.raise_if_any()
        key = pagination.fingerprint("checkpoints", job_id, size)
        offset = pagination.decode(page_token, key)
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT *, count(*) OVER () AS total FROM job_checkpoints WHERE job_id = %s "
                                     "ORDER BY step DESC LIMIT %s OFFSET %s", (_uuid(job_id), size, offset))
            rows = await cur.fetchall()
        total = rows[0]["total"] if rows else 0
        items = tuple(m.Checkpoint(str(r["job_id"]), r["step"], r["epoch"], r["path"], r["size_bytes"], r["metrics"],
                                   r["is_best"], r["create_time"]) for r in rows)
        return Page(items, pagination.next_token(offset, size, total, key), total)

    async def statistics(self) -> m.Statistics:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT state, count(*) AS n FROM jobs GROUP BY state")
            by_state = {r["state"]: r["n"] for r in await cur.fetchall()}
            cur = await conn.execute(
                "SELECT avg(extract(epoch FROM end_time - start_time)) AS mean, "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM end_time - start_time)) AS p50 "
                "FROM jobs WHERE state = 'SUCCEEDED' AND start_time IS NOT NULL")
            times = await cur.fetchone()
        ended = by_state.get(m.SUCCEEDED, 0) + by_state.get(m.FAILED, 0)
        return m.Statistics(
            total_jobs=sum(by_state.values()), jobs_by_state={s: by_state.get(s, 0) for s in m.STATES},
            success_rate=by_state.get(m.SUCCEEDED, 0) / ended if ended else 0.0,
            average_training_seconds=float(times["mean"] or 0.0), p50_training_seconds=float(times["p50"] or 0.0))

    # -- the worker's side ---------------------------------------------------------------------
    async def claim(self, worker_id: str, lease: timedelta, *, max_devices: int | None = None) -> m.Job | None:
        """Takes the oldest queued job, or a running one whose worker stopped renewing its lease.
        SKIP LOCKED lets many workers claim concurrently without ever taking the same row.

        `max_devices`: the worker's free GPUs; only a job whose processes fit (its world size,
        written to `resolved.world_size` when the spec was prepared; 1 when absent) or whose ranks
        a hostfile places is taken. None: any job (a CPU host)."""
        fits, params = "", ()
        if max_devices is not None:
            fits = ("AND (spec->'resolved'->>'hostfile_path' IS NOT NULL "
                    "OR COALESCE((spec->'resolved'->>'world_size')::int, 1) <= %s) ")
            params = (max_devices,)
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT id, state FROM jobs WHERE (state = 'QUEUED' OR (state = 'RUNNING' AND lease_expires < now())) "
                + fits + "ORDER BY queue_time NULLS LAST, create_time FOR UPDATE SKIP LOCKED LIMIT 1", params)
            found = await cur.fetchone()
            if found is None:
                return None
            cur = await conn.execute(
                "UPDATE jobs SET state = 'RUNNING', worker_id = %s, lease_expires = now() + %s, "
                "attempt = attempt + 1, start_time = COALESCE(start_time, now()), release_requested = false, "
                "update_time = now() "
                "WHERE id = %s RETURNING *", (worker_id, lease, found["id"]))
            row = await cur.fetchone()
            message = (f"claimed by worker {worker_id} (attempt {row['attempt']})" if found["state"] == m.QUEUED else
                       f"lease of the previous worker expired; resumed by worker {worker_id} "
                       f"(attempt {row['attempt']})")
            await append_event(conn, row["id"], m.STATE_CHANGED, message)
            return _job(row)

    async def heartbeat(self, job_id: str, attempt: int, lease: timedelta,
                        resources: dict[str, Any] | None = None) -> m.Job | None:
        """Renews the lease; None when the job is no longer this attempt's (the worker must stop)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE jobs SET lease_expires = now() + %s, resources = COALESCE(%s, resources), update_time = now() "
                "WHERE id = %s AND attempt = %s AND state = 'RUNNING' RETURNING *",
                (lease, Jsonb(resources) if resources is not None else None, job_id, attempt))
            row = await cur.fetchone()
        return _job(row) if row else None

    async def request_release(self, job_id: str, attempt: int, message: str) -> bool:
        """Asks the training process of this attempt to checkpoint at its next step boundary and
        exit (its worker is shutting down; the process reads the flag with cancel and pause).
        False when the job is no longer this attempt's."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE jobs SET release_requested = true, update_time = now() "
                "WHERE id = %s AND attempt = %s AND state = 'RUNNING' RETURNING id", (job_id, attempt))
            if await cur.fetchone() is None:
                return False
            await append_event(conn, job_id, m.LOG, message)
        return True

    async def running_on(self, host: str) -> dict[str, str]:
        """Job id -> worker id of the running jobs whose worker id names `host` (`host:pid:...`)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT id, worker_id FROM jobs WHERE state = 'RUNNING' "
                                     "AND split_part(worker_id, ':', 1) = %s", (host,))
            return {str(r["id"]): r["worker_id"] for r in await cur.fetchall()}

    async def expire_lease(self, job_id: str, worker_id: str, message: str) -> bool:
        """Ends the lease of `worker_id` on a running job now, so the next claim resumes the job
        without waiting out the lease (its worker is known to be gone). False when that worker no
        longer holds the job."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE jobs SET lease_expires = now() - interval '1 second', update_time = now() "
                "WHERE id = %s AND worker_id = %s AND state = 'RUNNING' AND lease_expires >= now() RETURNING id",
                (job_id, worker_id))
            if await cur.fetchone() is None:
                return False
            await append_event(conn, job_id, m.LOG, message)
            # The job is claimable now: wake idle workers as a queued job would.
            await conn.execute("SELECT pg_notify(%s, %s)", (QUEUE_CHANNEL, str(job_id)))
        return True

    async def release(self, job_id: str, attempt: int, message: str) -> bool:
        """Hands a running job back to the queue (its worker is shutting down); the next claim
        resumes it from its last checkpoint."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE jobs SET state = 'QUEUED', lease_expires = NULL, worker_id = NULL, queue_time = now(), "
                "release_requested = false, update_time = now() "
                "WHERE id = %s AND attempt = %s AND state = 'RUNNING' RETURNING id",
                (job_id, attempt))
            if await cur.fetchone() is None:
                return False
            await append_event(conn, job_id, m.STATE_CHANGED, message)
        return True

    async def finish(self, job_id: str, attempt: int, state: str, message: str, *, error: dict | None = None,
                     result_model_version_id: str | None = None) -> bool:
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE jobs SET state = %s, error = %s, result_model_version_id = COALESCE(%s, result_model_version_id), "
                "end_time = CASE WHEN %s IN ('SUCCEEDED', 'FAILED', 'CANCELLED') THEN now() END, "
                "lease_expires = NULL, worker_id = NULL, cancel_requested = false, pause_requested = false, "
                "release_requested = false, update_time = now() "
                "WHERE id = %s AND attempt = %s AND state = 'RUNNING' RETURNING id",
                (state, Jsonb(error) if error else None, result_model_version_id, state, job_id, attempt))
            if await cur.fetchone() is None:
                return False
            await append_event(conn, job_id, m.ERROR if state == m.FAILED else m.STATE_CHANGED, message)
        return True
