"""Every RPC x every kind of caller, through the gateway, with the exact status expected; plus the
audit records that writes and denials leave."""

from __future__ import annotations

import asyncio
import re
import uuid

import grpc
import psycopg
import pytest
from google.api import annotations_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.jobs.conftest import job_inputs  # noqa: F401 - fixture
from tests.support import authed
from trainforge.core.access.keys import ROLE_RANK
from trainforge.server.access_rules import ANONYMOUS, RULES
from trainforge.v1 import deploy_pb2, registry_pb2, training_pb2

SERVICES = [d.services_by_name[n] for d, n in ((training_pb2.DESCRIPTOR, "TrainingService"),
                                                (registry_pb2.DESCRIPTOR, "RegistryService"),
                                                (deploy_pb2.DESCRIPTOR, "DeployService"))]
CALLERS = ["none", "revoked", "expired", "viewer", "trainer", "admin"]
HTTP_STATUS = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}


def rest_probes():
    """(method path, HTTP verb, URL, body) for every transcoded RPC, path variables filled with probes."""
    for service in SERVICES:
        for method in service.methods:
            if method.client_streaming:
                continue  # a stream of JSON messages; checked over gRPC below
            rule = method.GetOptions().Extensions[annotations_pb2.http]
            verb = rule.WhichOneof("pattern")
            url = re.sub(r"\{[a-z_.]+(=[^}]*)?\}", "probe-0000", getattr(rule, verb))
            body = {} if rule.body else None
            yield f"/{service.full_name}/{method.name}", verb.upper(), url, body


PROBES = list(rest_probes())


def test_every_rpc_has_an_access_rule():
    methods = {f"/{s.full_name}/{m.name}" for s in SERVICES for m in s.methods}
    missing = sorted(methods - set(RULES))
    assert not missing, f"RPCs without an access rule in server/access_rules.py: {missing}"
    assert {r.role for r in RULES.values()} <= {ANONYMOUS, *ROLE_RANK}


def expected_status(method: str, caller: str, admin_status: int) -> int:
    rule = RULES[method]
    if caller in ("revoked", "expired"):
        return 401
    if caller == "none":
        return admin_status if rule.role == ANONYMOUS else 401
    if rule.role != ANONYMOUS and ROLE_RANK[caller] < ROLE_RANK[rule.role]:
        return 403
    return admin_status


@pytest.mark.parametrize("method,verb,url,body", PROBES, ids=[p[0].rsplit("/", 1)[1] for p in PROBES])
def test_authorization_matrix_through_the_gateway(rest, api_keys, method, verb, url, body):
    admin = rest.with_token(api_keys["admin"]).call(verb, url, body)
    assert admin.status not in (401, 403), admin
    for caller in CALLERS:
        client = rest.with_token("" if caller == "none" else api_keys[caller])
        reply = client.call(verb, url, body)
        want = expected_status(method, caller, admin.status)
        assert reply.status == want, f"{caller} on {method}: {reply}"
        if want in (401, 403):
            assert reply.body["code"] == {401: 16, 403: 7}[want]
            assert api_keys["admin"] not in reply.raw.decode()


@pytest.mark.parametrize("caller", CALLERS)
def test_streams_and_infrastructure_over_grpc(raw_channel, api_keys, caller):
    channel = raw_channel if caller == "none" else authed(raw_channel, api_keys[caller])
    health = health_pb2_grpc.HealthStub(channel)
    if caller in ("revoked", "expired"):
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    else:
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING

    from trainforge.v1 import registry_pb2_grpc
    upload = registry_pb2_grpc.RegistryServiceStub(channel).UploadArtifacts
    with pytest.raises(grpc.RpcError) as info:
        upload(iter([registry_pb2.UploadArtifactsRequest(model_id="probe-0000", version="1", path="a", data=b"x")]))
    want = {"none": grpc.StatusCode.UNAUTHENTICATED, "revoked": grpc.StatusCode.UNAUTHENTICATED,
            "expired": grpc.StatusCode.UNAUTHENTICATED, "viewer": grpc.StatusCode.PERMISSION_DENIED}
    assert info.value.code() == want.get(caller, grpc.StatusCode.NOT_FOUND)


