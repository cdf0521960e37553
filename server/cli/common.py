"""What every command shares: the consoles, exit statuses, common options, settings loading, error
printing (one message and each field violation, exit 1 or 2, never a traceback) and the gRPC
client that sends the API key and a deadline with each call."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from rich.console import Console
from rich.markup import escape

from trainforge.core.errors import InvalidArgument, TrainforgeError
from trainforge.core.settings import Settings, load_settings

console = Console()
# Errors are not wrapped at the terminal width: messages carry paths and log lines people copy.
err_console = Console(stderr=True, soft_wrap=True)

# Exit statuses: 1 a request or the service failed, 2 the command line or the settings are wrong
# (click's own usage errors use 2 as well), 130 interrupted (128 + SIGINT, as shells report it).
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
RPC_TIMEOUT_S = 30.0
DEFAULT_SERVER = "127.0.0.1:50051"

ConfigOpt = Annotated[Path | None, typer.Option("--config", exists=True, dir_okay=False,
                                                help="Settings YAML (see configs/server.yaml).")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir",
                                                 help="Data directory (default ~/.local/share/trainforge).")]
DatabaseUrlOpt = Annotated[str | None, typer.Option(
    "--database-url", help="PostgreSQL URL (default: DATABASE_URL, else the embedded cluster under --data-dir).")]
ServerOpt = Annotated[str, typer.Option("--server", envvar="TRAINFORGE_SERVER", help="gRPC address, host:port.")]
ApiKeyOpt = Annotated[str, typer.Option("--api-key", envvar="TRAINFORGE_API_KEY", show_default=False,
                                        help="API key (tf_...), sent as `authorization: Bearer`.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the response as JSON with proto field names.")]


# -- errors -------------------------------------------------------------------------------------

def fail(message: str, *details: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Prints the error and returns the Exit to raise: `raise fail(...) from None`."""
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    for line in details:
        err_console.print(f"  {escape(line)}")
    return typer.Exit(code)


def service_error(exc: TrainforgeError) -> typer.Exit:
    """A domain error as one message and its violations. Exit 2 for InvalidArgument: outside a
    server the values it names came from the command line."""
    hints = [f"{v.field}: {v.description}" for v in getattr(exc, "violations", ())]
    message = "invalid request" if hints and exc.message.startswith("invalid request: ") else exc.message
    if exc.reason == "POSTGRES_DATA_DIR_NOT_TRAVERSABLE":
        # Root runs the embedded cluster as `postgres`, which cannot enter /root (0700), where the
        # default data dir ~/.local/share/trainforge lies. We do not move the data elsewhere behind
        # the user's back (registry data would then live in two places) nor chmod their home: we say
        # what to pass instead. `make run` is unaffected: the demo's data dir is a 0711 dir in /tmp.
        hints.append("hint: pass --data-dir with a directory the `postgres` user can reach, for example "
                     "--data-dir /var/lib/trainforge, or set DATABASE_URL to an existing server")
    return fail(message, *hints, code=EXIT_USAGE if isinstance(exc, InvalidArgument) else EXIT_FAILED)


def load_settings_or_exit(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except InvalidArgument as exc:
        raise fail(exc.message, *(f"{v.field}: {v.description}" for v in exc.violations), code=EXIT_USAGE) from None
    except (OSError, yaml.YAMLError) as exc:
        raise fail(f"cannot read settings from {config}: {exc}", code=EXIT_USAGE) from None


def rpc_error(err: grpc.RpcError, server: str) -> typer.Exit:
    code, message = err.code(), err.details() or ""
    violations: list[str] = []
    try:
        status = rpc_status.from_call(err)
    except ValueError:  # trailer disagrees with the call's status; the status line still holds
        status = None
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [f"{v.field}: {v.description}" for v in bad.field_violations]
    if violations and message.startswith("invalid request: "):
        message = "invalid request"  # the rest of the message is the violations, listed below
    name = code.name if code else "UNKNOWN"
    if code == grpc.StatusCode.UNAVAILABLE:
        violations.append(f"hint: is `trainforge serve` running at {server}? (--server or TRAINFORGE_SERVER)")
    elif code == grpc.StatusCode.UNAUTHENTICATED:
        violations.append("hint: pass --api-key or set TRAINFORGE_API_KEY")
    return fail(f"{name}: {message}", *violations)


# -- gRPC client --------------------------------------------------------------------------------

class RpcClient:
    """A service's stub whose unary calls carry the CLI's deadline and API key; `stream` calls a
    server-streaming method with the key and no deadline (a watch lasts as long as the job)."""

    def __init__(self, stub: Any, api_key: str):
        self._stub = stub
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()

    def __getattr__(self, method: str) -> Callable[[Message], Any]:
        rpc = getattr(self._stub, method)
        return lambda request: rpc(request, timeout=RPC_TIMEOUT_S, metadata=self._metadata)

    def stream(self, method: str, request: Message) -> Iterator[Any]:
        return getattr(self._stub, method)(request, metadata=self._metadata)


# A server whose gRPC port has TLS (tls_cert_file in its settings): the CA that signed its
# certificate, and for mutual TLS this client's certificate and key (PEM files).
TLS_ENV = ("TRAINFORGE_TLS_CA_FILE", "TRAINFORGE_TLS_CLIENT_CERT_FILE", "TRAINFORGE_TLS_CLIENT_KEY_FILE")


def _channel(server: str) -> grpc.Channel:
    ca, cert, key = (os.environ.get(name, "") for name in TLS_ENV)
    if not ca:
        return grpc.insecure_channel(server)
    try:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(ca).read_bytes(), private_key=Path(key).read_bytes() if key else None,
            certificate_chain=Path(cert).read_bytes() if cert else None)
    except OSError as exc:
        raise fail(f"cannot read a TLS file named by {', '.join(TLS_ENV)}: {exc}") from None
    return grpc.secure_channel(server, credentials)


@contextmanager
def rpc_client(stub_class: type, server: str, api_key: str) -> Iterator[RpcClient]:
    """A client of one service at `server` (over TLS when TRAINFORGE_TLS_CA_FILE is set); an RPC
    error inside the block is printed and exits 1."""
    with _channel(server) as channel:
        try:
            yield RpcClient(stub_class(channel), api_key)
        except grpc.RpcError as err:
            raise rpc_error(err, server) from None


def print_json(message: Message | Any) -> None:
    """A proto message the way the REST gateway writes bodies (snake_case, fields with default
    values included), or any JSON-able value as is."""
    if isinstance(message, Message):
        message = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                            always_print_fields_with_no_presence=True)
    typer.echo(json.dumps(message, indent=2, default=str))


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
