"""The registry's Postgres store. Every method takes and returns domain objects; uniqueness and
concurrency are left to the database (unique constraints, guarded UPDATEs, row locks)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from trainforge.core import pagination
from trainforge.core.access.audit import audited_transaction
from trainforge.core.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from trainforge.core.paths import confine
from trainforge.core.registry import usage as usage_hist
from trainforge.core.registry import validation as check
from trainforge.core.registry.artifacts import ArtifactStore, StagedFiles, check_relative_path, manifest_digest
from trainforge.core.registry.filters import compile_filter
from trainforge.core.registry.models import (
    Architecture,
    ArtifactFile,
    Comparison,
    History,
    HistoryEntry,
    Lineage,
    Manifest,
    MetricComparison,
    Model,
    ModelVersion,
    NewVersion,
    Page,
    RegistryHealth,
    UsageStats,
    Verification,
    split_registry_ref,
)

# Deployment states in which a version is being served; such versions are not deleted unforced.
LIVE_DEPLOYMENT_STATES = ("PENDING", "DEPLOYING", "HEALTHY", "UNHEALTHY")
# Metrics where smaller is better when comparing versions.
LOWER_IS_BETTER = re.compile(r"(latency|loss|perplexity|memory|size|error|time)", re.IGNORECASE)
MODEL_UPDATABLE = ("description", "tags")
VERSION_UPDATABLE = ("description", "tags", "performance_metrics", "changelog")
MAX_COMPARE = 16
MAX_LATENCY_SAMPLES = 10_000
# First key of the two-key advisory locks on blobs ("blob" as a big-endian int32); the second is the
# blob's folder in the store (the digest's first byte, see _blob_lock_key). Two-key locks never
# conflict with the one-key locks of jobs and bootstrap.
BLOB_LOCK_SPACE = 0x626C6F62

log = logging.getLogger(__name__)


def _version_select(models_alias: str) -> str:
    """A version row with its model's name, aliases and deployed flag. The models table is named
    `models_alias` so that a query embedding this one (a LATERAL join) can keep its own `m`: with
    the same alias inside, `v.model_id = m.id` would compare the inner row with itself."""
    live = ", ".join(f"'{s}'" for s in LIVE_DEPLOYMENT_STATES)
    return f"""
SELECT v.*, {models_alias}.name,
       COALESCE((SELECT array_agg(a.alias ORDER BY a.alias) FROM model_aliases a
                 WHERE a.version_id = v.id), '{{}}') AS aliases,
       EXISTS (SELECT 1 FROM deployments d WHERE d.model_version_id = v.id
               AND d.state IN ({live})) AS deployed
FROM model_versions v JOIN models {models_alias} ON {models_alias}.id = v.model_id
"""


# Top-level version queries (filters and order-by name `m.name`).
_VERSION_SELECT = _version_select("m")

_ORDER_FIELDS = {
    "create_time": "v.create_time",
    "name": "m.name",
    "version": "v.version",
    "size_mb": "v.size_mb",
    "parameter_count": "v.parameter_count",
}


# A model with its aliases, version count and latest version in one round trip (GetModel is the
# registry's hottest read: four queries cost ~0.5 ms more of server CPU per call on 2 cores).
_MODEL_SELECT = f"""
SELECT m.*,
       COALESCE((SELECT jsonb_object_agg(a.alias, av.version) FROM model_aliases a
                 JOIN model_versions av ON av.id = a.version_id WHERE a.model_id = m.id), '{{}}') AS alias_map,
       (SELECT count(*) FROM model_versions c WHERE c.model_id = m.id) AS version_count,
       to_jsonb(lv) AS latest
FROM models m
LEFT JOIN LATERAL ({_version_select("lm")} WHERE v.model_id = m.id ORDER BY v.create_time DESC, v.id DESC LIMIT 1) lv
  ON true
"""


def _etag() -> str:
    return uuid.uuid4().hex[:16]


def _blob_lock_key(sha256: str) -> int:
    """One lock per blob folder (`sha256/<first byte>/`, 256 of them), not per digest: a version
    may hold 10,000 files, and per-digest locks would take 10,000 entries of PostgreSQL's lock
    table (max_locks_per_transaction 64 x max_connections: 6,400 by default) in one transaction.
    Digests in one folder share the lock; a collector waits at most for the registers that
    publish into the same folders, a register for one collector's unlinks."""
    return int(sha256[:2], 16)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _version_from_row(row: dict[str, Any]) -> ModelVersion:
    lineage = row["lineage"] or {}
    return ModelVersion(
        model_version_id=str(row["id"]),
        model_id=str(row["model_id"]),
        name=row["name"],
        version=row["version"],
        description=row["description"],
        model_type=row["model_type"],
        size_mb=row["size_mb"],
        parameter_count=row["parameter_count"],
        architecture=Architecture(**(row["architecture"] or {})),
        performance_metrics={k: float(v) for k, v in (row["metrics"] or {}).items()},
        tags=tuple(row["tags"]),
        lineage=Lineage(**lineage),
        source=row["source"],
        changelog=row["changelog"],
        aliases=tuple(row["aliases"]),
        manifest_digest=row["manifest_digest"],
        artifact_count=row["artifact_count"],
        artifact_bytes=row["artifact_bytes"],
        deployed=row["deployed"],
        create_time=row["create_time"],
        update_time=row["update_time"],
        etag=row["etag"],
    )