def _audit_rows(database_url: str, request_id: str) -> list[dict]:
    with psycopg.connect(database_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT * FROM audit_log WHERE request_id = %s ORDER BY seq", (request_id,)).fetchall()


def test_writes_and_denials_are_audited_reads_are_not(rest, api_keys, database_url):
    name = f"audited-{uuid.uuid4().hex[:8]}"
    trainer = rest.with_token(api_keys["trainer"])
    ok = trainer.post("/api/training/models", {"name": name, "version": "1.0.0"}, headers={"x-request-id": "aud-1"})
    assert ok.status == 200
    [row] = _audit_rows(database_url, "aud-1")
    assert (row["role"], row["outcome"], row["resource"]) == ("trainer", "OK", f"{name}/1.0.0")
    assert row["rpc"] == "/trainforge.v1.RegistryService/RegisterModel"
    assert api_keys["trainer"].split("_")[1] == row["key_id"] and row["client"]

    denied = rest.with_token(api_keys["viewer"]).delete(f"/api/training/models/{name}",
                                                         headers={"x-request-id": "aud-2"})
    assert denied.status == 403
    [row] = _audit_rows(database_url, "aud-2")
    assert (row["role"], row["outcome"], row["resource"]) == ("viewer", "PERMISSION_DENIED", name)

    anonymous = rest.with_token("").get(f"/api/training/models/{name}", headers={"x-request-id": "aud-3"})
    assert anonymous.status == 401 and _audit_rows(database_url, "aud-3")[0]["outcome"] == "UNAUTHENTICATED"

    assert rest.get(f"/api/training/models/{name}", headers={"x-request-id": "aud-4"}).status == 200
    assert _audit_rows(database_url, "aud-4") == []


def test_revocation_takes_effect_at_once(rest, database_url):
    from trainforge.core.access.keys import KeyStore
    from trainforge.core.db.pool import open_pool

    async def make_and_revoke(step: str, key_id: str = "") -> str:
        pool = await open_pool(database_url, min_size=1, max_size=1)
        try:
            keys = KeyStore(pool)
            if step == "create":
                return (await keys.create("short-lived", "viewer")).token
            await keys.revoke(key_id)
            return ""
        finally:
            await pool.close()

    token = asyncio.run(make_and_revoke("create"))
    client = rest.with_token(token)
    assert client.get("/api/training/models").status == 200  # now cached by the server
    asyncio.run(make_and_revoke("revoke", token.split("_")[1]))
    for _ in range(50):  # the NOTIFY reaches the server within milliseconds
        if client.get("/api/training/models").status == 401:
            break
        asyncio.run(asyncio.sleep(0.02))
    assert client.get("/api/training/models").status == 401


@pytest.mark.usefixtures("job_inputs")  # the tiny model and data file tiny_job names
def test_trainers_change_only_their_own_jobs_admins_any_viewers_none(rest, api_keys, database_url):
    from tests.jobs.conftest import tiny_job
    from trainforge.core.access.keys import KeyStore
    from trainforge.core.db.pool import open_pool

    async def second_trainer() -> str:
        pool = await open_pool(database_url, min_size=1, max_size=1)
        try:
            return (await KeyStore(pool).create(f"other-trainer-{uuid.uuid4().hex[:6]}", "trainer")).token
        finally:
            await pool.close()

    owner, other = rest.with_token(api_keys["trainer"]), rest.with_token(asyncio.run(second_trainer()))
    viewer, admin = rest.with_token(api_keys["viewer"]), rest.with_token(api_keys["admin"])
    created = owner.post("/api/training/jobs", tiny_job(f"owned-{uuid.uuid4().hex[:6]}"))
    assert created.status == 200, created
    job = f"/api/training/jobs/{created.body['data']['job_id']}"

    def refused(client, verb: str) -> None:
        reply = client.post(f"{job}/{verb}", {})
        assert reply.status == 403 and reply.body["code"] == 7, (verb, reply)

    for verb in ("start", "pause", "resume", "cancel"):
        refused(other, verb)
        refused(viewer, verb)
    assert admin.get(job).body["data"]["status"] == "JOB_STATE_PENDING"  # nothing changed
    assert owner.post(f"{job}/start", {}).body["data"]["status"] == "JOB_STATE_QUEUED"
    refused(other, "pause")
    assert owner.post(f"{job}/pause", {}).body["data"]["status"] == "JOB_STATE_PAUSED"
    refused(other, "resume")
    assert admin.post(f"{job}/resume", {}).body["data"]["status"] == "JOB_STATE_QUEUED"
    refused(other, "cancel")
    assert admin.post(f"{job}/cancel", {}).body["data"]["status"] == "JOB_STATE_CANCELLED"
    assert other.get(job).status == 200  # reading is every key's right
