"""API keys and the hash-chained audit log against a real PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from trainforge.core.access.audit import AuditLog, Entry
from trainforge.core.access.keys import KeyStore
from trainforge.core.db import migrate
from trainforge.core.db.pool import open_pool
from trainforge.core.errors import InvalidArgument, Unauthenticated


@pytest.fixture
async def pool(postgres_cluster):
    dsn = postgres_cluster.new_database("access_tests")
    migrate.upgrade(dsn)
    pool = await open_pool(dsn, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def test_keys_authenticate_until_revoked_or_expired(pool):
    keys = KeyStore(pool)
    new = await keys.create("alice", "trainer")
    assert new.token.startswith(f"tf_{new.key.key_id}_")
    assert (await keys.authenticate(new.token)).role == "trainer"

    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT * FROM api_keys WHERE id = %s", (new.key.key_id,))).fetchone()
    assert new.token.split("_", 2)[2] not in str(row.values())  # only the hash is stored

    with pytest.raises(Unauthenticated, match="not valid"):
        await keys.authenticate(new.token[:-1] + ("A" if new.token[-1] != "A" else "B"))
    with pytest.raises(Unauthenticated, match="malformed"):
        await keys.authenticate("Bearer nonsense")
    await keys.revoke(new.key.key_id)
    with pytest.raises(Unauthenticated, match="revoked"):
        await keys.authenticate(new.token)

    short = await keys.create("bob", "viewer", expires_in=timedelta(milliseconds=1))
    async with pool.connection() as conn:
        await conn.execute("SELECT pg_sleep(0.01)")
    with pytest.raises(Unauthenticated, match="expired"):
        await keys.authenticate(short.token)


async def test_key_creation_reports_every_problem(pool):
    with pytest.raises(InvalidArgument) as info:
        await KeyStore(pool).create("", "root", expires_in=timedelta(seconds=-1))
    assert {v.field for v in info.value.violations} == {"owner", "role", "expires_in"}


async def _append(log: AuditLog, n: int) -> None:
    for i in range(n):
        await log.append(Entry(f"key{i % 2}", "admin", "/trainforge.v1.RegistryService/RegisterModel",
                               f"models/m{i}", f"req{i}", "OK", "ipv4:127.0.0.1:5000"))


def _tamper(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update")
        for statement in statements:
            conn.execute(statement)
        conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update")


@pytest.mark.parametrize("tamper,first_bad", [
    ("UPDATE audit_log SET outcome = 'PERMISSION_DENIED' WHERE seq = 3", 3),
    ("UPDATE audit_log SET time = time + interval '1 second' WHERE seq = 4", 4),
    ("DELETE FROM audit_log WHERE seq = 2", 3),
    (("UPDATE audit_log SET seq = -2 WHERE seq = 2", "UPDATE audit_log SET seq = 2 WHERE seq = 3",
      "UPDATE audit_log SET seq = 3 WHERE seq = -2"), 2),
    ("DELETE FROM audit_log WHERE seq = 5", 5),
])
async def test_audit_verify_names_the_first_bad_row(pool, postgres_cluster, tamper, first_bad):
    log = AuditLog(pool)
    await _append(log, 5)
    assert (await log.verify()).ok
    records = await log.list(key_id="key0")
    assert [r.seq for r in records] == [5, 3, 1]
    _tamper(postgres_cluster.dsn_for("access_tests"), *([tamper] if isinstance(tamper, str) else tamper))
    result = await log.verify()
    assert not result.ok and result.first_bad_seq == first_bad, result


async def test_audit_log_refuses_ordinary_updates(pool):
    log = AuditLog(pool)
    await _append(log, 1)
    async with pool.connection() as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            await conn.execute("UPDATE audit_log SET outcome = 'x'")


async def test_store_changes_commit_with_their_audit_record_or_not_at_all(pool, tmp_path):
    from trainforge.core.access.audit import Actor, acting
    from trainforge.core.errors import Unavailable
    from trainforge.core.jobs.store import JobStore
    from trainforge.core.registry.artifacts import ArtifactStore
    from trainforge.core.registry.models import NewVersion
    from trainforge.core.registry.store import RegistryStore

    registry, jobs = RegistryStore(pool, ArtifactStore(tmp_path / "artifacts"), tmp_path), JobStore(pool)
    log = AuditLog(pool)
    await registry.register(NewVersion(name="no-actor", version="1"))  # a CLI or test: no record
    assert await log.list() == []

    actor = Actor("k1", "trainer", "rpc:Register", "req-1", "ipv4:192.0.2.1:9", lambda: "audited/1")
    with acting(actor):
        await registry.register(NewVersion(name="audited", version="1"))
    [record] = await log.list()
    assert (record.key_id, record.rpc, record.resource, record.outcome) == ("k1", "rpc:Register", "audited/1", "OK")
    assert actor.committed == 1

    async with pool.connection() as conn:  # the log refuses every record from here on
        await conn.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                           "$$ BEGIN RAISE EXCEPTION 'no room'; END $$")
        await conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse()")
    with acting(Actor("k1", "trainer", "rpc:Register", "req-2", "", lambda: "refused")):
        with pytest.raises(Unavailable, match="audit"):
            await registry.register(NewVersion(name="refused", version="1"))
        with pytest.raises(Unavailable, match="audit"):
            await jobs.create("refused", {"name": "refused"}, "k1", start=False)
    async with pool.connection() as conn:
        assert (await (await conn.execute("SELECT count(*) AS n FROM models WHERE name = 'refused'")).fetchone())["n"] == 0
        assert (await (await conn.execute("SELECT count(*) AS n FROM jobs")).fetchone())["n"] == 0
    assert (await log.verify()).ok
