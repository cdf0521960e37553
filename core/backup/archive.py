"""A backup is a folder:

    manifest.json     format, created time, trainforge / PostgreSQL / pg_dump versions, schema
                      revision, the dump's sha256 and size, every blob's sha256 and size
    database.dump     pg_dump custom format of the whole database (registry, jobs, keys, audit)
    blobs/sha256/ab/… the content-addressed artifacts the dumped rows reference, and no others

Consistency. The dump and the list of blobs come from one snapshot: a REPEATABLE READ transaction
exports its snapshot (pg_export_snapshot), reads the referenced digests from `artifacts`, and
stays open while `pg_dump --snapshot` dumps exactly what that transaction sees. Reading the
references out of the finished dump instead would need a restore or a parse of the archive; the
exported snapshot gives the same guarantee for one extra query. Blobs are immutable and named by
their content, so a blob that hashes to its name is the bytes the snapshot refers to, whenever it
is copied. What the snapshot cannot hold still is garbage collection: a version deleted after the
snapshot may have its blobs unlinked before they are copied. So before the snapshot the backup
takes the blob folders' advisory locks shared (collectors take them exclusive while they re-read
references and unlink: RegistryStore._collect_garbage), which waits for running collectors and
holds off new ones; then it reads the list, hard-links every listed blob under artifacts/tmp
(`_pin`: an unlink by GC removes a name, the second name keeps the bytes) and releases the locks.
Collectors wait only for those milliseconds, never for the dump or the copy; registrations take
the locks shared too and never wait. Should a listed blob still be gone with no row referencing it
(a collector that bypasses the locks), the backup restarts with a new snapshot, up to five times.
A blob that is missing or corrupt while still referenced is data loss and fails the backup loudly,
naming the versions that hold it, without writing anything. Each blob is hashed while it is
copied, so a backup never carries a bad blob.

The folder is written as `<name>.partial-<pid>` beside the target and renamed once complete.
Restore checks the dump's digest, copies each blob into the artifact store and verifies it again,
then pg_restores into an empty database in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

import psycopg

from trainforge.core.backup.postgres_tools import client_tool, run_tool
from trainforge.core.errors import Aborted, DataLoss, FailedPrecondition
from trainforge.core.registry.artifacts import CHUNK
from trainforge.core.registry.store import BLOB_LOCK_SPACE

log = logging.getLogger(__name__)

FORMAT = "trainforge-backup/1"
MANIFEST = "manifest.json"
DUMP = "database.dump"
BLOBS = "blobs"
SNAPSHOT_ATTEMPTS = 5
DUMP_TIMEOUT_S = 6 * 3600.0  # a registry database is mostly small rows; hours means something is stuck


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: dict[str, Any]

    @property
    def blob_count(self) -> int:
        return self.manifest["blob_count"]

    @property
    def blob_bytes(self) -> int:
        return self.manifest["blob_bytes"]


class _BlobDeletedMeanwhile(Exception):
    """A blob of the snapshot was garbage-collected before it was copied: take a new snapshot."""


def trainforge_version() -> str:
    try:
        return metadata.version("trainforge")
    except metadata.PackageNotFoundError:
        return "unknown"


def blob_path(root: Path, sha256: str) -> Path:
    """Where a blob lives under an artifact store's root or a backup's blobs/ (the same layout)."""
    return root / "sha256" / sha256[:2] / sha256[2:]


def copy_verified(source: Path, target: Path, sha256: str, size: int) -> None:
    """Copies `source` to `target`, hashing as it streams; the copy appears (atomically) only if
    its bytes hash to `sha256` and number `size`, else DataLoss."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    digest, copied = hashlib.sha256(), 0
    try:
        with open(source, "rb") as reader, open(partial, "wb") as writer:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                writer.write(chunk)
                copied += len(chunk)
            writer.flush()
            os.fsync(writer.fileno())
        if digest.hexdigest() != sha256 or copied != size:
            raise DataLoss(f"blob {sha256} ({source}) does not match its sha256: it hashes to {digest.hexdigest()} "
                           f"over {copied} bytes ({size} recorded)", reason="BLOB_CORRUPT",
                           metadata={"sha256": sha256, "path": str(source)})
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as reader:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# -- writing --------------------------------------------------------------------------------------

