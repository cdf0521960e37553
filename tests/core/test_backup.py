"""`trainforge backup` / `trainforge restore` with real PostgreSQL clusters and pg_dump/pg_restore:
a registry with several models, versions, shared blobs, aliases and metrics is backed up from
DATABASE_URL, restored into a new data directory (a fresh embedded cluster), where every version
verifies and loads the same, then backed up again from that embedded cluster, alone and while a
server holds it. A tampered or missing blob fails the backup loudly and writes nothing."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainforge.core.backup import archive
from trainforge.core.db import migrate
from trainforge.core.db.embedded import EmbeddedPostgres
from trainforge.core.db.pool import open_pool
from trainforge.core.registry.artifacts import ArtifactStore
from trainforge.core.registry.models import NewVersion
from trainforge.core.registry.store import RegistryStore
from trainforge.core.settings import load_settings
from trainforge.server.cli import app
from trainforge.server.service import embedded_cluster_lock, embedded_postgres_dir

pytestmark = pytest.mark.postgres
runner = CliRunner()


def cli(*args: str, expect: int = 0) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": "250", "DATABASE_URL": ""})
    assert result.exit_code == expect, f"exit {result.exit_code}: {result.output}{result.exception!r}"
    assert "Traceback" not in result.output
    return result.output


@pytest.fixture
def base() -> Iterator[Path]:
    # /tmp and 0711: the restored embedded cluster runs as `postgres` when the suite runs as root.
    path = Path(tempfile.mkdtemp(prefix="tf-backup-test-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    for version_file in path.rglob("PG_VERSION"):
        EmbeddedPostgres(version_file.parent).stop(mode="immediate")
    shutil.rmtree(path, ignore_errors=True)


def _files(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


async def _seed(dsn: str, artifacts: Path, work: Path) -> None:
    pool = await open_pool(dsn, min_size=1, max_size=2)
    try:
        store = RegistryStore(pool, ArtifactStore(artifacts), work)
        shared = b"tokenizer shared by every version " * 100
        for m in range(3):
            for v in range(2):
                folder = _files(work / f"m{m}v{v}", {
                    "model.safetensors": bytes([m, v]) * 5000 + b"weights",
                    "tokenizer.json": shared,
                    f"extra/notes-{v}.txt": f"model {m} version {v}".encode()})
                await store.register(NewVersion(name=f"model-{m}", version=f"1.{v}", description=f"m{m} v{v}",
                                                performance_metrics={"accuracy": 0.5 + m / 10 + v / 100,
                                                                     "eval_loss": 2.0 - v},
                                                tags=("backup-test",)), artifacts_dir=folder)
        await store.register(NewVersion(name="model-0", version="no-files"))  # a version without artifacts
        await store.set_alias("model-0", "production", "1.0")
        await store.set_alias("model-1", "staging", "1.1")
    finally:
        await pool.close()


async def _snapshot(dsn: str, artifacts: Path, cache: Path) -> dict:
    """Every model's aliases and every version's metrics, digest and verification; loads each."""
    pool = await open_pool(dsn, min_size=1, max_size=2)
    try:
        store = RegistryStore(pool, ArtifactStore(artifacts), cache)
        out = {}
        for model in (await store.list_models(100, "")).items:
            versions = {}
            for version in (await store.list_versions(model.name, 100, "")).items:
                check = await store.verify(model.name, version.version)
                loaded = None
                if version.artifact_count:
                    folder = await store.materialize(model.name, version.version, cache)
                    loaded = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
                versions[version.version] = (version.performance_metrics, version.manifest_digest,
                                             version.artifact_count, check.ok, loaded)
            out[model.name] = (dict(model.aliases), versions)
        return out
    finally:
        await pool.close()


def test_backup_restore_round_trip_and_backups_of_the_embedded_cluster(base, postgres_cluster):
    source_dsn = postgres_cluster.new_database("backup_source")
    migrate.upgrade(source_dsn)
    source_dir = base / "source"
    asyncio.run(_seed(source_dsn, source_dir / "artifacts", base / "work"))
    before = asyncio.run(_snapshot(source_dsn, source_dir / "artifacts", base / "cache-a"))
    assert len(before) == 3 and sum(len(vs) for _, vs in before.values()) == 7
    assert all(ok for _, vs in before.values() for _, _, count, ok, _ in vs.values() if count)

    out = cli("backup", "--data-dir", str(source_dir), "--database-url", source_dsn, "--output", str(base / "b1"))
    assert "13 blobs" in out, out  # 6 weight files, 6 notes and the one tokenizer all versions share
    manifest = json.loads((base / "b1" / "manifest.json").read_text())
    assert manifest["format"] == "trainforge-backup/1" and manifest["schema_revision"] == migrate.head_revision()
    assert manifest["postgresql_version"] and manifest["trainforge_version"] and manifest["created_time"]
    shas = {b["sha256"] for b in manifest["blobs"]}
    assert manifest["blob_count"] == len(shas)
    assert manifest["blob_bytes"] == sum(b["size_bytes"] for b in manifest["blobs"])
    stored = {p.parent.name + p.name for p in (source_dir / "artifacts" / "sha256").rglob("*") if p.is_file()}
    assert shas == stored
    # Only referenced blobs: an orphan in the store is not carried.
    orphan = ArtifactStore(source_dir / "artifacts").put_file(_files(base / "orphan", {"x": b"orphan"}) / "x")[0]
    out = cli("backup", "--data-dir", str(source_dir), "--database-url", source_dsn, "--output", str(base / "b2"))
    assert orphan not in {b["sha256"] for b in json.loads((base / "b2" / "manifest.json").read_text())["blobs"]}

    # Restore into a new data directory: a fresh embedded cluster.
    target = base / "restored"
    out = cli("restore", "--data-dir", str(target), "--input", str(base / "b1"))
    assert "restored" in out and f"{manifest['blob_count']} blobs" in out, out
    settings = load_settings(env={}, data_dir=str(target))
    with EmbeddedPostgres(embedded_postgres_dir(settings)) as cluster:
        after = asyncio.run(_snapshot(cluster.dsn, settings.artifacts_dir, base / "cache-b"))
    assert after == before

    # Backed up again, from the embedded cluster nobody runs (the command starts it), then while a
    # server holds the data directory (the command shares its cluster).
    cli("backup", "--data-dir", str(target), "--output", str(base / "b3"))
    with embedded_cluster_lock(settings), EmbeddedPostgres(embedded_postgres_dir(settings)):
        cli("backup", "--data-dir", str(target), "--output", str(base / "b4"))
    for name in ("b3", "b4"):
        again = json.loads((base / name / "manifest.json").read_text())
        assert again["blobs"] == manifest["blobs"]

    # A non-empty data directory is refused, and so is a backup path that exists.
    refused = cli("restore", "--data-dir", str(target), "--input", str(base / "b1"), expect=1)
    assert "not empty" in refused
    assert "already exists" in cli("backup", "--data-dir", str(target), "--output", str(base / "b3"), expect=1)


def test_a_tampered_or_missing_blob_fails_the_backup_and_writes_nothing(base, postgres_cluster):
    dsn = postgres_cluster.new_database("backup_tampered")
    migrate.upgrade(dsn)
    source_dir = base / "source"
    asyncio.run(_seed(dsn, source_dir / "artifacts", base / "work"))
    blobs = sorted(p for p in (source_dir / "artifacts" / "sha256").rglob("*") if p.is_file())
    victim = max(blobs, key=lambda p: p.stat().st_size)
    original = victim.read_bytes()
    victim.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit

    out = cli("backup", "--data-dir", str(source_dir), "--database-url", dsn, "--output", str(base / "bad"), expect=1)
    assert "does not match its sha256" in out and "model-" in out, out
    assert not (base / "bad").exists() and not list(base.glob("bad.partial-*"))

    victim.unlink()
    out = cli("backup", "--data-dir", str(source_dir), "--database-url", dsn, "--output", str(base / "bad"), expect=1)
    assert "is missing from the artifact store" in out and "model-" in out, out
    assert not (base / "bad").exists()

    victim.write_bytes(original)
    cli("backup", "--data-dir", str(source_dir), "--database-url", dsn, "--output", str(base / "good"))
    # A blob damaged inside the backup is refused by restore, which leaves the target empty.
    manifest = json.loads((base / "good" / "manifest.json").read_text())
    sha = manifest["blobs"][0]["sha256"]
    inside = archive.blob_path(base / "good" / "blobs", sha)
    inside.write_bytes(b"not the blob")
    target = base / "restored"
    out = cli("restore", "--data-dir", str(target), "--input", str(base / "good"), expect=1)
    assert "does not match its sha256" in out, out
    assert not target.exists() or not any(target.iterdir())


def test_the_schedule_takes_backups_when_due_and_keeps_the_newest(base, postgres_cluster):
    from trainforge.core.backup.schedule import BackupSchedule, complete_backups

    dsn = postgres_cluster.new_database("backup_schedule")
    migrate.upgrade(dsn)
    asyncio.run(_seed(dsn, base / "artifacts", base / "work"))
    folder = base / "backups"

    async def run_until(count: int, interval: float, within: float = 60) -> list[str]:
        schedule = BackupSchedule(dsn, base / "artifacts", folder, interval, keep=2)
        taken: list[str] = []
        original = schedule.take
        schedule.take = lambda: taken.append(original().name) or taken[-1]
        schedule.start()
        deadline = time.monotonic() + within
        while len(taken) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await schedule.stop()
        return taken

    taken = asyncio.run(run_until(3, interval=0.5))
    assert len(taken) >= 3
    kept = [p.name for p in complete_backups(folder)]
    assert kept == sorted(taken)[-2:]  # the newest two; the rest pruned
    assert all(json.loads((folder / name / "manifest.json").read_text())["blob_count"] == 13 for name in kept)
    assert not list(folder.glob("*.partial-*"))
    # Due one interval after the newest backup, also across restarts: with an hour's interval and
    # a fresh backup on disk, a restarted schedule takes none.
    assert asyncio.run(run_until(1, interval=3600.0, within=3)) == []
    assert BackupSchedule(dsn, base / "artifacts", base / "none-yet", 3600.0, 2).seconds_until_due() == 0.0


def test_serve_takes_scheduled_backups(base):
    from tests.server.test_cli import ServeProcess

    data_dir = base / "data"
    env = {"TRAINFORGE_BACKUP_INTERVAL_HOURS": str(1 / 3600), "TRAINFORGE_BACKUP_KEEP": "2", "TRAINFORGE_WORKERS": "0"}
    with ServeProcess(data_dir, env=env):
        deadline = time.monotonic() + 60
        while len(list((data_dir / "backups").glob("trainforge-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.5)  # at least two more intervals: the oldest is pruned meanwhile
    from trainforge.core.backup.schedule import complete_backups

    done = complete_backups(data_dir / "backups")
    assert len(done) == 2, done
    for folder in done:
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["schema_revision"] == migrate.head_revision() and manifest["blob_count"] == 0


def test_backups_taken_while_versions_come_and_go_are_consistent(base, postgres_cluster):
    """Registrations and deletions (with their blob garbage collection) run while backups are taken:
    every blob the dumped rows reference is in the backup, verified, and nothing else is."""
    import threading

    dsn = postgres_cluster.new_database("backup_churn")
    migrate.upgrade(dsn)
    artifacts = base / "artifacts"
    asyncio.run(_seed(dsn, artifacts, base / "work"))
    stop = threading.Event()
    churned = []

    async def churn() -> None:
        pool = await open_pool(dsn, min_size=1, max_size=2)
        try:
            store = RegistryStore(pool, ArtifactStore(artifacts), base / "work")
            i = 0
            while not stop.is_set():
                folder = _files(base / "churn" / str(i), {"w.bin": f"weights {i}".encode() * 1000,
                                                          "shared.txt": b"the same in every churned version"})
                await store.register(NewVersion(name="churn", version=f"v{i}"), artifacts_dir=folder)
                if i >= 2:
                    await store.delete_version("churn", f"v{i - 2}", force=True)  # unlinks its own blob
                churned.append(i)
                i += 1
        finally:
            await pool.close()

    worker = threading.Thread(target=lambda: asyncio.run(churn()))
    worker.start()
    try:
        backups = [archive.write_backup(dsn, artifacts, base / f"b{n}") for n in range(3)]
    finally:
        stop.set()
        worker.join(60)
    assert len(churned) > 3, churned

    for n, result in enumerate(backups):
        listed = {b["sha256"]: b["size_bytes"] for b in result.manifest["blobs"]}
        restored = postgres_cluster.new_database(f"backup_churn_restored_{n}")
        archive.restore_database(result.path, result.manifest, restored)
        import psycopg

        with psycopg.connect(restored) as conn:
            referenced = {sha for (sha,) in conn.execute("SELECT DISTINCT sha256 FROM artifacts")}
        assert referenced == set(listed), n
        for sha in referenced:
            assert archive.file_sha256(archive.blob_path(result.path / "blobs", sha)) == sha


def test_restore_into_an_empty_database_url_and_never_over_a_used_one(base, postgres_cluster):
    source = postgres_cluster.new_database("backup_url_source")
    migrate.upgrade(source)
    asyncio.run(_seed(source, base / "source" / "artifacts", base / "work"))
    cli("backup", "--data-dir", str(base / "source"), "--database-url", source, "--output", str(base / "b"))
    before = asyncio.run(_snapshot(source, base / "source" / "artifacts", base / "cache-a"))

    refused = cli("restore", "--data-dir", str(base / "other"), "--database-url", source, "--input", str(base / "b"),
                  expect=1)
    assert "already holds" in refused and "restore into an empty one" in refused
    assert not (base / "other").exists() or not any((base / "other").rglob("*"))

    target = postgres_cluster.new_database("backup_url_target")
    cli("restore", "--data-dir", str(base / "new"), "--database-url", target, "--input", str(base / "b"))
    assert asyncio.run(_snapshot(target, base / "new" / "artifacts", base / "cache-b")) == before
