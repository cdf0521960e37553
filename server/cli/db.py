"""`trainforge db upgrade`: migrate a database (DATABASE_URL, or the embedded cluster under the data
directory) to the newest schema revision. Refuses a data directory whose cluster another trainforge
process is using: migrating under a live server is not safe."""

from __future__ import annotations

import typer
from rich.markup import escape

from trainforge.core.db import migrate
from trainforge.core.errors import TrainforgeError
from trainforge.server.cli.common import ConfigOpt, DatabaseUrlOpt, DataDirOpt, console, fail, service_error
from trainforge.server.cli.database import database_settings
from trainforge.server.service import open_database

app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade(database_url: DatabaseUrlOpt = None, data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Bring a database to the newest schema revision."""
    settings = database_settings(config, data_dir, database_url)
    # Imported here: SQLAlchemy is only needed by this command.
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with open_database(settings) as database:
            migrate.upgrade(database.dsn)
    except TrainforgeError as exc:
        raise service_error(exc) from None
    except SQLAlchemyError as exc:
        raise fail(f"migration failed: {getattr(exc, 'orig', None) or exc}") from None
    console.print(f"{escape(database.where)} is at revision [bold]{migrate.head_revision()}[/] (head)",
                  soft_wrap=True)
