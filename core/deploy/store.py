"""Deployment records in PostgreSQL. Each method is one transaction; the ones that change which
version users get (go live, roll back, undeploy) lock the model's row first, so two of them on
one model run one after the other, and they move the registry alias in the same transaction as
the states. Every change NOTIFYs SERVING_CHANNEL, which the serving supervisor follows."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, Awaitable, Callable

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from trainforge.core import pagination
from trainforge.core.access.audit import audited_transaction
from trainforge.core.deploy import models as d
from trainforge.core.errors import FailedPrecondition, InvalidArgument, NotFound
from trainforge.core.jobs import models as jm
from trainforge.core.jobs.store import JobStore
from trainforge.core.registry.models import ModelVersion, Page
from trainforge.core.registry.validation import Violations, check_page_size

_SELECT = """
SELECT dp.*, m.name AS model_name, v.version AS version
FROM deployments dp JOIN model_versions v ON v.id = dp.model_version_id JOIN models m ON m.id = dp.model_id
"""


def _deployment(row: dict[str, Any]) -> d.Deployment:
    return d.Deployment(
        deployment_id=str(row["id"]), model_version_id=str(row["model_version_id"]), model_id=str(row["model_id"]),
        model_name=row["model_name"], version=row["version"], target=row["target"], alias=row["alias"],
        engine=row["engine"], endpoint=row["endpoint"], state=row["state"], auto_rollback=row["auto_rollback"],
        health_check_enabled=row["health_check_enabled"], health_check_timeout_ms=row["health_check_timeout_ms"],
        deployment_tags=tuple(row["deployment_tags"]),
        previous_deployment_id=str(row["previous_deployment_id"] or ""), error=row["error"],
        job_id=str(row["job_id"] or ""), owner_key_id=row["owner_key_id"], details=row["details"] or {},
        serving=row["serving"] or {}, last_health=row["last_health"], create_time=row["create_time"],
        update_time=row["update_time"])


def _uuid(value: str, field: str = "deployment_id") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise InvalidArgument.one(field, f"{value!r} is not a UUID") from None


class DeploymentStore:
    def __init__(self, pool: AsyncConnectionPool, jobs: JobStore):
        self.pool, self.jobs = pool, jobs

    # -- creating ------------------------------------------------------------------------------
    async def create(self, version: ModelVersion, *, target: str, alias: str, engine: str, auto_rollback: bool,
                     health_check_enabled: bool, health_check_timeout_ms: int, deployment_tags: list[str],
                     owner_key_id: str, extra_spec: dict[str, Any] | None = None) -> tuple[d.Deployment, jm.Job]:
        """The deployment (PENDING) and the job that works on it, committed together."""
        deployment_id, job_id = uuid.uuid4(), uuid.uuid4()
        spec = {"deployment_id": str(deployment_id), "model_version_id": version.model_version_id,
                "model_name": version.name, "version": version.version, "target": target, "alias": alias,
                **(extra_spec or {})}
        async with self.pool.connection() as conn, audited_transaction(conn):
            job = await self.jobs.insert(conn, f"deploy {version.name}:{version.version} to {target}", spec,
                                         owner_key_id, start=True, kind=jm.DEPLOYMENT, job_id=job_id)
            await conn.execute(
                "INSERT INTO deployments (id, model_version_id, model_id, target, state, auto_rollback, "
                "health_check_enabled, health_check_timeout_ms, deployment_tags, alias, engine, owner_key_id, job_id) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (deployment_id, version.model_version_id, version.model_id, target, d.PENDING, auto_rollback,
                 health_check_enabled, health_check_timeout_ms, list(deployment_tags), alias, engine, owner_key_id,
                 job_id))
            deployment = await self._get(conn, deployment_id)
        return deployment, job

    # -- reading -------------------------------------------------------------------------------
    async def get(self, deployment_id: str, model_version_id: str = "-") -> d.Deployment:
        """One deployment; with a `model_version_id` other than `-`, it must be of that version."""
        async with self.pool.connection() as conn:
            deployment = await self._get(conn, _uuid(deployment_id))
        if model_version_id not in ("-", "", deployment.model_version_id):
            raise NotFound(f"deployment {deployment_id} is not a deployment of version {model_version_id}",
                           metadata={"deployment_id": deployment_id, "model_version_id": model_version_id})
        return deployment

    async def _get(self, conn: psycopg.AsyncConnection, deployment_id: uuid.UUID, *, lock: bool = False) -> d.Deployment:
        cur = await conn.execute(_SELECT + " WHERE dp.id = %s" + (" FOR UPDATE OF dp" if lock else ""),
                                 (deployment_id,))
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"deployment {deployment_id} does not exist", metadata={"deployment_id": str(deployment_id)})
        return _deployment(row)

    async def list(self, model_version_id: str, *, states: list[str] = (), targets: list[str] = (),
                   page_size: int = 0, page_token: str = "") -> Page:
        v = Violations()
        size = check_page_size(v, page_size)
        if model_version_id not in ("-", ""):
            try:
                uuid.UUID(model_version_id)
            except ValueError:
                v.add("model_version_id", f"{model_version_id!r} is not a UUID or `-`")
        for i, state in enumerate(states):
            if state not in d.STATES:
                v.add(f"states[{i}]", f"unknown state {state!r}")
        for i, target in enumerate(targets):
            if target not in d.TARGETS:
                v.add(f"targets[{i}]", f"unknown target {target!r}; one of {', '.join(d.TARGETS)}")
        v.raise_if_any()
        query = pagination.fingerprint("deployments", model_version_id, sorted(states), sorted(targets))
        offset = pagination.decode(page_token, query)
        where, params = ["TRUE"], []
        if model_version_id not in ("-", ""):
            where.append("dp.model_version_id = %s")
            params.append(model_version_id)
        if states:
            where.append("dp.state = ANY(%s)")
            params.append(list(states))
        if targets:
            where.append("dp.target = ANY(%s)")
            params.append(list(targets))
        sql = " AND ".join(where)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                _SELECT + f" WHERE {sql} ORDER BY dp.create_time DESC, dp.id DESC LIMIT %s OFFSET %s",
                (*params, size, offset))
            rows = await cur.fetchall()
            cur = await conn.execute(f"SELECT count(*) AS n FROM deployments dp WHERE {sql}", params)
            total = (await cur.fetchone())["n"]
        return Page(tuple(_deployment(r) for r in rows), pagination.next_token(offset, size, total, query), total)

    async def live(self, model_id: str, target: str, alias: str) -> d.Deployment | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_SELECT + " WHERE dp.model_id = %s AND dp.target = %s AND dp.alias = %s "
                                     "AND dp.state = ANY(%s)", (model_id, target, alias, list(d.LIVE)))
            row = await cur.fetchone()
        return _deployment(row) if row else None

    async def local_active(self) -> list[d.Deployment]:
        """Local deployments a server process may be wanted for: in progress or live. For an
        in-progress one, `job_state` in `serving` tells whether its job still runs."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT dp.*, m.name AS model_name, v.version AS version, j.state AS job_state "
                "FROM deployments dp JOIN model_versions v ON v.id = dp.model_version_id "
                "JOIN models m ON m.id = dp.model_id LEFT JOIN jobs j ON j.id = dp.job_id "
                "WHERE dp.target = 'local' AND dp.state = ANY(%s) ORDER BY dp.create_time",
                (list(d.IN_PROGRESS + d.LIVE),))
            rows = await cur.fetchall()
        out = []
        for row in rows:
            deployment = _deployment(row)
            out.append(dataclasses.replace(deployment, serving={**deployment.serving, "job_state": row["job_state"] or ""}))
        return out

    # -- the job's side ------------------------------------------------------------------------
    async def start(self, deployment_id: str) -> d.Deployment:
        """PENDING -> DEPLOYING (a resumed job finds it DEPLOYING already). Anything else is over."""
        async with self.pool.connection() as conn, audited_transaction(conn):
            current = await self._get(conn, _uuid(deployment_id), lock=True)
            if current.state not in d.IN_PROGRESS:
                return current
            await self._set(conn, current, state=d.DEPLOYING)
            return await self._get(conn, _uuid(deployment_id))

    async def update_serving(self, deployment_id: str, **values: Any) -> d.Deployment:
        """Merges `values` into the local serving record (artifact, host, port, pid, ready, routed)."""
        async with self.pool.connection() as conn, audited_transaction(conn):
            await conn.execute("UPDATE deployments SET serving = serving || %s, update_time = now() WHERE id = %s",
                               (Jsonb(values), _uuid(deployment_id)))
            await conn.execute("SELECT pg_notify(%s, %s)", (d.SERVING_CHANNEL, deployment_id))
            return await self._get(conn, _uuid(deployment_id))

    async def fail(self, deployment_id: str, error: dict[str, Any]) -> d.Deployment:
        """An in-progress deployment that will not go live: FAILED with `error` ({code, message,
        reason}). A live one is left as it is (its job's late failure cannot undo the switch)."""
        async with self.pool.connection() as conn, audited_transaction(conn):
            current = await self._get(conn, _uuid(deployment_id), lock=True)
            if current.state in d.IN_PROGRESS:
                await self._set(conn, current, state=d.FAILED, error=Jsonb(error))
            return await self._get(conn, _uuid(deployment_id))

    async def go_live(self, deployment_id: str, *, endpoint: str, details: dict[str, Any],
                      health: dict[str, Any] | None) -> d.Deployment:
        """The switch: this deployment becomes the live one of its model, target and alias; the one
        live before becomes SUPERSEDED and is remembered as `previous_deployment_id`; the registry
        alias moves to this version. One transaction."""
        async with self.pool.connection() as conn, audited_transaction(conn):
            current = await self._get(conn, _uuid(deployment_id), lock=True)
            if current.state == d.HEALTHY:
                return current  # a resumed job finds its switch already made
            if current.state not in d.IN_PROGRESS:
                raise FailedPrecondition(f"deployment {deployment_id} is {current.state}; it cannot go live",
                                         reason="DEPLOYMENT_NOT_IN_PROGRESS")
            await conn.execute("SELECT 1 FROM models WHERE id = %s FOR UPDATE", (current.model_id,))
            previous = await self._live_on(conn, current)
            if previous is not None:
                await self._set(conn, previous, state=d.SUPERSEDED)
            await self._set(conn, current, state=d.HEALTHY, endpoint=endpoint, details=Jsonb(details),
                            last_health=Jsonb(health) if health else None,
                            previous_deployment_id=uuid.UUID(previous.deployment_id) if previous else None)
            await self._point_alias(conn, current.model_id, current.alias, current.model_version_id)
            return await self._get(conn, _uuid(deployment_id))

    # -- the API's side ------------------------------------------------------------------------
    async def rollback(self, deployment_id: str, model_version_id: str,
                       restore: Callable[[d.Deployment, d.Deployment], Awaitable[None]]) -> d.Deployment:
        """Brings back the deployment this live one replaced: `restore(current, previous)` moves
        the alias at the target first (outside any lock it could hold long, but inside the
        transaction: if it fails, nothing here changes). Returns the previous deployment, live."""
        async with self.pool.connection() as conn, audited_transaction(conn):
            current = await self._get(conn, _uuid(deployment_id), lock=True)
            self._check_version(current, model_version_id)
            await conn.execute("SELECT 1 FROM models WHERE id = %s FOR UPDATE", (current.model_id,))
            current = await self._get(conn, _uuid(deployment_id))
            if not current.live:
                raise FailedPrecondition(f"deployment {deployment_id} is {current.state}, not live; only the live "
                                         "deployment of an alias can be rolled back", reason="DEPLOYMENT_NOT_LIVE")
            if not current.previous_deployment_id:
                raise FailedPrecondition(f"deployment {deployment_id} replaced no deployment; there is nothing to "
                                         "roll back to (undeploy it instead)", reason="NOTHING_TO_ROLL_BACK")
            previous = await self._get(conn, _uuid(current.previous_deployment_id), lock=True)
            if previous.state not in (d.SUPERSEDED, d.ROLLED_BACK):
                raise FailedPrecondition(f"the deployment it replaced ({previous.deployment_id}) is {previous.state} "
                                         "and cannot serve again", reason="PREVIOUS_NOT_RESTORABLE")
            await restore(current, previous)
            await self._set(conn, current, state=d.ROLLED_BACK)
            await self._set(conn, previous, state=d.HEALTHY, serving=Jsonb({**previous.serving, "ready": False,
                                                                             "routed": False}))
            await self._point_alias(conn, previous.model_id, previous.alias, previous.model_version_id)
            return await self._get(conn, _uuid(previous.deployment_id))

    async def undeploy(self, deployment_id: str, model_version_id: str,
                       remove: Callable[[d.Deployment], Awaitable[None]]) -> d.Deployment:
        async with self.pool.connection() as conn, audited_transaction(conn):
            current = await self._get(conn, _uuid(deployment_id), lock=True)
            self._check_version(current, model_version_id)
            if not current.live:
                raise FailedPrecondition(f"deployment {deployment_id} is {current.state}, not live",
                                         reason="DEPLOYMENT_NOT_LIVE")
            await remove(current)
            await self._set(conn, current, state=d.UNDEPLOYED)
            await conn.execute("DELETE FROM model_aliases WHERE model_id = %s AND alias = %s AND version_id = %s",
                               (current.model_id, current.alias, current.model_version_id))
            return await self._get(conn, _uuid(deployment_id))

    async def record_health(self, deployment_id: str, health: dict[str, Any]) -> d.Deployment:
        """Stores a check's outcome; a live deployment turns UNHEALTHY or HEALTHY with it."""
        async with self.pool.connection() as conn, audited_transaction(conn):
            current = await self._get(conn, _uuid(deployment_id), lock=True)
            values: dict[str, Any] = {"last_health": Jsonb(health)}
            if current.live:
                values["state"] = d.HEALTHY if health["healthy"] else d.UNHEALTHY
            await self._set(conn, current, **values)
            return await self._get(conn, _uuid(deployment_id))

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _check_version(current: d.Deployment, model_version_id: str) -> None:
        if model_version_id not in ("-", "", current.model_version_id):
            raise NotFound(f"deployment {current.deployment_id} is not a deployment of version {model_version_id}",
                           metadata={"deployment_id": current.deployment_id, "model_version_id": model_version_id})

    async def _live_on(self, conn: psycopg.AsyncConnection, current: d.Deployment) -> d.Deployment | None:
        cur = await conn.execute(_SELECT + " WHERE dp.model_id = %s AND dp.target = %s AND dp.alias = %s "
                                 "AND dp.state = ANY(%s) AND dp.id <> %s FOR UPDATE OF dp",
                                 (current.model_id, current.target, current.alias, list(d.LIVE),
                                  current.deployment_id))
        row = await cur.fetchone()
        return _deployment(row) if row else None

    async def _set(self, conn: psycopg.AsyncConnection, current: d.Deployment, **values: Any) -> None:
        columns = ", ".join(f"{name} = %s" for name in values)
        await conn.execute(f"UPDATE deployments SET {columns}, update_time = now() WHERE id = %s",
                           (*values.values(), current.deployment_id))
        await conn.execute("SELECT pg_notify(%s, %s)", (d.SERVING_CHANNEL, current.deployment_id))

    @staticmethod
    async def _point_alias(conn: psycopg.AsyncConnection, model_id: str, alias: str, version_id: str) -> None:
        await conn.execute(
            "INSERT INTO model_aliases (model_id, alias, version_id) VALUES (%s, %s, %s) "
            "ON CONFLICT (model_id, alias) DO UPDATE SET version_id = EXCLUDED.version_id, update_time = now()",
            (model_id, alias, version_id))
