"""The audit record of a change commits with the change (or neither does), and a REST call's record
names the client Envoy saw, not Envoy."""

from __future__ import annotations

import asyncio
import http.client
import json
import uuid
from collections.abc import Iterator

import grpc
import psycopg
import pytest
from psycopg.rows import dict_row

from trainforge.core.access.audit import AuditLog
from trainforge.core.db.pool import open_pool
from trainforge.server.interceptors import CLIENT_ADDRESS_HEADER, client_address
from trainforge.v1 import registry_pb2 as pb

FAIL_PREFIX = "auditfail-"


def _rows(database_url: str, where: str, *params) -> list[dict]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute(f"SELECT * FROM audit_log WHERE {where} ORDER BY seq", params).fetchall()


def _verify(database_url: str):
    async def run():
        pool = await open_pool(database_url, min_size=1, max_size=1)
        try:
            return await AuditLog(pool).verify()
        finally:
            await pool.close()

    return asyncio.run(run())


@pytest.fixture
def failing_audit(database_url: str) -> Iterator[None]:
    """The audit log refuses records about resources named auditfail-*: as if its disk were full,
    for this test's calls only (the suite shares the database)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"""
            CREATE OR REPLACE FUNCTION test_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.resource LIKE '{FAIL_PREFIX}%' THEN RAISE EXCEPTION 'test: audit log unavailable'; END IF;
                RETURN NEW;
            END $$""")
        conn.execute("CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit_log "
                     "FOR EACH ROW EXECUTE FUNCTION test_refuse_audit()")
    try:
        yield
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER test_refuse_audit ON audit_log")
            conn.execute("DROP FUNCTION test_refuse_audit()")


def test_a_change_is_not_made_when_its_audit_record_cannot_be_written(registry, database_url, request):
    existing = f"{FAIL_PREFIX}{uuid.uuid4().hex[:8]}"
    registry.RegisterModel(pb.RegisterModelRequest(model_version=pb.ModelVersion(name=existing, version="1")))
    request.getfixturevalue("failing_audit")

    fresh = f"{FAIL_PREFIX}{uuid.uuid4().hex[:8]}"
    with pytest.raises(grpc.RpcError) as info:
        registry.RegisterModel(pb.RegisterModelRequest(model_version=pb.ModelVersion(name=fresh, version="1")))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value
    assert "audit" in info.value.details() and "Traceback" not in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        registry.GetModel(pb.GetModelRequest(model_id=fresh))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND  # the registration rolled back

    with pytest.raises(grpc.RpcError) as info:
        registry.UpdateModel(pb.UpdateModelRequest(model_id=existing, model=pb.Model(description="changed"),
                                                   update_mask={"paths": ["description"]}))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert registry.GetModel(pb.GetModelRequest(model_id=existing)).data.description == ""
    with pytest.raises(grpc.RpcError) as info:
        registry.SetModelAlias(pb.SetModelAliasRequest(model_id=existing, alias="prod", version="1"))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert dict(registry.GetModel(pb.GetModelRequest(model_id=existing)).data.aliases) == {}

    assert _rows(database_url, "resource LIKE %s", f"{fresh}%") == []
    result = _verify(database_url)
    assert result.ok, result


def test_each_change_has_exactly_one_record(registry, database_url):
    name = f"audit-one-{uuid.uuid4().hex[:8]}"
    request_id = uuid.uuid4().hex
    registry.RegisterModel(pb.RegisterModelRequest(model_version=pb.ModelVersion(name=name, version="1")),
                           metadata=(("x-request-id", request_id),))
    [row] = _rows(database_url, "request_id = %s", request_id)
    assert (row["outcome"], row["resource"], row["role"]) == ("OK", f"{name}/1", "admin")
    assert row["client"].startswith("ipv4:127.0.0.1:")
    # A client stream names its resource in its first message, after the call was authorised.
    upload_id = uuid.uuid4().hex
    registry.UploadArtifacts(iter([pb.UploadArtifactsRequest(model_id=name, version="1", path="a.txt", data=b"x")]),
                             metadata=(("x-request-id", upload_id),))
    [row] = _rows(database_url, "request_id = %s", upload_id)
    assert (row["outcome"], row["resource"], row["rpc"]) == ("OK", f"{name}/1",
                                                             "/trainforge.v1.RegistryService/UploadArtifacts")


def test_a_rest_call_is_recorded_with_the_client_address_envoy_saw(gateway, api_keys, database_url):
    """The client connects from 127.0.0.2 (Envoy itself talks to the server from 127.0.0.1) and
    claims to be someone else in x-forwarded-for and in the gateway's own header: neither is
    believed."""
    name = f"audit-rest-{uuid.uuid4().hex[:8]}"
    request_id = uuid.uuid4().hex
    conn = http.client.HTTPConnection(gateway.http_address, gateway.http_port, timeout=30,
                                      source_address=("127.0.0.2", 0))
    try:
        conn.connect()
        client_port = conn.sock.getsockname()[1]
        conn.request("POST", "/api/training/models", body=json.dumps({"name": name, "version": "1"}),
                     headers={"content-type": "application/json", "authorization": f"Bearer {api_keys['trainer']}",
                              "x-request-id": request_id, "x-forwarded-for": "203.0.113.7",
                              "x-envoy-external-address": "203.0.113.7",
                              CLIENT_ADDRESS_HEADER: "203.0.113.7:443"})
        response = conn.getresponse()
        assert response.status == 200, response.read()
    finally:
        conn.close()
    [row] = _rows(database_url, "request_id = %s", request_id)
    assert row["client"] == f"ipv4:127.0.0.2:{client_port}", row


def test_the_gateway_header_is_believed_only_from_loopback():
    header = ((CLIENT_ADDRESS_HEADER, "192.0.2.4:5000"),)
    assert client_address("ipv4:127.0.0.1:4000", header) == "ipv4:192.0.2.4:5000"
    assert client_address("ipv6:[::1]:4000", ((CLIENT_ADDRESS_HEADER, "[2001:db8::1]:7"),)) == "ipv6:[2001:db8::1]:7"
    assert client_address("ipv4:198.51.100.2:4000", header) == "ipv4:198.51.100.2:4000"
    assert client_address("ipv4:127.0.0.1:4000", ((CLIENT_ADDRESS_HEADER, "evil; drop"),)) == "ipv4:127.0.0.1:4000"
    assert client_address("ipv4:127.0.0.1:4000", ()) == "ipv4:127.0.0.1:4000"