def _version_from_json(data: dict[str, Any]) -> ModelVersion:
    """A version row that came back as jsonb (see _MODEL_SELECT): timestamps are ISO strings."""
    row = dict(data)
    for key in ("create_time", "update_time"):
        row[key] = datetime.fromisoformat(row[key])
    return _version_from_row(row)


def _model_from_row(row: dict[str, Any]) -> Model:
    latest = _version_from_json(row["latest"]) if row["latest"] else None
    return Model(
        model_id=str(row["id"]),
        name=row["name"],
        description=row["description"],
        tags=tuple(row["tags"]),
        aliases=dict(sorted(row["alias_map"].items())),
        latest_version=latest.version if latest else "",
        version_count=row["version_count"],
        latest=latest,
        create_time=row["create_time"],
        update_time=row["update_time"],
        etag=row["etag"],
    )


def _lineage_json(lineage: Lineage) -> dict[str, Any]:
    return {
        "base_model": lineage.base_model,
        "dataset_digest": lineage.dataset_digest,
        "job_id": lineage.job_id,
        "config": lineage.config,
        "parent_model_version_id": lineage.parent_model_version_id,
    }


def _arch_json(arch: Architecture) -> dict[str, Any]:
    return {k: getattr(arch, k) for k in Architecture.__dataclass_fields__}


