"""`trainforge keys create|list|revoke` on the database directly: a fresh database from the test
cluster, and the suite's database, whose keys the suite's server (behind Envoy) then honours."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from tests.server.test_cli import TOKEN_RE, invoke
from trainforge.core.db import migrate


@pytest.fixture(scope="module")
def fresh_database(postgres_cluster) -> str:
    dsn = postgres_cluster.new_database("cli_keys")
    migrate.upgrade(dsn)
    return dsn


def keys(*args: str, expect: int = 0) -> str:
    return invoke("keys", *args, expect=expect).output


def test_create_list_revoke(fresh_database: str):
    db = ("--database-url", fresh_database)
    out = keys("create", "--owner", "alice", "--role", "trainer", "--expires-in", "30d", "--description", "ci bot",
               *db)
    [token] = TOKEN_RE.findall(out)
    key_id, secret = token.split("_")[1], token.split("_", 2)[2]
    assert "cannot be shown again" in out and "trainer" in out and "ci bot" in out
    viewer_token = json.loads(invoke("keys", "create", "--owner", "bob", "--role", "viewer", "--json", *db).stdout)
    assert viewer_token["role"] == "viewer" and viewer_token["expire_time"] is None

    listed = json.loads(invoke("keys", "list", "--json", *db).stdout)
    assert [(k["key_id"], k["owner"], k["role"], k["description"]) for k in listed] == [
        (key_id, "alice", "trainer", "ci bot"), (viewer_token["key_id"], "bob", "viewer", "")]
    assert listed[0]["expire_time"] and listed[0]["revoke_time"] is None and listed[0]["last_used_time"] is None
    table = keys("list", *db)
    for text in (key_id, "alice", "trainer", "active", "never"):
        assert text in table
    # Nothing can show a secret again: neither the listings nor the database hold it.
    assert secret not in table and secret not in json.dumps(listed) and "token" not in listed[0]
    with psycopg.connect(fresh_database) as conn:
        assert secret not in str(conn.execute("SELECT * FROM api_keys").fetchall())

    assert f"revoked key {key_id} (alice, trainer)" in keys("revoke", key_id, *db)
    assert "was already revoked at" in keys("revoke", key_id, *db)
    assert [k["key_id"] for k in json.loads(invoke("keys", "list", "--json", *db).stdout)] == [viewer_token["key_id"]]
    everything = keys("list", "--all", *db)
    assert key_id in everything and "revoked" in everything
    assert "no API key 'nosuchkey123'" in keys("revoke", "nosuchkey123", *db, expect=1)


def test_bad_values_are_usage_errors(fresh_database: str):
    db = ("--database-url", fresh_database)
    assert "must be one of viewer, trainer, admin" in keys("create", "--owner", "x", "--role", "root", *db, expect=2)
    for bad in ("0d", "30", "soon", "5y"):
        assert "is not a positive duration" in keys("create", "--owner", "x", "--role", "viewer",
                                                    "--expires-in", bad, *db, expect=2)
    out = keys("create", "--owner", "", "--role", "viewer", *db, expect=2)
    assert "owner: must be 1-128 printable characters" in out


def test_a_database_without_the_schema_is_named(postgres_cluster):
    dsn = postgres_cluster.new_database("cli_keys_unmigrated")
    out = keys("list", "--database-url", dsn, expect=1)
    assert "has no trainforge schema yet" in out and "trainforge db upgrade" in out
    assert "Traceback" not in out


def test_a_created_key_works_through_the_gateway_until_revoked(rest, database_url: str):
    created = json.loads(invoke("keys", "create", "--owner", "cli-gateway", "--role", "viewer", "--json",
                                "--database-url", database_url).stdout)
    client = rest.with_token(created["token"])
    assert client.get("/api/training/models").status == 200
    assert client.delete("/api/training/models/cli_keys_never_registered").status == 403  # a viewer
    keys("revoke", created["key_id"], "--database-url", database_url)
    deadline = time.monotonic() + 5  # servers drop the key on the revocation's NOTIFY, within milliseconds
    while client.get("/api/training/models").status != 401 and time.monotonic() < deadline:
        time.sleep(0.02)
    reply = client.get("/api/training/models")
    assert reply.status == 401 and "revoked" in reply.body["message"]
