"""The audit log: append-only, hash-chained. Each row's hash is sha256 over the previous row's hash
and the row's own fields, so editing, deleting or reordering any row breaks the chain from that
row on, and `verify` names the first row where it breaks.

A change and its record are one transaction: the server's interceptor (or a worker acting for a
job) names the actor in `current_actor`, and the stores open their writing transactions with
`audited_transaction(conn)`, which appends the record as the transaction's last statement. A record
that cannot be written rolls the change back (Unavailable); a change that rolls back leaves no
record. Calls that change nothing (denied, failed) are recorded by the interceptor on their own."""

from __future__ import annotations

import contextvars
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg_pool import AsyncConnectionPool

from trainforge.core.errors import Unavailable

log = logging.getLogger(__name__)

GENESIS = "0" * 64


@dataclass(frozen=True)
class Entry:
    """What a caller appends; the log assigns seq, time and the hashes."""

    key_id: str
    role: str
    rpc: str
    resource: str
    request_id: str
    outcome: str
    client: str


@dataclass(frozen=True, kw_only=True)
class AuditRecord(Entry):
    """An appended entry as the log stores it."""

    seq: int
    time: datetime
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows_checked: int
    first_bad_seq: int | None
    problem: str


FIELDS = ("key_id", "role", "rpc", "resource", "request_id", "outcome", "client")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def row_hash(prev_hash: str, seq: int, time: datetime, entry: Entry) -> str:
    """sha256 over the previous hash, the sequence number, the time in microseconds since the epoch
    and each field length-prefixed (so no field can pass for two). APPEND_SQL computes exactly this
    inside PostgreSQL; this function re-computes it to verify."""
    micros = (time - EPOCH) // timedelta(microseconds=1)
    fields = [f"{len(value)}:{value}" for value in (getattr(entry, name) for name in FIELDS)]
    body = "\n".join([prev_hash, str(seq), str(micros), *fields])
    return hashlib.sha256(body.encode()).hexdigest()


# One statement, one round trip (an append follows every write, so its cost matters): lock the
# head, hash in SQL, move the head, insert the row. The head row lock serialises appends, so seq has
# no gaps and each row chains to the one before it.
APPEND_SQL = """
WITH head AS (
    SELECT seq, hash, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS micros
    FROM audit_head FOR UPDATE
), row AS (
    SELECT seq + 1 AS seq, hash AS prev_hash, micros,
           timestamptz 'epoch' + micros * interval '1 microsecond' AS time,
           encode(sha256(convert_to(concat_ws(E'\\n', hash, (seq + 1)::text, micros::text,
               length(%(key_id)s) || ':' || %(key_id)s, length(%(role)s) || ':' || %(role)s,
               length(%(rpc)s) || ':' || %(rpc)s, length(%(resource)s) || ':' || %(resource)s,
               length(%(request_id)s) || ':' || %(request_id)s, length(%(outcome)s) || ':' || %(outcome)s,
               length(%(client)s) || ':' || %(client)s), 'UTF8')), 'hex') AS hash
    FROM head
), moved AS (
    UPDATE audit_head SET seq = row.seq, hash = row.hash FROM row RETURNING audit_head.seq
)
INSERT INTO audit_log (seq, time, key_id, role, rpc, resource, request_id, outcome, client, prev_hash, hash)
SELECT row.seq, row.time, %(key_id)s, %(role)s, %(rpc)s, %(resource)s, %(request_id)s, %(outcome)s, %(client)s,
       row.prev_hash, row.hash
FROM row JOIN moved ON moved.seq = row.seq
RETURNING *
"""


async def append_on(conn: psycopg.AsyncConnection, entry: Entry) -> AuditRecord:
    """Appends `entry` on `conn`, inside whatever transaction `conn` has open."""
    cur = await conn.execute(APPEND_SQL, asdict(entry))
    return AuditRecord(**await cur.fetchone())


