"""`trainforge backup` and `trainforge restore` (trainforge.core.backup.archive).

`backup` works on the database `serve` would use (DATABASE_URL, else the embedded cluster under
--data-dir) and may run while `serve` runs: it shares the live embedded cluster instead of starting
it (service.open_database with share_running). `restore` brings a backup into an empty data
directory: it starts the embedded cluster there (or uses an empty --database-url), verifies and
copies every blob, pg_restores the dump in one transaction and migrates it to this trainforge's
schema. A restore that fails leaves the data directory as empty as it found it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.markup import escape

from trainforge.core.backup import archive
from trainforge.core.db import migrate
from trainforge.core.errors import TrainforgeError
from trainforge.server.cli.common import (
    ConfigOpt,
    DatabaseUrlOpt,
    DataDirOpt,
    JsonOpt,
    console,
    fail,
    print_json,
    service_error,
)
from trainforge.server.cli.database import admin_database, database_settings
from trainforge.server.service import open_database


def backup(output: Annotated[Path, typer.Option("--output", help="Backup folder to write (must not exist).")],
           data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None, config: ConfigOpt = None,
           as_json: JsonOpt = False) -> None:
    """Back up the registry: a pg_dump of the database and the artifacts it references, verified."""
    settings = database_settings(config, data_dir, database_url)
    with admin_database(settings) as database:
        try:
            result = archive.write_backup(database.dsn, settings.artifacts_dir, output.absolute())
        except psycopg.OperationalError as exc:
            raise fail(f"cannot reach {database.where}: {str(exc).strip()}") from None
    manifest = {k: v for k, v in result.manifest.items() if k != "blobs"}
    if as_json:
        return print_json({"path": str(result.path), **manifest})
    console.print(f"backup of {escape(database.where)} written to [bold]{escape(str(result.path))}[/]: "
                  f"{result.blob_count} blobs, {result.blob_bytes:,} bytes, database dump "
                  f"{manifest['database']['size_bytes']:,} bytes (PostgreSQL {manifest['postgresql_version']}, "
                  f"schema {manifest['schema_revision']})", soft_wrap=True)


def _is_empty(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def restore(input_: Annotated[Path, typer.Option("--input", exists=True, file_okay=False,
                                                 help="A folder written by `trainforge backup`.")],
            data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None, config: ConfigOpt = None) -> None:
    """Restore a backup into an empty data directory (and an empty --database-url, if given)."""
    settings = database_settings(config, data_dir, database_url)
    targets = list(dict.fromkeys([settings.data_dir, settings.artifacts_dir]))
    busy = [str(p) for p in targets if not _is_empty(p)]
    if busy:
        raise fail(f"refusing to restore into {', '.join(busy)}: not empty",
                   "hint: restore into a new --data-dir; a data directory in use keeps its own registry")
    try:
        manifest = archive.read_manifest(input_)
        archive.check_schema_revision(manifest)
        archive.check_dump(input_, manifest)
    except TrainforgeError as exc:
        raise service_error(exc) from None

    where = "the database"
    try:
        with open_database(settings) as database:
            where = database.where
            archive.check_empty_database(database.dsn)
            restored = archive.restore_blobs(input_, manifest, settings.artifacts_dir)
            archive.restore_database(input_, manifest, database.dsn)
            migrate.upgrade(database.dsn)
    except BaseException as exc:
        _empty_again(targets)
        if isinstance(exc, TrainforgeError):
            raise service_error(exc) from None
        if isinstance(exc, psycopg.OperationalError):
            raise fail(f"cannot reach {where}: {str(exc).strip()}") from None
        raise
    console.print(f"restored {escape(str(input_))} into {escape(where)}: {manifest['blob_count']} blobs "
                  f"({restored:,} bytes) verified; schema at {migrate.head_revision()}", soft_wrap=True)
    console.print(f"start it with: trainforge serve --data-dir {escape(str(settings.data_dir))}", soft_wrap=True,
                  highlight=False)


def _empty_again(paths: list[Path]) -> None:
    """Removes what a failed restore wrote into the folders it found empty (or missing)."""
    for path in paths:
        if path.is_dir():
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
