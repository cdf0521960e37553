"""`trainforge audit verify|list`: the hash-chained audit log, read straight from the database (like
`keys`). `verify` walks the whole chain and names the first row that does not follow from the one
before it; `list` filters by resource, key and time."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timezone
from typing import Annotated

import typer
from rich.markup import escape

from trainforge.core.access.audit import AuditLog
from trainforge.server.cli.common import (
    EXIT_FAILED,
    ConfigOpt,
    DatabaseUrlOpt,
    DataDirOpt,
    JsonOpt,
    console,
    err_console,
    print_json,
)
from trainforge.server.cli.database import admin_database, database_settings, with_pool
from trainforge.server.cli.tables import audit_table

app = typer.Typer(help="The tamper-evident audit log, read directly from the database.", no_args_is_help=True)


def parse_time(text: str | None, option: str) -> datetime | None:
    """ISO 8601; a time without an offset is UTC (the times `audit list` prints are UTC)."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time like 2026-01-31 or 2026-01-31T12:00:00Z",
                                 param_hint=option) from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@app.command("verify")
def audit_verify(database_url: DatabaseUrlOpt = None, data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Check the whole hash chain: exit 0 when intact, 1 naming the first bad row otherwise."""
    settings = database_settings(config, data_dir, database_url)
    with admin_database(settings) as database:
        result = with_pool(database, lambda pool: AuditLog(pool).verify(), snapshot=True)
    if result.ok:
        console.print(f"[green]audit log intact:[/] {result.rows_checked} rows verified")
        return
    bad = result.first_bad_seq or 0
    err_console.print(f"[bold red]audit log broken at row {bad}:[/] {escape(result.problem)}")
    err_console.print(f"  the {max(bad - 1, 0)} rows before it verify; nothing from row {bad} on can be trusted")
    raise typer.Exit(EXIT_FAILED)


@app.command("list")
def audit_list(
    resource: Annotated[str, typer.Option("--resource", help="Exact resource, e.g. models/my_model.")] = "",
    key: Annotated[str, typer.Option("--key", help="Only calls made with this key id.")] = "",
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601 time (UTC unless it has an offset).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO 8601 time, exclusive.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="The newest N matching records.")] = 100,
    database_url: DatabaseUrlOpt = None, data_dir: DataDirOpt = None, config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show audit records, oldest first: the newest --limit that match."""
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    settings = database_settings(config, data_dir, database_url)
    with admin_database(settings) as database:
        records = with_pool(database, lambda pool: AuditLog(pool).list(
            resource=resource, key_id=key, since=start, until=end, limit=limit))
    records.reverse()  # the log returns newest first; people read logs top to bottom
    if as_json:
        return print_json([{**asdict(r), "time": r.time.astimezone(timezone.utc).isoformat()} for r in records])
    console.print(audit_table(records))