@dataclass
class Actor:
    """Who is changing state right now, and on whose request: an RPC's caller (set by the server's
    interceptor) or a worker acting for a job's owner. `resource` is read when the record is
    written, because a client stream names its resource only in its first message."""

    key_id: str
    role: str
    rpc: str
    request_id: str
    client: str
    resource: Callable[[], str] = lambda: ""
    # Records committed with a change for this actor (a call may commit more than one change).
    committed: int = field(default=0, compare=False)

    def entry(self, outcome: str) -> Entry:
        return Entry(self.key_id, self.role, self.rpc, self.resource(), self.request_id, outcome, self.client)


current_actor: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("audit_actor", default=None)


@contextmanager
def acting(actor: Actor) -> Iterator[Actor]:
    """Changes made inside the block are recorded as `actor`'s."""
    token = current_actor.set(actor)
    try:
        yield actor
    finally:
        current_actor.reset(token)


@asynccontextmanager
async def audited_transaction(conn: psycopg.AsyncConnection) -> AsyncIterator[None]:
    """`conn.transaction()` that also appends the current actor's record (outcome OK) as its last
    statement, so the change commits with its record or not at all. Last, because the append locks
    the log's head row until commit and every audited write in the system queues on that lock.
    Without an actor (a CLI command, a test driving a store directly) it is a plain transaction."""
    actor = current_actor.get()
    async with conn.transaction():
        yield
        if actor is not None:
            try:
                await append_on(conn, actor.entry("OK"))
            except psycopg.Error as exc:
                log.error("could not append to the audit log for %s; the change is rolled back: %s", actor.rpc, exc)
                raise Unavailable("the audit log could not record this change, so it was not made; try again",
                                  reason="AUDIT_UNAVAILABLE") from None
    if actor is not None:
        actor.committed += 1


class AuditLog:
    def __init__(self, pool: AsyncConnectionPool):
        self.pool = pool

    async def append(self, entry: Entry) -> AuditRecord:
        async with self.pool.connection() as conn:
            return await append_on(conn, entry)

    async def list(self, *, resource: str = "", key_id: str = "", since: datetime | None = None,
                   until: datetime | None = None, limit: int = 100) -> list[AuditRecord]:
        conditions = [(clause, value) for clause, value in (("resource = %s", resource), ("key_id = %s", key_id),
                                                      ("time >= %s", since), ("time < %s", until)) if value]
        where, params = [c for c, _ in conditions], [v for _, v in conditions]
        sql = "SELECT * FROM audit_log" + (f" WHERE {' AND '.join(where)}" if where else "")
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql + " ORDER BY seq DESC LIMIT %s", (*params, limit))
            return [AuditRecord(**r) for r in await cur.fetchall()]

    async def verify(self) -> VerifyResult:
        """Walk the chain from the first row; report the first row that does not follow from the one
        before it (edited fields, a missing row, rows out of order) or a head that does not match."""
        expected_prev, expected_seq, checked = GENESIS, 1, 0
        async with self.pool.connection() as conn, conn.transaction():
            # One snapshot for the rows and the head: a record appended meanwhile by a live server
            # must not look like a row removed from the end.
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            # A server-side cursor streams the log in batches: verifying never holds it all in memory.
            async with conn.cursor(name="audit_verify") as cur:
                await cur.execute("SELECT * FROM audit_log ORDER BY seq")
                async for row in cur:
                    record = AuditRecord(**row)
                    checked += 1
                    if record.seq != expected_seq:
                        return VerifyResult(False, checked, record.seq,
                                            f"row {record.seq} follows row {expected_seq - 1}: a row is missing")
                    if record.prev_hash != expected_prev:
                        return VerifyResult(False, checked, record.seq,
                                            f"row {record.seq} does not chain to the row before it")
                    if row_hash(expected_prev, record.seq, record.time, record) != record.hash:
                        return VerifyResult(False, checked, record.seq, f"row {record.seq} was altered")
                    expected_prev, expected_seq = record.hash, record.seq + 1
            cur = await conn.execute("SELECT seq, hash FROM audit_head")
            head = await cur.fetchone()
        if head["seq"] != expected_seq - 1 or head["hash"] != expected_prev:
            return VerifyResult(False, checked, expected_seq,
                                f"the log ends at row {expected_seq - 1} but its head says {head['seq']}: "
                                "rows were removed from the end")
        return VerifyResult(True, checked, None, "")
