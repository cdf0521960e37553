"""The audit log: append-only, hash-chained. Each row's hash is sha256 over the previous row's hash
and the row's own fields, so editing, deleting or reordering any row breaks the chain from that
row on, and `verify` names the first row where it breaks."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from psycopg_pool import AsyncConnectionPool

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    time: datetime
    key_id: str
    role: str
    rpc: str
    resource: str
    request_id: str
    outcome: str
    client: str
    prev_hash: str
    hash: str


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


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows_checked: int
    first_bad_seq: int | None
    problem: str


def row_hash(prev_hash: str, seq: int, time: datetime, entry: Entry) -> str:
    body = json.dumps({"seq": seq, "time": time.astimezone(timezone.utc).isoformat(timespec="microseconds"),
                       **asdict(entry)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev_hash + "\n" + body).encode()).hexdigest()


class AuditLog:
    def __init__(self, pool: AsyncConnectionPool):
        self.pool = pool

    async def append(self, entry: Entry) -> AuditRecord:
        async with self.pool.connection() as conn, conn.transaction():
            # The head row lock serialises appends, so seq has no gaps and each row chains to the last.
            cur = await conn.execute("SELECT seq, hash, now() AS now FROM audit_head FOR UPDATE")
            head = await cur.fetchone()
            seq = head["seq"] + 1
            now = head["now"]
            digest = row_hash(head["hash"], seq, now, entry)
            await conn.execute(
                "INSERT INTO audit_log (seq, time, key_id, role, rpc, resource, request_id, outcome, client, "
                "prev_hash, hash) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                (seq, now, entry.key_id, entry.role, entry.rpc, entry.resource, entry.request_id, entry.outcome,
                 entry.client, head["hash"], digest))
            await conn.execute("UPDATE audit_head SET seq = %s, hash = %s", (seq, digest))
        return AuditRecord(seq, now, *asdict(entry).values(), head["hash"], digest)

    async def list(self, *, resource: str = "", key_id: str = "", since: datetime | None = None,
                   until: datetime | None = None, limit: int = 100) -> list[AuditRecord]:
        where, params = [], []
        if resource:
            where.append("resource = %s")
            params.append(resource)
        if key_id:
            where.append("key_id = %s")
            params.append(key_id)
        if since:
            where.append("time >= %s")
            params.append(since)
        if until:
            where.append("time < %s")
            params.append(until)
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
                    entry = Entry(record.key_id, record.role, record.rpc, record.resource, record.request_id,
                                  record.outcome, record.client)
                    if record.seq != expected_seq:
                        return VerifyResult(False, checked, record.seq,
                                            f"row {record.seq} follows row {expected_seq - 1}: a row is missing")
                    if record.prev_hash != expected_prev:
                        return VerifyResult(False, checked, record.seq,
                                            f"row {record.seq} does not chain to the row before it")
                    if row_hash(expected_prev, record.seq, record.time, entry) != record.hash:
                        return VerifyResult(False, checked, record.seq, f"row {record.seq} was altered")
                    expected_prev, expected_seq = record.hash, record.seq + 1
            cur = await conn.execute("SELECT seq, hash FROM audit_head")
            head = await cur.fetchone()
        if head["seq"] != expected_seq - 1 or head["hash"] != expected_prev:
            return VerifyResult(False, checked, expected_seq,
                                f"the log ends at row {expected_seq - 1} but its head says {head['seq']}: "
                                "rows were removed from the end")
        return VerifyResult(True, checked, None, "")
