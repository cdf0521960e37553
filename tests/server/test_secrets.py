"""API keys never show up in logs, replies or the audit log."""

from __future__ import annotations

import logging

import psycopg


def test_keys_do_not_leak(rest, api_keys, gateway, database_url, caplog):
    replies = []
    with caplog.at_level(logging.DEBUG):
        for name, token in api_keys.items():
            client = rest.with_token(token)
            replies += [client.get("/api/training/models"), client.post("/api/training/models", {"name": "x"}),
                        client.delete("/api/training/models/nothing")]
        replies.append(rest.with_token(api_keys["admin"] + "tampered").get("/api/training/models"))
        replies.append(rest.with_token("not-even-a-key").get("/api/training/models"))
    secrets = [token.split("_", 2)[2] for token in api_keys.values()]
    texts = [r.raw.decode(errors="replace") + str(r.headers) for r in replies]
    texts.append(caplog.text)
    texts.append(gateway.log_path.read_text(errors="replace"))
    with psycopg.connect(database_url) as conn:
        texts.append(str(conn.execute("SELECT * FROM audit_log").fetchall()))
        texts.append(str(conn.execute("SELECT * FROM api_keys").fetchall()))
    for secret in secrets:
        for text in texts:
            assert secret not in text
    assert any(r.status == 401 for r in replies) and any(r.status == 403 for r in replies)
