"""`trainforge serve`: the whole service (trainforge.server.service) until Ctrl-C or SIGTERM. On a
database without API keys it makes the first admin key and shows it once, in the ready panel."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Group
from rich.panel import Panel
from rich.text import Text

from trainforge.core.errors import TrainforgeError
from trainforge.server.cli.common import (
    ConfigOpt,
    DataDirOpt,
    console,
    err_console,
    load_settings_or_exit,
    service_error,
    stop_on_signals,
)
from trainforge.server.cli.tables import endpoints_table
from trainforge.server.observability import configure_logging
from trainforge.server.service import Endpoints, Service


def bootstrap_key_text(token: str) -> Text:
    text = Text("\nFirst admin API key, made because the database had none:\n", style="bold yellow")
    text.append(token + "\n", style="bold")
    text.append("Store it now: it is shown only this once (only its hash is kept). Use it as --api-key, "
                "TRAINFORGE_API_KEY or `authorization: Bearer`; make more with `trainforge keys create`.",
                style="yellow")
    return text


def serve(config: ConfigOpt = None, data_dir: DataDirOpt = None,
          grpc_port: Annotated[int | None, typer.Option("--grpc-port", help="gRPC port (0: any free one).")] = None,
          http_port: Annotated[int | None, typer.Option("--http-port", help="REST gateway port.")] = None,
          no_auth: Annotated[bool, typer.Option(
              "--no-auth", help="Switch API keys off (every caller is admin); allowed only on loopback.")] = False,
          ) -> None:
    """Run the service (database, gRPC, Envoy REST gateway, metrics, training workers) until Ctrl-C or SIGTERM."""
    settings = load_settings_or_exit(config, data_dir=str(data_dir) if data_dir else None, grpc_port=grpc_port,
                                     http_port=http_port, auth_enabled=False if no_auth else None)
    configure_logging(settings.log_level)
    if not settings.auth_enabled:
        err_console.print("[bold yellow]warning:[/] authentication is OFF"
                          f"{' (--no-auth)' if no_auth else ' (auth_enabled: false)'}: every caller that can reach "
                          "this machine's loopback interface is treated as admin")

    def ready(endpoints: Endpoints) -> None:
        parts = [endpoints_table(endpoints)]
        if endpoints.bootstrap_token:
            parts.append(bootstrap_key_text(endpoints.bootstrap_token))
        parts.append(Text("\nCtrl-C stops it.", style="dim"))
        # soft_wrap off inside the panel; the token (59 characters) fits an 80-column terminal.
        console.print(Panel(Group(*parts), title="trainforge is running", title_align="left", expand=False))

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await Service(settings, bootstrap_admin_key=True).run(stop, ready)

    try:
        asyncio.run(main())
    except TrainforgeError as exc:
        raise service_error(exc) from None
    console.print("trainforge stopped")
