"""Deployment records against the suite's PostgreSQL: the switch, rollback and undeploy keep every
invariant a user relies on, across several models whose deployments interleave — one live
deployment per model, target and alias; the alias names the live version; the version's
`deployed` flag and the registry's refusal to delete it follow; bad requests queue nothing."""

from __future__ import annotations

import asyncio
import random

import psycopg
import pytest

from tests.deploy.conftest import register_tiny
from tests.support import violations
from trainforge.core.db.pool import open_pool
from trainforge.core.deploy import models as d
from trainforge.core.deploy.store import DeploymentStore
from trainforge.core.errors import FailedPrecondition
from trainforge.core.jobs.store import JobStore
from trainforge.core.registry.artifacts import ArtifactStore
from trainforge.core.registry.store import RegistryStore

pytestmark = [pytest.mark.postgres, pytest.mark.envoy]


def _jobs_total(rest) -> int:
    return int(rest.get("/api/training/jobs?page_size=1").body["total_size"])


def test_bad_deploy_requests_name_every_field_and_queue_nothing(rest, settings, tmp_path):
    version = register_tiny(rest, settings, tmp_path, "deploy-bad-input", "1.0.0")
    jobs_before = _jobs_total(rest)
    reply = rest.post(f"/api/training/deploy/{version['model_version_id']}",
                      {"target": "mars", "health_check_timeout": 5, "alias": "Not An Alias",
                       "deployment_tags": ["ok", ""]})
    assert reply.status == 400, reply
    found = violations(reply)
    assert {"target", "health_check_timeout", "alias"} <= set(found), found
    assert "mars" in found["target"] and "local" in found["target"]
    # An engine only the local target has; a version that does not exist.
    reply = rest.post(f"/api/training/deploy/{version['model_version_id']}", {"target": "cloud", "engine": "llama_cpp"})
    assert reply.status == 400 and "engine" in violations(reply), reply
    missing = rest.post("/api/training/deploy/0d9f3a4e-0000-4000-8000-000000000000", {"target": "local"})
    assert missing.status == 404, missing
    assert "0d9f3a4e-0000-4000-8000-000000000000" in missing.body["message"]
    assert rest.post("/api/training/deploy/deploy-bad-input:9.9.9", {"target": "local"}).status == 404
    assert _jobs_total(rest) == jobs_before
    listed = rest.get(f"/api/training/deploy/{version['model_version_id']}").body
    assert listed.get("data", []) == []


def test_the_switch_rollback_and_undeploy_keep_one_live_deployment_per_alias(rest, settings, database_url, tmp_path):
    """Three models, three versions each, deployments interleaved at random; after every step the
    live set, the aliases and the deployed flags agree."""
    names = [f"deploy-records-{i}" for i in range(3)]
    versions = {n: [register_tiny(rest, settings, tmp_path, n, f"{k}.0.0", seed=k) for k in range(1, 4)]
                for n in names}

    async def scenario() -> None:
        pool = await open_pool(database_url, min_size=1, max_size=4)
        try:
            jobs = JobStore(pool)
            store = DeploymentStore(pool, jobs)
            registry = RegistryStore(pool, ArtifactStore(settings.artifacts_dir), settings.models_dir)
            rng = random.Random(7)
            history: dict[str, list[str]] = {n: [] for n in names}  # live deployment ids, oldest first
            steps = [(n, v) for n in names for v in versions[n]] * 2
            rng.shuffle(steps)
            for name, v in steps:
                version = await registry.resolve_version(v["model_version_id"], "model_version_id")
                created, job = await store.create(version, target="cloud", alias="production", engine="",
                                                  auto_rollback=True, health_check_enabled=True,
                                                  health_check_timeout_ms=30_000, deployment_tags=[],
                                                  owner_key_id="")
                assert created.state == d.PENDING and job.kind == "DEPLOYMENT" and created.job_id == job.job_id
                await store.start(created.deployment_id)
                if rng.random() < 0.25:  # failed: nothing changes for users
                    await store.fail(created.deployment_id, {"code": 14, "message": "health check failed"})
                else:
                    live = await store.go_live(created.deployment_id, endpoint=f"s3://b/{name}", details={"v": 1},
                                               health={"healthy": True, "detail": "ok", "latency_ms": 1.0})
                    expected_previous = history[name][-1] if history[name] else ""
                    assert live.previous_deployment_id == expected_previous
                    history[name].append(created.deployment_id)
                if rng.random() < 0.2 and len(history[name]) >= 2:
                    restored = await store.rollback(history[name][-1], "-", _no_restore)
                    assert restored.deployment_id == history[name][-2] and restored.state == d.HEALTHY
                    history[name].pop()
                await _check_invariants(store, registry, names, history)
            # Undeploy removes the alias and the flag; a second undeploy is refused.
            name = names[0]
            gone = await store.undeploy(history[name][-1], "-", _no_remove)
            assert gone.state == d.UNDEPLOYED
            model = await registry.get_model(name)
            assert "production" not in model.aliases
            with pytest.raises(FailedPrecondition):
                await store.undeploy(history[name][-1], "-", _no_remove)
        finally:
            await pool.close()

    asyncio.run(scenario())
    # The database itself refuses a second live deployment of one alias.
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT model_id, model_version_id FROM deployments WHERE state = 'HEALTHY' "
                           "AND target = 'cloud' LIMIT 1").fetchone()
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO deployments (id, model_version_id, model_id, target, state, alias) "
                         "VALUES (gen_random_uuid(), %s, %s, 'cloud', 'HEALTHY', 'production')", (row[1], row[0]))


async def _no_restore(current, previous) -> None:
    return None


async def _no_remove(current) -> None:
    return None


async def _check_invariants(store: DeploymentStore, registry: RegistryStore, names: list[str],
                            history: dict[str, list[str]]) -> None:
    for name in names:
        model = await registry.get_model(name)
        live = await store.live(model.model_id, "cloud", "production")
        if not history[name]:
            assert live is None and "production" not in model.aliases
            continue
        assert live is not None and live.deployment_id == history[name][-1], (name, live)
        assert model.aliases["production"] == live.version
        page = await store.list("-", states=[d.HEALTHY], targets=["cloud"], page_size=1000)
        assert sum(1 for x in page.items if x.model_name == name) == 1
        version = await registry.get_version(name, live.version)
        assert version.deployed
        with pytest.raises(FailedPrecondition, match="undeploy it first"):
            await registry.delete_version(name, live.version, force=True)