class RegistryStore:
    def __init__(self, pool: AsyncConnectionPool, artifacts: ArtifactStore, models_root: Path):
        self.pool = pool
        self.artifacts = artifacts
        self.models_root = models_root

    # -- lookups -----------------------------------------------------------------------------
    async def _model_row(self, conn: psycopg.AsyncConnection, ref: str, *, lock: bool = False) -> dict[str, Any]:
        if not ref:
            raise InvalidArgument.one("model_id", "is required")
        column = "id" if _is_uuid(ref) else "name"
        suffix = " FOR UPDATE" if lock else ""
        cur = await conn.execute(f"SELECT * FROM models WHERE {column} = %s{suffix}", (ref,))
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"model {ref!r} does not exist", metadata={"model": ref})
        return row

    async def _version(self, conn: psycopg.AsyncConnection, model_id: Any, version: str, label: str) -> ModelVersion:
        """A version by version string, else by alias."""
        if not version:
            raise InvalidArgument.one("version", "is required")
        cur = await conn.execute(
            _VERSION_SELECT + " WHERE v.model_id = %s AND (v.version = %s OR v.id = "
            "(SELECT version_id FROM model_aliases WHERE model_id = %s AND alias = %s)) "
            "ORDER BY (v.version = %s) DESC LIMIT 1",
            (model_id, version, model_id, version, version),
        )
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"model {label!r} has no version or alias {version!r}",
                           metadata={"model": label, "version": version})
        return _version_from_row(row)

    async def _resolve_ref(self, conn: psycopg.AsyncConnection, ref: str, field: str) -> ModelVersion:
        """`<model_version_id>`, `name:version` or `name@alias`."""
        if "@" in ref or ":" in ref:
            name, selector = split_registry_ref(ref)
        elif _is_uuid(ref):
            cur = await conn.execute(_VERSION_SELECT + " WHERE v.id = %s", (ref,))
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"model version {ref!r} does not exist", metadata={"model_version_id": ref})
            return _version_from_row(row)
        else:
            raise InvalidArgument.one(field, f"{ref!r} is not a model_version_id, name:version or name@alias")
        model = await self._model_row(conn, name)
        return await self._version(conn, model["id"], selector, name)

    async def _model(self, conn: psycopg.AsyncConnection, row: dict[str, Any]) -> Model:
        cur = await conn.execute(_MODEL_SELECT + " WHERE m.id = %s", (row["id"],))
        return _model_from_row(await cur.fetchone())

    # -- models ------------------------------------------------------------------------------
    async def register(self, new: NewVersion, *, artifacts_dir: Path | None = None) -> ModelVersion:
        """Registers `new`. Its artifacts come from `new.source`, a user path confined to the models
        root, or from `artifacts_dir`, a folder trainforge itself wrote (a job's output)."""
        check.check_new_version(new)
        staged = StagedFiles()
        source = ""
        folder = artifacts_dir
        if folder is None and new.source:
            folder = confine(self.models_root, new.source, "source", kind="dir")
        if folder is not None:
            # Hashed into tmp/ before the transaction (the slow part), published inside it.
            staged = await asyncio.to_thread(self.artifacts.stage_tree, folder)
            source = str(folder)
        files = staged.files
        version_id = uuid.uuid4()
        total = sum(f.size_bytes for f in files)
        try:
            async with self.pool.connection() as conn, audited_transaction(conn):
                cur = await conn.execute(
                    "INSERT INTO models (id, name, etag) VALUES (%s, %s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET update_time = now(), etag = EXCLUDED.etag RETURNING id",
                    (uuid.uuid4(), new.name, _etag()),
                )
                model_id = (await cur.fetchone())["id"]
                await conn.execute(
                    "INSERT INTO model_versions (id, model_id, version, description, model_type, size_mb, "
                    "parameter_count, architecture, metrics, tags, lineage, source, changelog, manifest_digest, "
                    "artifact_count, artifact_bytes, etag) "
                    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    (
                        version_id, model_id, new.version, new.description, new.model_type,
                        round(total / 2**20, 3) if files else new.size_mb, new.parameter_count,
                        Jsonb(_arch_json(new.architecture)), Jsonb(new.performance_metrics), list(new.tags),
                        Jsonb(_lineage_json(new.lineage)), source, new.changelog,
                        manifest_digest(files) if files else "", len(files), total, _etag(),
                    ),
                )
                await self._publish(conn, staged)
                await self._insert_artifacts(conn, version_id, files)
        except psycopg.errors.UniqueViolation:
            await self._abandon(staged)
            raise AlreadyExists(
                f"model {new.name!r} already has a version {new.version!r}",
                metadata={"model": new.name, "version": new.version},
            ) from None
        except BaseException:
            await self._abandon(staged)
            raise
        async with self.pool.connection() as conn:
            cur = await conn.execute(_VERSION_SELECT + " WHERE v.id = %s", (version_id,))
            return _version_from_row(await cur.fetchone())

    # -- blobs: publication and collection ---------------------------------------------------
    # A blob may be shared by any number of versions, and a register of identical content can run
    # beside a delete of its last other reference. Both sides lock the blob's digest (a
    # transaction-scoped advisory lock): register holds it shared from publishing the blob until
    # the commit that references it; the collector holds it exclusive while it re-reads the
    # references and unlinks. Either the collector runs first (the register re-publishes the bytes
    # it staged) or it waits for the commit and sees the new reference. docs/decisions.md.
    async def _lock_blobs(self, conn: psycopg.AsyncConnection, shas: Iterable[str], *, exclusive: bool) -> None:
        keys = sorted({_blob_lock_key(sha) for sha in shas})  # one order everywhere: no deadlock
        if keys:
            fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
            # unnest keeps the array's order, so the locks are taken in sorted order.
            await conn.execute(f"SELECT {fn}({BLOB_LOCK_SPACE}, k) FROM unnest(%s::int[]) AS k", (keys,))

    async def _publish(self, conn: psycopg.AsyncConnection, staged: StagedFiles) -> None:
        """Inside the transaction that inserts the references: the blobs under their digests."""
        if staged.files:
            await self._lock_blobs(conn, staged.shas, exclusive=False)
            await asyncio.to_thread(staged.publish)

    async def _abandon(self, staged: StagedFiles) -> None:
        """After a failed transaction: the staged files go, and published blobs nothing else
        references are collected."""
        await asyncio.to_thread(staged.discard)
        if staged.files:
            try:
                await self._collect_garbage(staged.shas)
            except Exception:  # noqa: BLE001 - the original error is the one to report
                log.warning("could not collect the blobs of a failed registration", exc_info=True)

    async def _insert_artifacts(self, conn: psycopg.AsyncConnection, version_id: Any, files: list[ArtifactFile]) -> None:
        if files:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO artifacts (version_id, path, sha256, size_bytes) VALUES (%s, %s, %s, %s)",
                    [(version_id, f.path, f.sha256, f.size_bytes) for f in files],
                )

    async def get_model(self, ref: str) -> Model:
        if not ref:
            raise InvalidArgument.one("model_id", "is required")
        column = "id" if _is_uuid(ref) else "name"
        async with self.pool.connection() as conn:
            cur = await conn.execute(_MODEL_SELECT + f" WHERE m.{column} = %s", (ref,))
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"model {ref!r} does not exist", metadata={"model": ref})
        return _model_from_row(row)

    async def list_models(self, page_size: int, page_token: str) -> Page:
        v = check.Violations()
        size = check.check_page_size(v, page_size)
        v.raise_if_any()
        query = pagination.fingerprint("list_models")
        offset = pagination.decode(page_token, query)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                _MODEL_SELECT.replace("SELECT m.*", "SELECT count(*) OVER () AS total, m.*", 1)
                + " ORDER BY m.create_time DESC, m.id DESC LIMIT %s OFFSET %s",
                (size, offset),
            )
            rows = await cur.fetchall()
            total = rows[0]["total"] if rows else await self._count(conn, "models")
            models = tuple(_model_from_row(r) for r in rows)
        return Page(models, pagination.next_token(offset, size, total, query), total)

    async def _count(self, conn: psycopg.AsyncConnection, table: str) -> int:
        cur = await conn.execute(f"SELECT count(*) AS n FROM {table}")
        return (await cur.fetchone())["n"]

    async def update_model(self, ref: str, values: dict[str, Any], mask: Iterable[str], etag: str) -> Model:
        fields = self._mask(mask, values, MODEL_UPDATABLE, "update_mask")
        v = check.Violations()
        if "description" in fields:
            check.check_text(v, "model.description", values.get("description", ""), check.MAX_DESCRIPTION)
        if "tags" in fields:
            check.check_tags(v, "model.tags", values.get("tags", ()))
        v.raise_if_any()
        async with self.pool.connection() as conn, audited_transaction(conn):
            row = await self._model_row(conn, ref, lock=True)
            if etag and etag != row["etag"]:
                raise Aborted(f"model {ref!r} changed since etag {etag!r} was read; fetch it again",
                              metadata={"model": ref, "etag": row["etag"]})
            assignments = [f"{f} = %s" for f in fields]
            params = [list(values.get(f, ())) if f == "tags" else values.get(f, "") for f in fields]
            await conn.execute(
                f"UPDATE models SET {', '.join(assignments + ['etag = %s', 'update_time = now()'])} WHERE id = %s",
                (*params, _etag(), row["id"]),
            )
            return await self._model(conn, await self._model_row(conn, str(row["id"])))

    @staticmethod
    def _mask(mask: Iterable[str], values: dict[str, Any], allowed: tuple[str, ...], field: str) -> list[str]:
        mask = [m.strip() for m in mask if m.strip()]
        if not mask:
            # No mask: every updatable field the caller set (AIP-134's implied mask).
            mask = [f for f in allowed if values.get(f) not in (None, "", (), [], {})]
        bad = [m for m in mask if m not in allowed]
        if bad:
            raise InvalidArgument([FieldViolation(field, f"cannot update {m!r}; updatable: {', '.join(allowed)}")
                                   for m in bad])
        if not mask:
            raise InvalidArgument.one(field, f"nothing to update; set one of {', '.join(allowed)}")
        return list(dict.fromkeys(mask))

    async def delete_model(self, ref: str, force: bool) -> Model:
        async with self.pool.connection() as conn, audited_transaction(conn):
            row = await self._model_row(conn, ref, lock=True)
            model = await self._model(conn, row)
            await self._refuse_if_in_use(conn, "model_id", row["id"], ref, force=force)
            shas = await self._shas(conn, "v.model_id = %s", row["id"])
            await conn.execute("DELETE FROM model_aliases WHERE model_id = %s", (row["id"],))
            await conn.execute("DELETE FROM models WHERE id = %s", (row["id"],))
        await self._collect_garbage(shas)
        return model

    async def _refuse_if_in_use(self, conn: psycopg.AsyncConnection, column: str, key: Any, label: str, *,
                                force: bool = False) -> None:
        """Refuses to delete versions that are deployed (always: a deleted version would vanish from
        under its server, Ollama or hub copy, and undeploying first is one call) or that have
        aliases (unless `force`)."""
        cur = await conn.execute(
            f"SELECT v.version, array_remove(array_agg(DISTINCT a.alias), NULL) AS aliases, "
            f"bool_or(d.id IS NOT NULL) AS deployed FROM model_versions v "
            f"LEFT JOIN model_aliases a ON a.version_id = v.id "
            f"LEFT JOIN deployments d ON d.model_version_id = v.id AND d.state = ANY(%s) "
            f"WHERE v.{column} = %s GROUP BY v.version",
            (list(LIVE_DEPLOYMENT_STATES), key),
        )
        reasons, deployed = [], False
        for r in await cur.fetchall():
            if r["deployed"]:
                deployed = True
                reasons.append(f"version {r['version']} is deployed")
            if r["aliases"] and not force:
                reasons.append(f"version {r['version']} has aliases {', '.join(sorted(r['aliases']))}")
        if deployed:
            raise FailedPrecondition(f"{label!r} is in use: {'; '.join(reasons)}; undeploy it first (force does not "
                                     "delete a deployed version)", reason="MODEL_DEPLOYED", metadata={"model": label})
        if reasons:
            raise FailedPrecondition(f"{label!r} is in use: {'; '.join(reasons)}; pass force to delete anyway",
                                     reason="MODEL_IN_USE", metadata={"model": label})

    async def _shas(self, conn: psycopg.AsyncConnection, where: str, key: Any) -> set[str]:
        cur = await conn.execute(
            f"SELECT DISTINCT a.sha256 FROM artifacts a JOIN model_versions v ON v.id = a.version_id WHERE {where}",
            (key,),
        )
        return {r["sha256"] for r in await cur.fetchall()}

    async def _collect_garbage(self, shas: set[str]) -> None:
        """Remove blobs no remaining version references (they may be shared between versions).
        The references are read under each blob's exclusive lock, in the transaction that unlinks
        (see _lock_blobs): a registration that published one of them has committed by then."""
        if not shas:
            return
        async with self.pool.connection() as conn, conn.transaction():
            await self._lock_blobs(conn, shas, exclusive=True)
            # A statement after the lock: its snapshot includes every commit the lock waited for.
            cur = await conn.execute("SELECT DISTINCT sha256 FROM artifacts WHERE sha256 = ANY(%s)", (list(shas),))
            still_used = {r["sha256"] for r in await cur.fetchall()}
            unused = shas - still_used
            await asyncio.to_thread(lambda: [self.artifacts.blob_path(sha).unlink(missing_ok=True) for sha in unused])

    # -- versions ----------------------------------------------------------------------------
    async def list_versions(self, ref: str, page_size: int, page_token: str) -> Page:
        v = check.Violations()
        size = check.check_page_size(v, page_size)
        v.raise_if_any()
        async with self.pool.connection() as conn:
            model = await self._model_row(conn, ref)
            query = pagination.fingerprint("list_versions", str(model["id"]))
            offset = pagination.decode(page_token, query)
            cur = await conn.execute(
                _VERSION_SELECT.replace("SELECT v.*", "SELECT count(*) OVER () AS total, v.*", 1)
                + " WHERE v.model_id = %s ORDER BY v.create_time DESC, v.id DESC LIMIT %s OFFSET %s",
                (model["id"], size, offset),
            )
            rows = await cur.fetchall()
            if rows:
                total = rows[0]["total"]
            else:
                cur = await conn.execute("SELECT count(*) AS n FROM model_versions WHERE model_id = %s", (model["id"],))
                total = (await cur.fetchone())["n"]
        return Page(tuple(_version_from_row(r) for r in rows), pagination.next_token(offset, size, total, query), total)

    async def resolve_version(self, ref: str, field: str) -> ModelVersion:
        """A version named by `<model_version_id>`, `name:version` or `name@alias`; `field` names
        the request field in errors."""
        async with self.pool.connection() as conn:
            return await self._resolve_ref(conn, ref, field)

    async def get_version(self, ref: str, version: str) -> ModelVersion:
        async with self.pool.connection() as conn:
            model = await self._model_row(conn, ref)
            return await self._version(conn, model["id"], version, ref)

    async def update_version(self, ref: str, version: str, values: dict[str, Any], mask: Iterable[str],
                             etag: str) -> ModelVersion:
        fields = self._mask(mask, values, VERSION_UPDATABLE, "update_mask")
        v = check.Violations()
        if "description" in fields:
            check.check_text(v, "model_version.description", values.get("description", ""), check.MAX_DESCRIPTION)
        if "changelog" in fields:
            check.check_text(v, "model_version.changelog", values.get("changelog", ""), check.MAX_CHANGELOG)
        if "tags" in fields:
            check.check_tags(v, "model_version.tags", values.get("tags", ()))
        if "performance_metrics" in fields:
            check.check_metrics(v, "model_version.performance_metrics", values.get("performance_metrics", {}))
        v.raise_if_any()
        columns = {"performance_metrics": "metrics"}
        async with self.pool.connection() as conn, audited_transaction(conn):
            model = await self._model_row(conn, ref)
            current = await self._version(conn, model["id"], version, ref)
            params: list[Any] = []
            for f in fields:
                value = values.get(f)
                params.append(Jsonb(value or {}) if f == "performance_metrics" else
                              list(value or ()) if f == "tags" else value or "")
            assignments = [f"{columns.get(f, f)} = %s" for f in fields]
            # The etag check and the write are one statement: a concurrent writer cannot slip between.
            cur = await conn.execute(
                f"UPDATE model_versions SET {', '.join(assignments)}, etag = %s, update_time = now() "
                f"WHERE id = %s AND (%s = '' OR etag = %s) RETURNING id",
                (*params, _etag(), current.model_version_id, etag, etag),
            )
            if await cur.fetchone() is None:
                raise Aborted(f"version {current.version!r} of {ref!r} changed since etag {etag!r} was read; "
                              "fetch it again", metadata={"model": ref, "version": current.version})
            cur = await conn.execute(_VERSION_SELECT + " WHERE v.id = %s", (current.model_version_id,))
            return _version_from_row(await cur.fetchone())

    async def delete_version(self, ref: str, version: str, force: bool) -> ModelVersion:
        async with self.pool.connection() as conn, audited_transaction(conn):
            model = await self._model_row(conn, ref, lock=True)
            current = await self._version(conn, model["id"], version, ref)
            await self._refuse_if_in_use(conn, "id", current.model_version_id, f"{ref}:{current.version}", force=force)
            shas = await self._shas(conn, "v.id = %s", current.model_version_id)
            await conn.execute("DELETE FROM model_aliases WHERE version_id = %s", (current.model_version_id,))
            await conn.execute("DELETE FROM model_versions WHERE id = %s", (current.model_version_id,))
            await conn.execute("UPDATE models SET etag = %s, update_time = now() WHERE id = %s",
                               (_etag(), model["id"]))
        await self._collect_garbage(shas)
        return current

    # -- aliases -----------------------------------------------------------------------------
    async def set_alias(self, ref: str, alias: str, version: str) -> Model:
        v = check.Violations()
        check.check_alias(v, "alias", alias)
        if not version:
            v.add("version", "is required")
        v.raise_if_any()
        async with self.pool.connection() as conn, audited_transaction(conn):
            model = await self._model_row(conn, ref, lock=True)
            cur = await conn.execute("SELECT 1 FROM model_versions WHERE model_id = %s AND version = %s",
                                     (model["id"], alias))
            if await cur.fetchone():
                raise InvalidArgument.one("alias", f"{alias!r} is a version string of {ref!r}; pick another alias")
            cur = await conn.execute("SELECT id FROM model_versions WHERE model_id = %s AND version = %s",
                                     (model["id"], version))
            target = await cur.fetchone()
            if target is None:
                raise NotFound(f"model {ref!r} has no version {version!r}", metadata={"model": ref, "version": version})
            await conn.execute(
                "INSERT INTO model_aliases (model_id, alias, version_id) VALUES (%s, %s, %s) "
                "ON CONFLICT (model_id, alias) DO UPDATE SET version_id = EXCLUDED.version_id, update_time = now()",
                (model["id"], alias, target["id"]),
            )
            await conn.execute("UPDATE models SET etag = %s, update_time = now() WHERE id = %s", (_etag(), model["id"]))
            return await self._model(conn, await self._model_row(conn, str(model["id"])))

    async def delete_alias(self, ref: str, alias: str) -> Model:
        async with self.pool.connection() as conn, audited_transaction(conn):
            model = await self._model_row(conn, ref, lock=True)
            cur = await conn.execute("DELETE FROM model_aliases WHERE model_id = %s AND alias = %s RETURNING alias",
                                     (model["id"], alias))
            if await cur.fetchone() is None:
                raise NotFound(f"model {ref!r} has no alias {alias!r}", metadata={"model": ref, "alias": alias})
            await conn.execute("UPDATE models SET etag = %s, update_time = now() WHERE id = %s", (_etag(), model["id"]))
            return await self._model(conn, await self._model_row(conn, str(model["id"])))

    # -- search and compare ------------------------------------------------------------------
    @staticmethod
    def _order_by(text: str) -> str:
        if not text.strip():
            return "v.create_time DESC, v.id DESC"
        parts, violations = [], []
        for item in text.split(","):
            words = item.split()
            if not words or len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
                violations.append(f"{item.strip()!r} is not `field` or `field desc`")
                continue
            field, direction = words[0], (words[1].upper() if len(words) == 2 else "ASC")
            if field in _ORDER_FIELDS:
                parts.append(f"{_ORDER_FIELDS[field]} {direction}")
            elif re.fullmatch(r"(performance_)?metrics\.[A-Za-z][A-Za-z0-9_]{0,63}", field):
                name = field.split(".", 1)[1]
                parts.append(f"(v.metrics->>'{name}')::double precision {direction} NULLS LAST")
            else:
                violations.append(f"cannot order by {field!r}; use {', '.join(_ORDER_FIELDS)} or metrics.<name>")
        if violations:
            raise InvalidArgument([FieldViolation("order_by", d) for d in violations])
        return ", ".join(parts + ["v.id DESC"])

    async def search(self, filter_text: str, query: str, order_by: str, page_size: int, page_token: str) -> Page:
        v = check.Violations()
        size = check.check_page_size(v, page_size)
        if len(query) > 256:
            v.add("query", "must be at most 256 characters")
        v.raise_if_any()
        compiled = compile_filter(filter_text)
        order = self._order_by(order_by)
        where, params = [compiled.sql], list(compiled.params)
        if query.strip():
            pattern = "%" + query.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(m.name ILIKE %s OR v.description ILIKE %s OR m.description ILIKE %s "
                         "OR EXISTS (SELECT 1 FROM unnest(v.tags || m.tags) t WHERE t ILIKE %s))")
            params += [pattern] * 4
        key = pagination.fingerprint("search", filter_text, query, order_by, size)
        offset = pagination.decode(page_token, key)
        sql = (_VERSION_SELECT.replace("SELECT v.*", "SELECT count(*) OVER () AS total, v.*", 1)
               + f" WHERE {' AND '.join(f'({w})' for w in where)} ORDER BY {order} LIMIT %s OFFSET %s")
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql, (*params, size, offset))
            rows = await cur.fetchall()
            if rows:
                total = rows[0]["total"]
            elif offset:
                count_sql = ("SELECT count(*) AS n FROM model_versions v JOIN models m ON m.id = v.model_id "
                             f"WHERE {' AND '.join(f'({w})' for w in where)}")
                total = (await (await conn.execute(count_sql, params)).fetchone())["n"]
            else:
                total = 0
        return Page(tuple(_version_from_row(r) for r in rows), pagination.next_token(offset, size, total, key), total)

    async def compare(self, refs: list[str], metrics: list[str]) -> Comparison:
        v = check.Violations()
        if len(refs) < 2:
            v.add("model_version_ids", f"give at least 2 versions to compare (got {len(refs)})")
        if len(refs) > MAX_COMPARE:
            v.add("model_version_ids", f"at most {MAX_COMPARE} versions (got {len(refs)})")
        for i, ref in enumerate(refs):
            if not ref:
                v.add(f"model_version_ids[{i}]", "must not be empty")
        v.raise_if_any()
        async with self.pool.connection() as conn:
            versions = [await self._resolve_ref(conn, ref, f"model_version_ids[{i}]") for i, ref in enumerate(refs)]
        names = sorted(set(metrics) if metrics else {m for ver in versions for m in ver.performance_metrics})
        rows = []
        for name in names:
            values = tuple(ver.performance_metrics.get(name, math.nan) for ver in versions)
            base = values[0]
            deltas = tuple(val - base for val in values)
            present = [(val, ver.model_version_id) for val, ver in zip(values, versions) if not math.isnan(val)]
            best = ""
            if present:
                pick = min if LOWER_IS_BETTER.search(name) else max
                best = pick(present, key=lambda p: p[0])[1]
            rows.append(MetricComparison(name, values, deltas, best))
        return Comparison(tuple(versions), tuple(rows))

    async def history(self, ref: str) -> History:
        async with self.pool.connection() as conn:
            model = await self._model_row(conn, ref)
            cur = await conn.execute(
                _VERSION_SELECT + " WHERE v.model_id = %s ORDER BY v.create_time, v.id", (model["id"],))
            versions = [_version_from_row(r) for r in await cur.fetchall()]
        entries, previous = [], None
        for ver in versions:
            deltas = {}
            if previous is not None:
                deltas = {k: val - previous.performance_metrics[k] for k, val in ver.performance_metrics.items()
                          if k in previous.performance_metrics}
            entries.append(HistoryEntry(ver.model_version_id, ver.version, ver.changelog, ver.performance_metrics,
                                        deltas, previous.version if previous else "", ver.create_time))
            previous = ver
        return History(str(model["id"]), model["name"], tuple(entries))

    # -- artifacts ---------------------------------------------------------------------------
    async def attach_artifacts(self, ref: str, version: str, source_path: str) -> Manifest:
        folder = confine(self.models_root, source_path, "source_path", kind="dir")
        current = await self.get_version(ref, version)
        if current.artifact_count:
            raise FailedPrecondition(f"version {current.version!r} of {ref!r} already has artifacts",
                                     reason="ARTIFACTS_PRESENT")
        staged = await asyncio.to_thread(self.artifacts.stage_tree, folder)
        return await self._commit_artifacts(current, staged, str(folder))

    async def _commit_artifacts(self, current: ModelVersion, staged: StagedFiles, source: str) -> Manifest:
        files = staged.files
        digest = manifest_digest(files)
        total = sum(f.size_bytes for f in files)
        try:
            async with self.pool.connection() as conn, audited_transaction(conn):
                cur = await conn.execute(
                    "UPDATE model_versions SET manifest_digest = %s, artifact_count = %s, artifact_bytes = %s, "
                    "size_mb = %s, source = %s, etag = %s, update_time = now() "
                    "WHERE id = %s AND artifact_count = 0 RETURNING id",
                    (digest, len(files), total, round(total / 2**20, 3), source, _etag(), current.model_version_id),
                )
                if await cur.fetchone() is None:
                    raise FailedPrecondition(f"version {current.version!r} of {current.name!r} already has artifacts",
                                             reason="ARTIFACTS_PRESENT")
                await self._publish(conn, staged)
                await self._insert_artifacts(conn, current.model_version_id, files)
        except BaseException:
            await self._abandon(staged)
            raise
        return Manifest(current.model_version_id, digest, tuple(sorted(files, key=lambda f: f.path)), total)

    async def upload_artifacts(self, chunks: AsyncIterator[tuple[str, str, str, bytes]]) -> Manifest:
        """chunks: (model_ref, version, path, data) tuples; ref and version read from the first.
        Each file is hashed into tmp/ as it arrives and published with the version's rows."""
        current: ModelVersion | None = None
        staged = StagedFiles()
        paths: set[str] = set()
        writer, path = None, ""
        try:
            async for ref, version, chunk_path, data in chunks:
                if current is None:
                    current = await self.get_version(ref, version)
                    if current.artifact_count:
                        raise FailedPrecondition(f"version {current.version!r} of {ref!r} already has artifacts",
                                                 reason="ARTIFACTS_PRESENT")
                if chunk_path and chunk_path != path:
                    if writer is not None:
                        staged.add(ArtifactFile(path, *reversed(writer.finish())), writer)
                        writer = None
                    check_relative_path(chunk_path)
                    if chunk_path in paths:
                        raise InvalidArgument.one("path", f"{chunk_path!r} was already sent; send each file's chunks together")
                    paths.add(chunk_path)
                    writer, path = self.artifacts.writer(), chunk_path
                if data:
                    if writer is None:
                        raise InvalidArgument.one("path", "the first chunk of a file must name its path")
                    writer.write(data)
            if current is None:
                raise InvalidArgument.one("model_id", "the stream was empty")
            if writer is not None:
                staged.add(ArtifactFile(path, *reversed(writer.finish())), writer)
                writer = None
        except BaseException:
            if writer is not None:
                writer.discard()
            staged.discard()
            raise
        if not staged.files:
            raise InvalidArgument.one("path", "no file was sent")
        return await self._commit_artifacts(current, staged, "upload")

    async def manifest(self, ref: str, version: str) -> Manifest:
        current = await self.get_version(ref, version)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT path, size_bytes, sha256 FROM artifacts WHERE version_id = %s ORDER BY path",
                (current.model_version_id,))
            files = tuple(ArtifactFile(**r) for r in await cur.fetchall())
        return Manifest(current.model_version_id, current.manifest_digest, files, sum(f.size_bytes for f in files))

    async def open_artifact(self, ref: str, version: str, path: str) -> AsyncIterator[tuple[int, bytes]]:
        manifest = await self.manifest(ref, version)
        for f in manifest.files:
            if f.path == path:
                return self.artifacts.read_verified(f)
        raise NotFound(f"version {version!r} of {ref!r} has no artifact {path!r}", metadata={"path": path})

    async def materialize(self, ref: str, version: str, cache_root: Path) -> Path:
        """The version's files as an ordinary folder (for loading, evaluating, deploying), under
        `cache_root/<manifest digest>`. Every file is checked against its sha256 on each call, so a
        load never reads bytes the manifest does not vouch for."""
        manifest = await self.manifest(ref, version)
        if not manifest.files:
            raise FailedPrecondition(f"version {version!r} of {ref!r} has no artifacts to load",
                                     reason="NO_ARTIFACTS")
        return await asyncio.to_thread(self.artifacts.materialize, manifest, cache_root)

    async def verify(self, ref: str, version: str) -> Verification:
        manifest = await self.manifest(ref, version)
        states = await asyncio.to_thread(lambda: [(f.path, self.artifacts.matches(f.sha256)) for f in manifest.files])
        mismatched = tuple(p for p, s in states if s is False)
        missing = tuple(p for p, s in states if s is None)
        recomputed = manifest_digest(manifest.files)
        ok = not mismatched and not missing and recomputed == manifest.manifest_digest
        return Verification(manifest.model_version_id, ok, manifest.manifest_digest, len(states), mismatched, missing)

    # -- usage -------------------------------------------------------------------------------
    async def record_usage(self, ref: str, version: str, requests: int, errors: int,
                           latencies: list[float], tokens: int) -> UsageStats:
        v = check.Violations()
        if requests < 0:
            v.add("request_count", "must be >= 0")
        if errors < 0 or errors > max(requests, len(latencies)):
            v.add("error_count", "must be between 0 and the number of requests")
        if tokens < 0:
            v.add("tokens_generated", "must be >= 0")
        if len(latencies) > MAX_LATENCY_SAMPLES:
            v.add("latencies_ms", f"at most {MAX_LATENCY_SAMPLES} samples per call")
        if any(not math.isfinite(x) or x < 0 for x in latencies):
            v.add("latencies_ms", "samples must be finite and >= 0")
        if requests == 0 and not latencies and errors == 0 and tokens == 0:
            v.add("request_count", "nothing to record")
        v.raise_if_any()
        requests = max(requests, len(latencies))
        async with self.pool.connection() as conn, audited_transaction(conn):
            model = await self._model_row(conn, ref)
            current = await self._version(conn, model["id"], version, ref)
            await conn.execute("INSERT INTO model_usage (version_id) VALUES (%s) ON CONFLICT DO NOTHING",
                               (current.model_version_id,))
            cur = await conn.execute("SELECT * FROM model_usage WHERE version_id = %s FOR UPDATE",
                                     (current.model_version_id,))
            row = await cur.fetchone()
            buckets = usage_hist.add_samples(row["latency_buckets"], latencies)
            cur = await conn.execute(
                "UPDATE model_usage SET request_count = request_count + %s, error_count = error_count + %s, "
                "tokens_generated = tokens_generated + %s, latency_count = latency_count + %s, "
                "latency_sum_ms = latency_sum_ms + %s, latency_buckets = %s, "
                "first_request_time = COALESCE(first_request_time, now()), last_request_time = now() "
                "WHERE version_id = %s RETURNING *",
                (requests, errors, tokens, len(latencies), sum(latencies), buckets, current.model_version_id),
            )
            return self._usage(current.model_version_id, await cur.fetchone())

    async def get_usage(self, ref: str, version: str) -> UsageStats:
        current = await self.get_version(ref, version)
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM model_usage WHERE version_id = %s", (current.model_version_id,))
            return self._usage(current.model_version_id, await cur.fetchone())

    @staticmethod
    def _usage(version_id: str, row: dict[str, Any] | None) -> UsageStats:
        if row is None:
            return UsageStats(version_id, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, None, None)
        buckets = row["latency_buckets"]
        return UsageStats(
            model_version_id=version_id,
            request_count=row["request_count"],
            error_count=row["error_count"],
            error_rate=row["error_count"] / row["request_count"] if row["request_count"] else 0.0,
            latency_mean_ms=row["latency_sum_ms"] / row["latency_count"] if row["latency_count"] else 0.0,
            latency_p50_ms=usage_hist.percentile(buckets, 0.50),
            latency_p95_ms=usage_hist.percentile(buckets, 0.95),
            latency_p99_ms=usage_hist.percentile(buckets, 0.99),
            tokens_generated=row["tokens_generated"],
            first_request_time=row["first_request_time"],
            last_request_time=row["last_request_time"],
        )

    # -- health ------------------------------------------------------------------------------
    async def health(self) -> RegistryHealth:
        store_ok = os.access(self.artifacts.root, os.W_OK)
        started = time.perf_counter()
        try:
            async with self.pool.connection(timeout=5) as conn:
                await conn.execute("SELECT 1")
                latency = (time.perf_counter() - started) * 1000
                cur = await conn.execute(
                    "SELECT (SELECT count(*) FROM models) AS models, (SELECT count(*) FROM model_versions) AS versions, "
                    "(SELECT COALESCE(sum(size_bytes), 0) FROM (SELECT DISTINCT sha256, size_bytes FROM artifacts) s) AS bytes")
                row = await cur.fetchone()
        except Exception:  # noqa: BLE001 - health reports the failure instead of raising it
            return RegistryHealth("degraded", False, (time.perf_counter() - started) * 1000, 0, 0, 0, store_ok)
        return RegistryHealth("ok" if store_ok else "degraded", True, latency, row["models"], row["versions"],
                              int(row["bytes"]), store_ok)

