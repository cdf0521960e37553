"""Database access for the commands that work on the database directly instead of through a server
(`keys`, `audit`, `worker`): the database `settings` name, found like `serve` finds it, sharing the
embedded cluster of a server running on the same data directory (service.open_database), checked
to be at this code's schema revision, and an async pool on it for the duration of one call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from trainforge.core.db import migrate
from trainforge.core.db.pool import open_pool
from trainforge.core.errors import TrainforgeError
from trainforge.core.settings import Settings
from trainforge.server.cli.common import fail, load_settings_or_exit, service_error
from trainforge.server.service import Database, open_database

T = TypeVar("T")


def database_settings(config: Path | None, data_dir: Path | None, database_url: str | None) -> Settings:
    return load_settings_or_exit(config, data_dir=str(data_dir) if data_dir else None, database_url=database_url)


@contextmanager
def admin_database(settings: Settings, *, start_embedded: bool = True) -> Iterator[Database]:
    """The database, at the schema revision this code expects; errors print and exit 1."""
    where = "the database"
    try:
        with open_database(settings, share_running=True, start_embedded=start_embedded) as database:
            where = database.where
            _check_schema(database)
            yield database
    except TrainforgeError as exc:
        raise service_error(exc) from None
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise fail(f"cannot reach {where}: {str(exc).strip() or type(exc).__name__}") from None


def _check_schema(database: Database) -> None:
    # Imported lazily by migrate; the schema check is what every direct-database command needs first.
    from sqlalchemy.exc import SQLAlchemyError

    try:
        current = migrate.current_revision(database.dsn)
    except SQLAlchemyError as exc:
        raise fail(f"cannot reach the database ({database.where}): {getattr(exc, 'orig', None) or exc}") from None
    head = migrate.head_revision()
    if current is None:
        raise fail(f"{database.where} has no trainforge schema yet",
                   "hint: run `trainforge db upgrade` (or start `trainforge serve` once) with the same options")
    if current != head:
        raise fail(f"{database.where} is at schema revision {current}, this trainforge expects {head}",
                   "hint: run `trainforge db upgrade` with the same options (and upgrade every trainforge using it)")


def with_pool(database: Database, work: Callable[[AsyncConnectionPool], Awaitable[T]], *, max_size: int = 2,
              snapshot: bool = False) -> T:
    """Runs `work(pool)` on a small pool of `database`, in a fresh event loop. `snapshot`: every
    transaction is REPEATABLE READ and read-only, so a multi-statement read sees one state of the
    database (`audit verify` walks the log, then reads its head: under READ COMMITTED a record
    appended by a live server in between looks like rows cut from the end)."""

    async def main() -> T:
        if snapshot:
            pool = AsyncConnectionPool(database.dsn, min_size=1, max_size=max_size, open=False,
                                       kwargs={"row_factory": dict_row, "autocommit": True},
                                       configure=_snapshot_transactions, name="trainforge-cli")
            await pool.open(wait=True, timeout=30)
        else:
            pool = await open_pool(database.dsn, min_size=1, max_size=max_size)
        try:
            return await work(pool)
        finally:
            await pool.close()

    try:
        return asyncio.run(main())
    except TrainforgeError as exc:
        raise service_error(exc) from None
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise fail(f"cannot reach the database ({database.where}): {str(exc).strip() or type(exc).__name__}") from None


async def _snapshot_transactions(conn: psycopg.AsyncConnection) -> None:
    await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
    await conn.set_read_only(True)
