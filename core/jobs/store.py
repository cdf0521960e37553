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
from trainforge.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from trainforge.core.jobs import models as m
from trainforge.core.jobs.queue_wake import QUEUE_CHANNEL
from trainforge.core.registry.models import Page
from trainforge.core.registry.validation import Violations, check_page_size

NOTIFY_CHANNEL = "trainforge_job_events"
# pg_advisory_xact_lock key serialising the claims that count a kind's running jobs: "tfclaims"
# read as a big-endian int64. One lock for all kinds, so a claim never holds two advisory locks
# (two claimers taking per-kind locks in different orders could deadlock).
_CLAIM_LOCK = int.from_bytes(b"tfclaims", "big") & (2**63 - 1)

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
        job_id=str(row["id"]), name=row["name"], spec=row["spec"], state=row["state"], kind=row["kind"],
        owner_key_id=row["owner_key_id"], progress=row["progress"], metrics=row["metrics"],
        resources=row["resources"], error=row["error"],
        result_model_version_id=str(row["result_model_version_id"] or ""), attempt=row["attempt"],
        worker_id=row["worker_id"] or "", cancel_requested=row["cancel_requested"],
        pause_requested=row["pause_requested"], last_checkpoint=row["last_checkpoint"] or "",
        create_time=row["create_time"], start_time=row["start_time"], end_time=row["end_time"],
        result=row["result"] or {})


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
    async def create(self, name: str, spec: dict[str, Any], owner_key_id: str, *, start: bool,
                     kind: str = m.TRAINING) -> m.Job:
        async with self.pool.connection() as conn, audited_transaction(conn):
            return await self.insert(conn, name, spec, owner_key_id, start=start, kind=kind)

    async def insert(self, conn: psycopg.AsyncConnection, name: str, spec: dict[str, Any], owner_key_id: str, *,
                     start: bool, kind: str = m.TRAINING, job_id: uuid.UUID | None = None) -> m.Job:
        """`create` inside the caller's transaction on `conn`, for a record that must commit
        together with its job (a deployment and the job that works on it)."""
        if kind not in m.KINDS:
            raise InvalidArgument.one("kind", f"unknown job kind {kind!r}")
        job_id = job_id or uuid.uuid4()
        if start:
            await self._check_active_limit(conn, owner_key_id)
        cur = await conn.execute(
            "INSERT INTO jobs (id, name, spec, state, kind, owner_key_id, queue_time) "
            "VALUES (%s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now() END) RETURNING *",
            (job_id, name, Jsonb(spec), m.QUEUED if start else m.PENDING, kind, owner_key_id, start))
        row = await cur.fetchone()
        await append_event(conn, job_id, m.STATE_CHANGED,
                           f"{kind.lower()} job created ({row['state'].lower()})")
        return _job(row)

    async def _check_active_limit(self, conn: psycopg.AsyncConnection, owner_key_id: str) -> None:
        if not owner_key_id or self.max_active_per_key <= 0:
            return
        # Serialise per key, so two concurrent starts cannot both pass the count.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("jobs:" + owner_key_id,))
        cur = await conn.execute("SELECT count(*) AS n FROM jobs WHERE owner_key_id = %s AND state IN "
                                 "('QUEUED', 'RUNNING', 'CANCELLING')", (owner_key_id,))
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

    async def list(self, states: list[str], page_size: int, page_token: str, kinds: list[str] = ()) -> Page:
        v = Violations()
        size = check_page_size(v, page_size)
        for i, state in enumerate(states):
            if state not in m.STATES:
                v.add(f"states[{i}]", f"unknown state {state!r}")
        for i, kind in enumerate(kinds):
            if kind not in m.KINDS:
                v.add(f"kinds[{i}]", f"unknown kind {kind!r}")
        v.raise_if_any()
        key = pagination.fingerprint("jobs", sorted(states), sorted(kinds), size)
        offset = pagination.decode(page_token, key)
        conditions = [(c, [list(values)]) for c, values in (("state = ANY(%s)", states), ("kind = ANY(%s)", kinds))
                      if values]
        where = ("WHERE " + " AND ".join(c for c, _ in conditions)) if conditions else ""
        params = [p for _, ps in conditions for p in ps]
        async with self.pool.connection() as conn:
            cur = await conn.execute(f"SELECT *, count(*) OVER () AS total FROM jobs {where} "
                                     "ORDER BY create_time DESC, id DESC LIMIT %s OFFSET %s", (*params, size, offset))
            rows = await cur.fetchall()
            if rows:
                total = rows[0]["total"]
            else:
                total = (await (await conn.execute(f"SELECT count(*) AS n FROM jobs {where}", params)).fetchone())["n"]
        return Page(tuple(_job(r) for r in rows), pagination.next_token(offset, size, total, key), total)

    async def _lock(self, conn: psycopg.AsyncConnection, job_id: str, verb: str,
                    only_owner: str | None) -> dict[str, Any]:
        """The job's row, locked for this transaction. `only_owner`: the API key that must own the
        job (a trainer acting on a job); None lets anyone through (an admin, the system)."""
        cur = await conn.execute("SELECT *, lease_expires < now() AS lease_lost FROM jobs WHERE id = %s FOR UPDATE",
                                 (_uuid(job_id),))
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"job {job_id} does not exist", metadata={"job_id": job_id})
        if only_owner is not None and row["owner_key_id"] != only_owner:
            raise PermissionDenied(f"job {job_id} belongs to another API key: only its owner or an admin may {verb} it",
                                   reason="NOT_JOB_OWNER", metadata={"job_id": job_id})
        return row

    async def _move(self, conn: psycopg.AsyncConnection, row: dict[str, Any], target: str, message: str) -> m.Job:
        """Sets the state of a locked job and appends its event. Leaving a leased state for a
        non-leased one clears the lease; the cancel flag is set exactly while CANCELLING; the pause
        flag is kept only by a job handed back to the queue."""
        cur = await conn.execute(
            "UPDATE jobs SET state = %(t)s, update_time = now(), "
            "queue_time = CASE WHEN %(t)s = 'QUEUED' THEN now() ELSE queue_time END, "
            "end_time = CASE WHEN %(t)s IN ('SUCCEEDED', 'FAILED', 'CANCELLED') THEN now() ELSE end_time END, "
            "lease_expires = CASE WHEN %(t)s IN ('RUNNING', 'CANCELLING') THEN lease_expires END, "
            "worker_id = CASE WHEN %(t)s IN ('RUNNING', 'CANCELLING') THEN worker_id END, "
            "cancel_requested = (%(t)s = 'CANCELLING'), release_requested = false, "
            # A pause asked of a running job survives its hand-back to the queue (release).
            "pause_requested = pause_requested AND %(t)s = 'QUEUED' WHERE id = %(id)s RETURNING *",
            {"t": target, "id": row["id"]})
        updated = await cur.fetchone()
        await append_event(conn, row["id"], m.STATE_CHANGED, message)
        return _job(updated)

    async def _transition(self, job_id: str, allowed: dict[str, str], verb: str, *, owner_key_id: str = "",
                          only_owner: str | None = None) -> m.Job:
        """Moves a job along `allowed` (from-state -> to-state) under a row lock."""
        async with self.pool.connection() as conn, audited_transaction(conn):
            row = await self._lock(conn, job_id, verb, only_owner)
            state = row["state"]
            if state not in allowed:
                raise FailedPrecondition(f"cannot {verb} job {job_id}: it is {state}",
                                         reason="JOB_STATE", metadata={"job_id": job_id, "state": state})
            target = allowed[state]
            if target == m.QUEUED:
                await self._check_active_limit(conn, owner_key_id or row["owner_key_id"])
            return await self._move(conn, row, target, f"{state.lower()} -> {target.lower()}")

    async def start(self, job_id: str, owner_key_id: str = "", only_owner: str | None = None) -> m.Job:
        return await self._transition(job_id, {m.PENDING: m.QUEUED}, "start", owner_key_id=owner_key_id,
                                      only_owner=only_owner)

    async def cancel(self, job_id: str, only_owner: str | None = None) -> m.Job:
        """PENDING, QUEUED, PAUSED -> CANCELLED at once. RUNNING -> CANCELLING: its worker stops the
        processes and records CANCELLED; when that worker is gone (its lease expired), CANCELLED at
        once, since nobody else would. CANCELLING answers as it is (a repeated cancel)."""
        async with self.pool.connection() as conn, audited_transaction(conn):
            row = await self._lock(conn, job_id, "cancel", only_owner)
            state = row["state"]
            if state == m.CANCELLING and not row["lease_lost"]:
                return _job(row)
            if state in (m.RUNNING, m.CANCELLING) and row["lease_lost"]:
                return await self._move(conn, row, m.CANCELLED, f"{state.lower()} -> cancelled; its worker "
                                        f"{row['worker_id']} stopped renewing its lease")
            if state == m.RUNNING:
                return await self._move(conn, row, m.CANCELLING,
                                        "running -> cancelling; the worker is stopping the job's processes")
            if state in (m.PENDING, m.QUEUED, m.PAUSED):
                return await self._move(conn, row, m.CANCELLED, f"{state.lower()} -> cancelled")
            raise FailedPrecondition(f"cannot cancel job {job_id}: it is {state}",
                                     reason="JOB_STATE", metadata={"job_id": job_id, "state": state})

    async def pause(self, job_id: str, only_owner: str | None = None) -> m.Job:
        """QUEUED -> PAUSED at once; a RUNNING job gets the pause flag, and its process writes a
        checkpoint and exits, after which the worker records PAUSED."""
        async with self.pool.connection() as conn, audited_transaction(conn):
            row = await self._lock(conn, job_id, "pause", only_owner)
            if row["state"] == m.RUNNING and row["kind"] != m.TRAINING:
                # Only training checkpoints; an evaluation or compression stopped midway starts over.
                raise FailedPrecondition(f"cannot pause job {job_id}: a running {row['kind'].lower()} job has no "
                                         "checkpoint to resume from; cancel it instead", reason="JOB_NOT_PAUSABLE",
                                         metadata={"job_id": job_id, "kind": row["kind"]})
            if row["state"] == m.RUNNING:
                cur = await conn.execute("UPDATE jobs SET pause_requested = true, update_time = now() WHERE id = %s "
                                         "RETURNING *", (row["id"],))
                await append_event(conn, row["id"], m.LOG, "pause requested; the worker is stopping the job")
                return _job(await cur.fetchone())
            if row["state"] != m.QUEUED:
                raise FailedPrecondition(f"cannot pause job {job_id}: it is {row['state']}", reason="JOB_STATE",
                                         metadata={"job_id": job_id, "state": row["state"]})
            return await self._move(conn, row, m.PAUSED, "queued -> paused")

    async def resume(self, job_id: str, owner_key_id: str = "", only_owner: str | None = None) -> m.Job:
        return await self._transition(job_id, {m.PAUSED: m.QUEUED}, "resume", owner_key_id=owner_key_id,
                                      only_owner=only_owner)

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
                "FROM jobs WHERE state = 'SUCCEEDED' AND kind = 'TRAINING' AND start_time IS NOT NULL")
            times = await cur.fetchone()
        ended = by_state.get(m.SUCCEEDED, 0) + by_state.get(m.FAILED, 0)
        return m.Statistics(
            total_jobs=sum(by_state.values()), jobs_by_state={s: by_state.get(s, 0) for s in m.STATES},
            success_rate=by_state.get(m.SUCCEEDED, 0) / ended if ended else 0.0,
            average_training_seconds=float(times["mean"] or 0.0), p50_training_seconds=float(times["p50"] or 0.0))

    # -- the worker's side ---------------------------------------------------------------------
    async def claim(self, worker_id: str, lease: timedelta, limits: dict[str, int] | None = None, *,
                    max_devices: int | None = None) -> m.Job | None:
        """Takes the oldest queued job, or a leased one whose worker stopped renewing its lease.
        SKIP LOCKED lets many workers claim concurrently without ever taking the same row.

        `limits`: the most jobs of a kind (m.KINDS) that may run at once, 0 or absent for no limit;
        counted under one advisory lock inside this transaction, so two workers claiming at the
        same moment cannot both take the last slot. A job whose worker is gone while it was being
        cancelled (CANCELLING, or a cancel request on it) is finished CANCELLED here, never run again.

        `max_devices`: the worker's free GPUs; only a job whose processes fit (its world size,
        written to `resolved.world_size` when the spec was prepared; 1 when absent) or whose ranks
        a hostfile places is taken. None: any job (a CPU host)."""
        limits = {k: n for k, n in (limits or {}).items() if n > 0}
        full: list[str] = []
        fits, params = "", ()
        if max_devices is not None:
            fits = ("AND (spec->'resolved'->>'hostfile_path' IS NOT NULL "
                    "OR COALESCE((spec->'resolved'->>'world_size')::int, 1) <= %s) ")
            params = (max_devices,)
        async with self.pool.connection() as conn, conn.transaction():
            for _ in range(100):  # each pass cancels an abandoned job or rules out a kind
                cur = await conn.execute(
                    "SELECT id, state, kind, cancel_requested, worker_id FROM jobs "
                    "WHERE (state = 'QUEUED' OR (state IN ('RUNNING', 'CANCELLING') AND lease_expires < now())) "
                    "AND kind <> ALL(%s) " + fits +
                    "ORDER BY queue_time NULLS LAST, create_time FOR UPDATE SKIP LOCKED LIMIT 1", (full, *params))
                found = await cur.fetchone()
                if found is None:
                    return None
                if found["state"] == m.CANCELLING or (found["state"] == m.RUNNING and found["cancel_requested"]):
                    await self._cancel_abandoned(conn, found, worker_id)
                    continue
                if found["kind"] in limits and await self._kind_is_full(conn, found, limits[found["kind"]]):
                    full.append(found["kind"])
                    continue
                return await self._take(conn, found, worker_id, lease)
        return None

    async def cancel_abandoned(self, noticed_by: str) -> int:
        """Records CANCELLED for every job being cancelled whose worker is gone (lease expired):
        what each claim does for the job it finds, for workers too busy to claim. Returns how many."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT id, state, worker_id FROM jobs WHERE state IN ('RUNNING', 'CANCELLING') "
                "AND (state = 'CANCELLING' OR cancel_requested) AND lease_expires < now() FOR UPDATE SKIP LOCKED")
            rows = await cur.fetchall()
            for row in rows:
                await self._cancel_abandoned(conn, row, noticed_by)
        return len(rows)

    async def _cancel_abandoned(self, conn: psycopg.AsyncConnection, row: dict[str, Any], noticed_by: str) -> None:
        await self._move(conn, row, m.CANCELLED, f"{row['state'].lower()} -> cancelled; its worker {row['worker_id']} "
                         f"stopped renewing its lease (noticed by {noticed_by})")

    async def _kind_is_full(self, conn: psycopg.AsyncConnection, found: dict[str, Any], limit: int) -> bool:
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CLAIM_LOCK,))
        # Live leases only: a job whose worker died holds no resources and is itself claimable.
        cur = await conn.execute(
            "SELECT count(*) AS n FROM jobs WHERE kind = %s AND state IN ('RUNNING', 'CANCELLING') "
            "AND lease_expires >= now() AND id <> %s", (found["kind"], found["id"]))
        return (await cur.fetchone())["n"] >= limit

    async def _take(self, conn: psycopg.AsyncConnection, found: dict[str, Any], worker_id: str,
                    lease: timedelta) -> m.Job:
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
                "WHERE id = %s AND attempt = %s AND state IN ('RUNNING', 'CANCELLING') RETURNING *",
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
        resumes it from its last checkpoint. A CANCELLING job is not queued again: it ends CANCELLED."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT * FROM jobs WHERE id = %s AND attempt = %s AND state IN ('RUNNING', 'CANCELLING') FOR UPDATE",
                (job_id, attempt))
            row = await cur.fetchone()
            if row is None:
                return False
            if row["state"] == m.CANCELLING:
                await self._move(conn, row, m.CANCELLED, f"cancelled; {message}")
            else:
                await self._move(conn, row, m.QUEUED, message)
        return True

    async def log(self, job_id: str, attempt: int, message: str) -> None:
        """A LOG event on this attempt's running job (a step of work that has no progress figure)."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT 1 FROM jobs WHERE id = %s AND attempt = %s AND state IN "
                                     "('RUNNING', 'CANCELLING')", (job_id, attempt))
            if await cur.fetchone() is not None:
                await append_event(conn, job_id, m.LOG, message)

    async def finish(self, job_id: str, attempt: int, state: str, message: str, *, error: dict | None = None,
                     result_model_version_id: str | None = None, result: dict | None = None) -> bool:
        """Records the outcome of this attempt (RUNNING or CANCELLING -> `state`); False when the
        job is no longer this attempt's."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE jobs SET state = %s, error = %s, result_model_version_id = COALESCE(%s, result_model_version_id), "
                "result = COALESCE(%s, result), "
                "end_time = CASE WHEN %s IN ('SUCCEEDED', 'FAILED', 'CANCELLED') THEN now() END, "
                "lease_expires = NULL, worker_id = NULL, cancel_requested = false, pause_requested = false, "
                "release_requested = false, update_time = now() WHERE id = %s AND attempt = %s AND state IN ('RUNNING', 'CANCELLING') RETURNING id",
                (state, Jsonb(error) if error else None, result_model_version_id,
                 Jsonb(result) if result is not None else None, state, job_id, attempt))
            if await cur.fetchone() is None:
                return False
            await append_event(conn, job_id, m.ERROR if state == m.FAILED else m.STATE_CHANGED, message)
        return True