def write_backup(dsn: str, artifacts_root: Path, output: Path, *,
                 cancelled: threading.Event | None = None) -> BackupResult:
    """Writes a backup folder at `output` (which must not exist). See the module docstring.
    `cancelled`, once set, abandons the backup at the next blob (Aborted; nothing is left)."""
    output = Path(output)
    if output.exists():
        raise FailedPrecondition(f"{output} already exists; back up to a new path", reason="BACKUP_EXISTS",
                                 metadata={"path": str(output)})
    output.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, SNAPSHOT_ATTEMPTS + 1):
        staging = output.with_name(f"{output.name}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            manifest = _write_into(staging, dsn, Path(artifacts_root), cancelled or threading.Event())
            os.replace(staging, output)
            return BackupResult(output, manifest)
        except _BlobDeletedMeanwhile as exc:
            log.warning("backup attempt %d: %s; taking a new snapshot", attempt, exc)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    raise Aborted(f"versions were deleted faster than the backup could copy their blobs ({SNAPSHOT_ATTEMPTS} "
                  "snapshots in a row); run it again", reason="BACKUP_RACED")


def _write_into(staging: Path, dsn: str, artifacts_root: Path, cancelled: threading.Event) -> dict[str, Any]:
    started = time.monotonic()
    pins = artifacts_root / "tmp" / f"backup-pins-{os.getpid()}-{threading.get_ident()}"
    try:
        with psycopg.connect(dsn, connect_timeout=30) as guard, psycopg.connect(dsn, connect_timeout=30) as conn:
            # Blob collectors hold their folder's lock exclusively while they re-read references and
            # unlink (RegistryStore._collect_garbage); shared locks on all 256 folders wait for the
            # running ones and hold off new ones until the listed blobs are pinned below.
            guard.execute("SELECT pg_advisory_xact_lock_shared(%s, k) FROM generate_series(0, 255) AS k",
                          (BLOB_LOCK_SPACE,))
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            # The first statement starts the transaction; everything below reads its snapshot, taken
            # after the locks (on another connection: a REPEATABLE READ snapshot is taken when the
            # first statement starts, before any lock it then waits for).
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
            server_version, server_num = conn.execute(
                "SELECT current_setting('server_version'), current_setting('server_version_num')::int").fetchone()
            revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            blobs = conn.execute("SELECT sha256, max(size_bytes) AS size FROM artifacts GROUP BY sha256 "
                                 "ORDER BY sha256").fetchall()
            sources = _pin(dsn, artifacts_root, pins, [sha for sha, _ in blobs])
            if all(sources[sha] != blob_path(artifacts_root, sha) for sha, _ in blobs):
                guard.rollback()  # collectors may run again: the pins keep the listed bytes
            # else some could not be linked: the locks stay until they are copied
            pg_dump = client_tool("pg_dump", server_num // 10000)
            run_tool([str(pg_dump), "--format=custom", "--no-owner", "--no-privileges", f"--snapshot={snapshot}",
                      f"--file={staging / DUMP}"], dsn, timeout=DUMP_TIMEOUT_S, reason="PG_DUMP_FAILED")
            conn.rollback()  # pg_dump holds the snapshot from its start; ours was only needed until then
            entries = [_copy_blob(dsn, artifacts_root, staging, sources[sha], sha, size, cancelled)
                       for sha, size in blobs]
    finally:
        shutil.rmtree(pins, ignore_errors=True)

    manifest = {
        "format": FORMAT,
        "created_time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "trainforge_version": trainforge_version(),
        "postgresql_version": server_version,
        "pg_dump": str(pg_dump),
        "schema_revision": revision[0] if revision else None,
        "database": {"file": DUMP, "sha256": file_sha256(staging / DUMP), "size_bytes": (staging / DUMP).stat().st_size},
        "blob_count": len(entries),
        "blob_bytes": sum(e["size_bytes"] for e in entries),
        "duration_seconds": round(time.monotonic() - started, 3),
        "blobs": entries,
    }
    with open(staging / MANIFEST, "w") as fh:
        json.dump(manifest, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    return manifest


def _pin(dsn: str, artifacts_root: Path, pins: Path, shas: list[str]) -> dict[str, Path]:
    """Hard links to the snapshot's blobs, made right after the snapshot and kept until they are
    copied: garbage collection unlinks a blob's name, and a second name keeps its bytes. This
    narrows the race with a concurrent delete from the whole dump and copy (seconds to hours) to
    the milliseconds between the snapshot and the links. Where a link cannot be made (another
    file system under artifacts/tmp) the blob is read from the store itself."""
    pins.mkdir(parents=True, exist_ok=True)
    sources: dict[str, Path] = {}
    for sha in shas:
        source, pin = blob_path(artifacts_root, sha), pins / sha
        try:
            os.link(source, pin)
            sources[sha] = pin
        except FileNotFoundError:
            _missing(dsn, sha, source)
        except OSError:
            sources[sha] = source
    return sources


def _copy_blob(dsn: str, artifacts_root: Path, staging: Path, pin: Path, sha: str, size: int,
               cancelled: threading.Event) -> dict[str, Any]:
    """One blob into the backup, verified, from its pin (else, if someone cleaned artifacts/tmp
    meanwhile, from the store itself); its manifest entry."""
    if cancelled.is_set():
        raise Aborted("the backup was abandoned: the server is stopping", reason="BACKUP_CANCELLED")
    stored, target = blob_path(artifacts_root, sha), blob_path(staging / BLOBS, sha)
    try:
        try:
            copy_verified(pin, target, sha, size)
        except FileNotFoundError:
            if pin == stored:
                raise
            copy_verified(stored, target, sha, size)
    except FileNotFoundError:
        _missing(dsn, sha, stored)
    except DataLoss as exc:
        raise DataLoss(f"{exc.message}; it belongs to {_holders(dsn, sha)}. The artifact store is damaged: the "
                       "backup was not written (restore these versions from an older backup, or re-register them)",
                       reason="BLOB_CORRUPT", metadata=exc.metadata) from None
    return {"sha256": sha, "size_bytes": int(size)}


def _holders(dsn: str, sha: str) -> str:
    with psycopg.connect(dsn, connect_timeout=30) as conn:
        rows = conn.execute(
            "SELECT DISTINCT m.name, v.version, a.path FROM artifacts a JOIN model_versions v ON v.id = a.version_id "
            "JOIN models m ON m.id = v.model_id WHERE a.sha256 = %s ORDER BY 1, 2, 3", (sha,)).fetchall()
    return ", ".join(f"{name}:{version} ({path})" for name, version, path in rows) or "no version any more"


def _missing(dsn: str, sha: str, source: Path) -> NoReturn:
    holders = _holders(dsn, sha)
    if holders == "no version any more":
        raise _BlobDeletedMeanwhile(f"blob {sha} was garbage-collected after the snapshot")
    raise DataLoss(f"blob {sha} is missing from the artifact store ({source}); it belongs to {holders}. The backup "
                   "was not written", reason="BLOB_MISSING", metadata={"sha256": sha, "path": str(source)})


# -- reading --------------------------------------------------------------------------------------

def read_manifest(backup: Path) -> dict[str, Any]:
    path = Path(backup) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(f"{backup} is not a trainforge backup: cannot read {MANIFEST} ({exc})",
                                 reason="NOT_A_BACKUP") from None
    if manifest.get("format") != FORMAT:
        raise FailedPrecondition(f"{backup} is a {manifest.get('format')!r} backup; this trainforge reads {FORMAT}",
                                 reason="NOT_A_BACKUP")
    return manifest


def check_schema_revision(manifest: dict[str, Any]) -> None:
    """Refuses a dump whose schema this code does not know (made by a newer trainforge)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from trainforge.core.db import migrate

    revision = manifest.get("schema_revision")
    script = ScriptDirectory.from_config(migrate.alembic_config("postgresql://unused"))
    try:
        known = revision is not None and script.get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        raise FailedPrecondition(f"the backup's schema revision {revision!r} is unknown to this trainforge "
                                 f"({trainforge_version()}, head {script.get_current_head()}); restore it with the "
                                 f"trainforge that wrote it ({manifest.get('trainforge_version')})",
                                 reason="BACKUP_SCHEMA_UNKNOWN")


def restore_blobs(backup: Path, manifest: dict[str, Any], artifacts_root: Path) -> int:
    """Copies every blob into the artifact store, each verified against its sha256; returns bytes."""
    total = 0
    for entry in manifest["blobs"]:
        sha, size = entry["sha256"], int(entry["size_bytes"])
        source = blob_path(Path(backup) / BLOBS, sha)
        if not source.is_file():
            raise DataLoss(f"the backup lacks blob {sha} that its manifest lists", reason="BACKUP_INCOMPLETE",
                           metadata={"sha256": sha})
        copy_verified(source, blob_path(Path(artifacts_root), sha), sha, size)
        total += size
    return total


def check_empty_database(dsn: str) -> int:
    """Refuses a database that holds tables; returns the server's major version."""
    with psycopg.connect(dsn, connect_timeout=30) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
        server_num = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()[0]
    if tables:
        raise FailedPrecondition(f"the target database already holds {tables} tables; restore into an empty one",
                                 reason="DATABASE_NOT_EMPTY")
    return server_num // 10000


def check_dump(backup: Path, manifest: dict[str, Any]) -> None:
    dump = Path(backup) / manifest["database"]["file"]
    if not dump.is_file() or file_sha256(dump) != manifest["database"]["sha256"]:
        raise DataLoss(f"{dump} is missing or does not match the sha256 in the backup's manifest",
                       reason="BACKUP_CORRUPT")


def restore_database(backup: Path, manifest: dict[str, Any], dsn: str) -> None:
    """pg_restore of the dump into `dsn`, which must hold no tables yet; all or nothing."""
    check_dump(backup, manifest)
    major = check_empty_database(dsn)
    dump = Path(backup) / manifest["database"]["file"]
    pg_restore = client_tool("pg_restore", major)
    run_tool([str(pg_restore), "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
              str(dump)], dsn, timeout=DUMP_TIMEOUT_S, reason="PG_RESTORE_FAILED")
