"""`trainforge keys create|list|revoke`: API key administration, straight on the database (like `db
upgrade`, no server or key needed: this is how the first keys are made and how a lost admin key is
replaced). A key's secret is printed once, by `create`; only its hash is stored, so nothing can show
it again."""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from typing import Annotated

import typer
from rich.markup import escape
from rich.panel import Panel

from trainforge.core.access.keys import ROLES, ApiKey, KeyStore, NewKey
from trainforge.server.cli.common import (
    ConfigOpt,
    DatabaseUrlOpt,
    DataDirOpt,
    JsonOpt,
    console,
    err_console,
    print_json,
)
from trainforge.server.cli.database import admin_database, database_settings, with_pool
from trainforge.server.cli.tables import key_table, keys_table, when

app = typer.Typer(help="API keys, managed directly in the database (no server needed).", no_args_is_help=True)

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `45s`, `2w`."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise typer.BadParameter(f"{text!r} is not a positive duration like 30d, 12h, 90m or 2w",
                                 param_hint="--expires-in")
    try:
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        raise typer.BadParameter(f"{text!r} is too long", param_hint="--expires-in") from None


def key_json(key: ApiKey) -> dict:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(key).items()}


@app.command("create")
def keys_create(
    owner: Annotated[str, typer.Option("--owner", help="Who the key is for (a person or a service).")],
    role: Annotated[str, typer.Option("--role", help=f"One of {', '.join(ROLES)}.")],
    expires_in: Annotated[str | None, typer.Option("--expires-in", help="e.g. 30d, 12h, 2w (default: never).")] = None,
    description: Annotated[str, typer.Option("--description")] = "",
    database_url: DatabaseUrlOpt = None, data_dir: DataDirOpt = None, config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key and print its token, once."""
    if role not in ROLES:
        raise typer.BadParameter(f"must be one of {', '.join(ROLES)} (got {role!r})", param_hint="--role")
    ttl = parse_duration(expires_in) if expires_in is not None else None
    settings = database_settings(config, data_dir, database_url)
    with admin_database(settings) as database:
        new: NewKey = with_pool(database, lambda pool: KeyStore(pool).create(
            owner, role, expires_in=ttl, description=description))
    if as_json:
        return print_json({**key_json(new.key), "token": new.token})
    console.print(Panel(key_table(new.key), title=f"created {role} key {new.key.key_id}", title_align="left",
                        expand=False))
    # The token on a line of its own, outside the panel: copying it must not pick up borders.
    console.print(new.token, soft_wrap=True, highlight=False, markup=False)
    err_console.print("[bold yellow]Store this key now: it cannot be shown again[/] (only its hash is kept). "
                      f"Revoke it with `trainforge keys revoke {new.key.key_id}`.")


@app.command("list")
def keys_list(
    show_all: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    database_url: DatabaseUrlOpt = None, data_dir: DataDirOpt = None, config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List API keys (never their secrets, which are not stored), oldest first."""
    settings = database_settings(config, data_dir, database_url)
    with admin_database(settings) as database:
        keys = with_pool(database, lambda pool: KeyStore(pool).list(include_revoked=show_all))
    if as_json:
        return print_json([key_json(k) for k in keys])
    console.print(keys_table(keys, datetime.now(timezone.utc)))


@app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (the part after `tf_`, as `keys list` shows it).")],
    database_url: DatabaseUrlOpt = None, data_dir: DataDirOpt = None, config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API key. Running servers stop accepting it at once (they are notified)."""
    settings = database_settings(config, data_dir, database_url)

    async def revoke(pool) -> tuple[ApiKey | None, ApiKey]:
        store = KeyStore(pool)
        before = next((k for k in await store.list(include_revoked=True) if k.key_id == key_id), None)
        return before, await store.revoke(key_id)

    with admin_database(settings) as database:
        before, key = with_pool(database, revoke)
    if as_json:
        return print_json(key_json(key))
    who = f"{escape(key.owner)}, {key.role}"
    if before is not None and before.revoke_time is not None:
        console.print(f"key {key.key_id} ({who}) was already revoked at {when(key.revoke_time)} UTC")
    else:
        console.print(f"revoked key {key.key_id} ({who})")
