"""`trainforge audit verify|list`: on the suite's database (written by the suite's server) and on
fresh databases whose log the test tampers with as the superuser."""

from __future__ import annotations

import asyncio
import json
import re

import psycopg
import pytest

from tests.server.test_cli import invoke
from trainforge.core.access.audit import AuditLog, Entry
from trainforge.core.db import migrate
from trainforge.core.db.pool import open_pool


def test_verify_and_list_the_suite_log(rest, api_keys, database_url: str):
    viewer = rest.with_token(api_keys["viewer"])
    denied = viewer.delete("/api/training/models/cli_audit_model", headers={"x-request-id": "cli-audit-denied"})
    assert denied.status == 403
    db = ("--database-url", database_url)

    out = invoke("audit", "verify", *db).output
    assert int(re.search(r"(\d+) rows verified", out).group(1)) >= 1

    viewer_id = api_keys["viewer"].split("_")[1]
    mine = json.loads(invoke("audit", "list", "--key", viewer_id, "--json", *db).stdout)
    [record] = [r for r in mine if r["request_id"] == "cli-audit-denied"]
    assert (record["outcome"], record["role"], record["key_id"]) == ("PERMISSION_DENIED", "viewer", viewer_id)
    assert record["rpc"].endswith("/DeleteModel") and record["hash"] and record["prev_hash"]
    assert all(r["key_id"] == viewer_id for r in mine)
    assert [r["seq"] for r in mine] == sorted(r["seq"] for r in mine)  # oldest first

    by_resource = json.loads(invoke("audit", "list", "--resource", record["resource"], "--json", *db).stdout)
    assert record["seq"] in [r["seq"] for r in by_resource]
    assert all(r["resource"] == record["resource"] for r in by_resource)
    at = record["time"]
    around = json.loads(invoke("audit", "list", "--since", at, "--until", "2999-01-01", "--key", viewer_id,
                               "--json", *db).stdout)
    assert record["seq"] in [r["seq"] for r in around]
    assert json.loads(invoke("audit", "list", "--until", at, "--key", viewer_id, "--json", *db).stdout) == [
        r for r in mine if r["seq"] < record["seq"] and r["time"] < at]
    assert len(json.loads(invoke("audit", "list", "--limit", "1", "--json", *db).stdout)) == 1

    table = invoke("audit", "list", "--key", viewer_id, *db).output
    assert "PERMISSION_DENIED" in table and "DeleteModel" in table
    assert "not an ISO 8601 time" in invoke("audit", "list", "--since", "yesterday", *db, expect=2).output


def _fresh_log(postgres_cluster, name: str, rows: int) -> str:
    dsn = postgres_cluster.new_database(name)
    migrate.upgrade(dsn)

    async def fill() -> None:
        pool = await open_pool(dsn, min_size=1, max_size=1)
        try:
            log = AuditLog(pool)
            for i in range(rows):
                await log.append(Entry(f"key{i % 2}", "admin", "/trainforge.v1.RegistryService/RegisterModel",
                                       f"models/m{i}", f"req{i}", "OK", "ipv4:127.0.0.1:5000"))
        finally:
            await pool.close()

    asyncio.run(fill())
    return dsn


@pytest.mark.parametrize("tamper,first_bad,problem", [
    ("UPDATE audit_log SET outcome = 'OK ' WHERE seq = 3", 3, "row 3 was altered"),
    ("DELETE FROM audit_log WHERE seq = 2", 3, "row 3 follows row 1: a row is missing"),
    ("DELETE FROM audit_log WHERE seq = 5", 5, "rows were removed from the end"),
])
def test_verify_names_the_first_bad_row(postgres_cluster, tamper: str, first_bad: int, problem: str):
    dsn = _fresh_log(postgres_cluster, "cli_audit_tamper", 5)
    assert "audit log intact: 5 rows verified" in invoke("audit", "verify", "--database-url", dsn).output
    with psycopg.connect(dsn, autocommit=True) as conn:  # the cluster's superuser may switch the guard off
        conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update")
        conn.execute(tamper)
        conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update")
    out = invoke("audit", "verify", "--database-url", dsn, expect=1).output
    assert f"audit log broken at row {first_bad}:" in out and problem in out
