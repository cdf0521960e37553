"""The `trainforge` command: `serve` and `demo` run the service (trainforge.server.service),
`db upgrade` migrates a database, `models ...` is a gRPC client of RegistryService. Output is rich
tables, or JSON with proto field names under `--json`; errors are one message (and each field
violation) with exit status 1, never a traceback."""

from __future__ import annotations

import os

# grpc's fork handlers log an INFO line ("Other threads are currently calling into gRPC, skipping
# fork() handlers") each time the service forks pg_ctl or Envoy. Every child we fork execs at once
# and never touches gRPC, so the handlers are not needed. Read when grpc is first imported: keep
# this above the imports.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import asyncio  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import timedelta  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated, Any  # noqa: E402

import grpc  # noqa: E402
import typer  # noqa: E402
import yaml  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from google.protobuf.message import Message  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402
from rich.console import Console, Group, RenderableType  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.panel import Panel  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402

from trainforge.core.access.keys import KeyStore  # noqa: E402
from trainforge.core.db import migrate  # noqa: E402
from trainforge.core.db.embedded import EmbeddedPostgres  # noqa: E402
from trainforge.core.db.pool import open_pool  # noqa: E402
from trainforge.core.errors import InvalidArgument, TrainforgeError  # noqa: E402
from trainforge.core.settings import Settings, load_settings  # noqa: E402
from trainforge.server.observability import configure_logging  # noqa: E402
from trainforge.server.service import (  # noqa: E402
    Endpoints,
    Service,
    embedded_cluster_lock,
    embedded_postgres_dir,
    mask_password,
)
from trainforge.v1 import registry_pb2, registry_pb2_grpc  # noqa: E402

# Locals stay out of tracebacks: they would print DSNs with passwords.
app = typer.Typer(name="trainforge", help="Self-hosted LLM training system: service, database and registry client.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
models_app = typer.Typer(help="Model registry client (gRPC RegistryService).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")

console = Console()
# Errors are not wrapped at the terminal width: messages carry paths and log lines people copy.
err_console = Console(stderr=True, soft_wrap=True)

# Exit statuses: 1 a request or the service failed, 2 the command line or the settings are wrong
# (click's own usage errors use 2 as well).
EXIT_FAILED, EXIT_USAGE = 1, 2
RPC_TIMEOUT_S = 30.0

ConfigOpt = Annotated[Path | None, typer.Option("--config", exists=True, dir_okay=False,
                                                help="Settings YAML (see configs/server.yaml).")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir",
                                                 help="Data directory (default ~/.local/share/trainforge).")]
ServerOpt = Annotated[str, typer.Option("--server", envvar="TRAINFORGE_SERVER", help="gRPC address, host:port.")]
ApiKeyOpt = Annotated[str, typer.Option("--api-key", envvar="TRAINFORGE_API_KEY", show_default=False,
                                        help="API key (tf_...), sent as `authorization: Bearer`.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the response as JSON with proto field names.")]


# -- errors -------------------------------------------------------------------------------------

def _fail(message: str, *details: str, code: int = EXIT_FAILED) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    for line in details:
        err_console.print(f"  {escape(line)}")
    return typer.Exit(code)


def _service_error(exc: TrainforgeError) -> typer.Exit:
    hints = []
    if exc.reason == "POSTGRES_DATA_DIR_NOT_TRAVERSABLE":
        # Root runs the embedded cluster as `postgres`, which cannot enter /root (0700), where the
        # default data dir ~/.local/share/trainforge lies. We do not move the data elsewhere behind
        # the user's back (registry data would then live in two places) nor chmod their home: we say
        # what to pass instead. `make run` is unaffected: the demo's data dir is a 0711 dir in /tmp.
        hints.append("hint: pass --data-dir with a directory the `postgres` user can reach, for example "
                     "--data-dir /var/lib/trainforge, or set DATABASE_URL to an existing server")
    return _fail(exc.message, *hints)


def _load_settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except InvalidArgument as exc:
        raise _fail(exc.message, *(f"{v.field}: {v.description}" for v in exc.violations), code=EXIT_USAGE) from None
    except (OSError, yaml.YAMLError) as exc:
        raise _fail(f"cannot read settings from {config}: {exc}", code=EXIT_USAGE) from None


def _rpc_error(err: grpc.RpcError, server: str) -> typer.Exit:
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
    return _fail(f"{name}: {message}", *violations)


class _Registry:
    """RegistryService calls with the CLI's deadline and API key on each."""

    def __init__(self, channel: grpc.Channel, api_key: str):
        self._stub = registry_pb2_grpc.RegistryServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()

    def __getattr__(self, method: str) -> Callable[[Message], Any]:
        rpc = getattr(self._stub, method)
        return lambda request: rpc(request, timeout=RPC_TIMEOUT_S, metadata=self._metadata)


@contextmanager
def _registry(server: str, api_key: str) -> Iterator[_Registry]:
    with grpc.insecure_channel(server) as channel:
        try:
            yield _Registry(channel, api_key)
        except grpc.RpcError as err:
            raise _rpc_error(err, server) from None


def _print_json(message: Message) -> None:
    # Same shape as the REST gateway's bodies: snake_case, fields with default values included.
    body = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)
    typer.echo(json.dumps(body, indent=2))


# -- rendering ----------------------------------------------------------------------------------

def _num(value: float | str) -> str:
    if isinstance(value, str) or math.isnan(value):  # proto JSON writes NaN as "NaN"
        return "—"
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:.4g}"


def _delta(value: float | str) -> str:
    if isinstance(value, str) or math.isnan(value):
        return ""
    return f"{'+' if value >= 0 else ''}{_num(value)}"


def _metrics(metrics: Any) -> str:
    return ", ".join(f"{k}={_num(metrics[k])}" for k in sorted(metrics))


def _time(ts: Any) -> str:
    return ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if ts.seconds else ""


def _ref(v: registry_pb2.ModelVersion) -> str:
    return f"{v.name}:{v.version}"


def version_table(v: registry_pb2.ModelVersion) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    a = v.architecture
    rows = [
        ("version", _ref(v)), ("id", v.model_version_id), ("type", v.model_type), ("description", v.description),
        ("size", f"{_num(v.size_mb)} MB" if v.size_mb else ""),
        ("parameters", f"{v.parameter_count:,}" if v.parameter_count else ""),
        ("architecture", f"{a.model_family} {a.layers} layers, hidden {a.hidden_size}, {a.attention_heads} heads, "
                         f"vocab {a.vocab_size}, context {a.max_sequence_length}" if a.layers else a.model_family),
        ("metrics", _metrics(v.performance_metrics)), ("tags", ", ".join(v.tags)), ("aliases", ", ".join(v.aliases)),
        ("base model", v.lineage.base_model),
        ("artifacts", f"{v.artifact_count} files, {v.artifact_bytes:,} bytes, {v.manifest_digest[:16]}"
                      if v.artifact_count else ""),
        ("deployed", "yes" if v.deployed else ""), ("created", _time(v.create_time)),
    ]
    for key, value in rows:
        if value:
            table.add_row(key, value)
    return table


def model_table(m: registry_pb2.Model) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows = [
        ("model", m.name), ("id", m.model_id), ("description", m.description), ("tags", ", ".join(m.tags)),
        ("versions", str(m.version_count)), ("latest", m.latest_version),
        ("aliases", ", ".join(f"{k} → {m.aliases[k]}" for k in sorted(m.aliases))),
        ("updated", _time(m.update_time)),
    ]
    for key, value in rows:
        if value:
            table.add_row(key, value)
    return table


def versions_table(versions: Sequence[registry_pb2.ModelVersion], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("version", overflow="fold")
    table.add_column("type")
    table.add_column("metrics", overflow="fold")
    table.add_column("aliases")
    for v in versions:
        table.add_row(_ref(v), v.model_type, _metrics(v.performance_metrics), ", ".join(v.aliases))
    return table


def comparison_table(comparison: registry_pb2.ModelComparison, refs: Sequence[str] = ()) -> Table:
    """Metrics down, versions across; each cell is the value and its delta against the first
    version; the best value of a row is starred."""
    names = {v.name for v in comparison.versions}
    one_model = len(names) == 1
    table = Table(title=names.pop() if one_model else None, title_justify="left",
                  caption="deltas against the first version; ★ best", caption_justify="left")
    table.add_column("metric", overflow="fold")
    ids = [v.model_version_id for v in comparison.versions]
    for i, v in enumerate(comparison.versions):
        # With one model the name goes in the title and the columns are its versions.
        header = v.version if one_model else _ref(v)
        ref = refs[i] if i < len(refs) else ""
        if ref and ref not in (_ref(v), v.model_version_id):
            header += f"\n({ref[len(v.name):] if one_model and ref.startswith(v.name) else ref})"
        table.add_column(header, justify="right", overflow="fold")
    for row in comparison.metrics:
        cells = []
        for i, value in enumerate(row.values):
            cell = _num(value)
            delta = _delta(row.deltas[i]) if i and i < len(row.deltas) else ""
            if delta:
                cell += f" ({delta})"
            if row.best_model_version_id and ids[i] == row.best_model_version_id:
                cell += " ★"
            cells.append(cell)
        table.add_row(row.metric, *cells)
    return table


def history_table(history: registry_pb2.ModelHistory) -> Table:
    table = Table(title=f"history of {history.name}", title_justify="left")
    table.add_column("version")
    table.add_column("after")
    table.add_column("metric changes", overflow="fold")
    table.add_column("registered")
    for e in history.entries:
        changes = ", ".join(f"{k} {_delta(e.metric_deltas[k])}" for k in sorted(e.metric_deltas))
        table.add_row(e.version, e.previous_version, changes, _time(e.create_time))
    return table


def health_table(h: registry_pb2.RegistryHealth) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("status", h.status)
    table.add_row("database", f"{'ok' if h.database_ok else 'DOWN'} ({h.database_latency_ms:.1f} ms)")
    table.add_row("models / versions", f"{h.model_count} / {h.version_count}")
    table.add_row("artifact store", f"{'ok' if h.artifact_store_ok else 'NOT WRITABLE'}, {h.artifact_bytes:,} bytes")
    return table


def endpoints_table(e: Endpoints) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("gRPC", e.grpc_address)
    table.add_row("REST", e.rest_url)
    table.add_row("API docs", e.docs_url)
    table.add_row("metrics", e.metrics_url or "off")
    table.add_row("database", e.database)
    return table


# -- serve, db ----------------------------------------------------------------------------------

def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


@app.command()
def serve(config: ConfigOpt = None, data_dir: DataDirOpt = None,
          grpc_port: Annotated[int | None, typer.Option("--grpc-port", help="gRPC port (0: any free one).")] = None,
          http_port: Annotated[int | None, typer.Option("--http-port", help="REST gateway port.")] = None) -> None:
    """Run the service (database, gRPC, Envoy REST gateway, metrics) until Ctrl-C or SIGTERM."""
    settings = _load_settings(config, data_dir=str(data_dir) if data_dir else None,
                              grpc_port=grpc_port, http_port=http_port)
    configure_logging(settings.log_level)

    def ready(endpoints: Endpoints) -> None:
        console.print(Panel(Group(endpoints_table(endpoints), Text("\nCtrl-C stops it.", style="dim")),
                            title="trainforge is running", title_align="left", expand=False))

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await Service(settings).run(stop, ready)

    try:
        asyncio.run(main())
    except TrainforgeError as exc:
        raise _service_error(exc) from None
    console.print("trainforge stopped")


@db_app.command("upgrade")
def db_upgrade(
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="Database to migrate (default: DATABASE_URL, else the embedded cluster).")] = None,
    data_dir: DataDirOpt = None, config: ConfigOpt = None,
) -> None:
    """Bring a database to the newest schema revision."""
    settings = _load_settings(config, data_dir=str(data_dir) if data_dir else None, database_url=database_url)
    # Imported here: SQLAlchemy is only needed by this command.
    from sqlalchemy.exc import SQLAlchemyError

    try:
        if settings.database_url:
            where = mask_password(settings.database_url)
            migrate.upgrade(settings.database_url)
        else:
            with embedded_cluster_lock(settings), EmbeddedPostgres(embedded_postgres_dir(settings)) as cluster:
                where = f"embedded PostgreSQL at {cluster.data_dir}"
                migrate.upgrade(cluster.dsn)
    except TrainforgeError as exc:
        raise _service_error(exc) from None
    except SQLAlchemyError as exc:
        raise _fail(f"migration failed: {getattr(exc, 'orig', None) or exc}") from None
    console.print(f"{escape(where)} is at revision [bold]{migrate.head_revision()}[/] (head)", soft_wrap=True)


# -- models -------------------------------------------------------------------------------------

@models_app.command("list")
def models_list(page_size: Annotated[int, typer.Option("--page-size")] = 50,
                server: ServerOpt = "127.0.0.1:50051", api_key: ApiKeyOpt = "", as_json: JsonOpt = False) -> None:
    """List registered models, newest first."""
    with _registry(server, api_key) as stub:
        reply = stub.ListModels(registry_pb2.ListModelsRequest(page_size=page_size))
    if as_json:
        return _print_json(reply)
    table = Table(caption=f"{len(reply.data)} of {reply.total_size} models", caption_justify="left")
    for column in ("model", "latest", "versions", "aliases", "updated"):
        table.add_column(column, overflow="fold")
    for m in reply.data:
        table.add_row(m.name, m.latest_version, str(m.version_count),
                      ", ".join(f"{k} → {m.aliases[k]}" for k in sorted(m.aliases)), _time(m.update_time))
    console.print(table)


@models_app.command("get")
def models_get(model: Annotated[str, typer.Argument(help="Model name or id.")],
               version: Annotated[str | None, typer.Option("--version", help="Version string or alias.")] = None,
               server: ServerOpt = "127.0.0.1:50051", api_key: ApiKeyOpt = "", as_json: JsonOpt = False) -> None:
    """Show a model, or one of its versions with --version."""
    with _registry(server, api_key) as stub:
        if version:
            reply: Message = stub.GetModelVersion(registry_pb2.GetModelVersionRequest(model_id=model, version=version))
        else:
            reply = stub.GetModel(registry_pb2.GetModelRequest(model_id=model))
    if as_json:
        return _print_json(reply)
    if version:
        console.print(version_table(reply.data))
    else:
        console.print(model_table(reply.data))
        if reply.data.HasField("latest"):
            console.print(Panel(version_table(reply.data.latest), title="latest version", title_align="left"))


def _parse_metric(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    try:
        if not sep or not key.strip():
            raise ValueError
        return key.strip(), float(value)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not NAME=NUMBER", param_hint="--metric") from None


def _version_from_file(path: Path) -> registry_pb2.ModelVersion:
    version = registry_pb2.ModelVersion()
    try:
        json_format.Parse(path.read_text(), version)
    except (OSError, json_format.ParseError) as exc:
        raise typer.BadParameter(f"{path}: {exc}", param_hint="--file") from None
    return version


@models_app.command("register")
def models_register(
    name: Annotated[str | None, typer.Option("--name")] = None,
    version: Annotated[str | None, typer.Option("--version")] = None,
    model_type: Annotated[str | None, typer.Option("--model-type",
                                                   help="pretrained, fine_tuned, compressed or custom.")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    metric: Annotated[list[str] | None, typer.Option("--metric", help="NAME=NUMBER; repeatable.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Repeatable.")] = None,
    source: Annotated[str | None, typer.Option("--source", help="Folder under the models root to attach.")] = None,
    file: Annotated[Path | None, typer.Option("--file", exists=True, dir_okay=False,
                                              help="JSON body of a version (the REST register body); "
                                                   "the options above override it.")] = None,
    server: ServerOpt = "127.0.0.1:50051", api_key: ApiKeyOpt = "", as_json: JsonOpt = False,
) -> None:
    """Register a new model version. The server checks every field and reports all problems at once."""
    body = _version_from_file(file) if file else registry_pb2.ModelVersion()
    for field, value in (("name", name), ("version", version), ("model_type", model_type),
                         ("description", description), ("source", source)):
        if value is not None:
            setattr(body, field, value)
    for text in metric or ():
        key, value = _parse_metric(text)
        body.performance_metrics[key] = value
    body.tags.extend(tag or ())
    with _registry(server, api_key) as stub:
        reply = stub.RegisterModel(registry_pb2.RegisterModelRequest(model_version=body))
    if as_json:
        return _print_json(reply)
    console.print(Panel(version_table(reply.data), title=f"registered {escape(_ref(reply.data))}", title_align="left"))


@models_app.command("search")
def models_search(
    filter: Annotated[str, typer.Option("--filter",
                                        help='AIP-160, e.g. \'metrics.accuracy > 0.8 AND tags:"chat"\'.')] = "",
    query: Annotated[str, typer.Option("--query", help="Free text in name, description, tags.")] = "",
    order_by: Annotated[str, typer.Option("--order-by", help="e.g. 'metrics.accuracy desc'.")] = "",
    page_size: Annotated[int, typer.Option("--page-size")] = 50,
    server: ServerOpt = "127.0.0.1:50051", api_key: ApiKeyOpt = "", as_json: JsonOpt = False,
) -> None:
    """Search model versions."""
    request = registry_pb2.SearchModelsRequest(filter=filter, query=query, order_by=order_by, page_size=page_size)
    with _registry(server, api_key) as stub:
        reply = stub.SearchModels(request)
    if as_json:
        return _print_json(reply)
    console.print(versions_table(reply.data, title=f"{len(reply.data)} of {reply.total_size} matching versions"))


@models_app.command("compare")
def models_compare(
    refs: Annotated[list[str], typer.Argument(help="2-16 references: id, NAME:VERSION or NAME@ALIAS.")],
    metric: Annotated[list[str] | None, typer.Option("--metric", help="Only these metrics; repeatable.")] = None,
    server: ServerOpt = "127.0.0.1:50051", api_key: ApiKeyOpt = "", as_json: JsonOpt = False,
) -> None:
    """Compare model versions side by side; the first is the baseline."""
    with _registry(server, api_key) as stub:
        reply = stub.CompareModels(registry_pb2.CompareModelsRequest(model_version_ids=refs, metrics=metric or []))
    if as_json:
        return _print_json(reply)
    console.print(comparison_table(reply.data, refs))


@models_app.command("delete")
def models_delete(
    model: Annotated[str, typer.Argument(help="Model name or id.")],
    version: Annotated[str | None, typer.Option("--version", help="Delete only this version (or alias).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Even if deployed or aliased.")] = False,
    server: ServerOpt = "127.0.0.1:50051", api_key: ApiKeyOpt = "", as_json: JsonOpt = False,
) -> None:
    """Delete a model with all its versions, or one version with --version."""
    with _registry(server, api_key) as stub:
        if version:
            reply: Message = stub.DeleteModelVersion(
                registry_pb2.DeleteModelVersionRequest(model_id=model, version=version, force=force))
        else:
            reply = stub.DeleteModel(registry_pb2.DeleteModelRequest(model_id=model, force=force))
    if as_json:
        return _print_json(reply)
    if version:
        console.print(f"deleted {escape(_ref(reply.data))}")
    else:
        console.print(f"deleted model {escape(reply.data.name)} with {reply.data.version_count} version(s)")


# -- demo ---------------------------------------------------------------------------------------

DEMO_MODEL = "custom_conversational_model"
# The README's quick start, as written there.
DEMO_SEED = {
    "name": DEMO_MODEL, "version": "1.0.0", "description": "Fine-tuned conversational model",
    "model_type": "fine_tuned", "size_mb": 2048, "parameter_count": 355000000,
    "architecture": {"model_family": "GPT", "layers": 24, "hidden_size": 1024, "attention_heads": 16,
                     "vocab_size": 50257, "max_sequence_length": 1024},
    "performance_metrics": {"accuracy": 0.87, "f1_score": 0.84, "inference_latency_ms": 150},
}
DEMO_NEXT = {
    "name": DEMO_MODEL, "version": "1.1.0", "model_type": "fine_tuned", "changelog": "more dialogue data",
    "performance_metrics": {"accuracy": 0.90, "f1_score": 0.86, "inference_latency_ms": 140},
}
DEMO_COMPARE = [f"{DEMO_MODEL}:1.0.0", f"{DEMO_MODEL}@production", f"{DEMO_MODEL}:1.1.0"]


@dataclass
class _Reply:
    status: int
    body: Any


def _http(method: str, url: str, body: Any = None, token: str = "", timeout: float = 30) -> _Reply:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, payload = err.code, err.read()
    try:
        return _Reply(status, json.loads(payload) if payload else None)
    except ValueError:
        return _Reply(status, payload.decode(errors="replace"))


class _DemoCancelled(Exception):
    pass


class _RestDemo:
    """Calls the REST gateway step by step and prints each call, its status and what came back.
    Responses are parsed into the proto messages so the tables are the ones `models` prints."""

    def __init__(self, base_url: str, token: str, cancel: threading.Event):
        self.base_url, self.token, self.cancel = base_url, token, cancel
        self.steps = 0
        self.failed: list[str] = []

    def step(self, title: str, method: str, path: str, body: Any, expect: int,
             show: Callable[[Any], RenderableType | None], check: Callable[[Any], str | None] | None = None,
             *, anonymous: bool = False) -> Any:
        if self.cancel.is_set():
            raise _DemoCancelled
        self.steps += 1
        try:
            reply = _http(method, self.base_url + path, body, "" if anonymous else self.token)
        except OSError as exc:
            reply = _Reply(0, f"request failed: {exc}")
        problem = None if reply.status == expect else f"expected HTTP {expect}"
        shown: RenderableType | None = None
        if problem is None:
            try:
                problem = check(reply.body) if check else None
                shown = show(reply.body)
            except (AttributeError, KeyError, TypeError, ValueError, json_format.ParseError) as exc:
                problem = f"unexpected response body ({type(exc).__name__}: {exc})"
        parts: list[RenderableType] = [Text(f"{method} {path}" + ("  (no API key)" if anonymous else ""), style="bold")]
        if body is not None:
            parts.append(Text(json.dumps(body, separators=(",", ":")), style="dim", overflow="fold"))
        status_style = "red" if problem else "green"
        parts.append(Text(f"→ HTTP {reply.status}" + (f"  ✗ {problem}" if problem else "  ✓"), style=status_style))
        if shown is not None:
            parts += [Text(""), shown]
        elif problem:
            parts.append(Text(str(reply.body)[:600], overflow="fold"))
        console.print(Panel(Group(*parts), title=f"{self.steps}. {title}", title_align="left",
                            border_style="red" if problem else "blue"))
        if problem:
            self.failed.append(f"{self.steps}. {title}: HTTP {reply.status}, {problem}")
        return reply.body

    def run(self, reset: bool) -> bool:
        pb = registry_pb2
        api = "/api/training"

        def data(message_type: type[Message]) -> Callable[[Any], Message]:
            return lambda body: json_format.ParseDict(body, message_type(), ignore_unknown_fields=True).data

        if reset:
            # A --data-dir reused from an earlier demo still holds the model; start from scratch.
            reply = _http("DELETE", f"{self.base_url}{api}/models/{DEMO_MODEL}?force=true", token=self.token)
            if reply.status == 200:
                console.print(f"removed {DEMO_MODEL} left by an earlier demo in this data directory")

        self.step("Without an API key the registry is closed", "GET", f"{api}/models", None, 401,
                  lambda b: Text(f"{b.get('message', '')}"), anonymous=True)
        self.step("Register version 1.0.0 (the README's example body)", "POST", f"{api}/models", DEMO_SEED, 200,
                  lambda b: version_table(data(pb.RegisterModelResponse)(b)))
        self.step("Register version 1.1.0 with better metrics", "POST", f"{api}/models", DEMO_NEXT, 200,
                  lambda b: version_table(data(pb.RegisterModelResponse)(b)))
        self._bad_register(api)
        self.step("Point the production alias at 1.0.0", "PUT", f"{api}/models/{DEMO_MODEL}/aliases/production",
                  {"version": "1.0.0"}, 200, lambda b: model_table(data(pb.SetModelAliasResponse)(b)),
                  check=lambda b: None if b["data"]["aliases"].get("production") == "1.0.0"
                  else "production does not point at 1.0.0")
        search_filter = 'model_type = "fine_tuned" AND metrics.accuracy > 0.88'
        self.step("Search with an AIP-160 filter", "POST", f"{api}/models/search", {"filter": search_filter}, 200,
                  lambda b: versions_table(data(pb.SearchModelsResponse)(b)),
                  check=lambda b: None if [v["version"] for v in b["data"] if v["name"] == DEMO_MODEL] == ["1.1.0"]
                  else "expected exactly 1.1.0 to match")
        self.step("Compare 1.0.0, production and 1.1.0", "POST", f"{api}/models/compare",
                  {"model_version_ids": DEMO_COMPARE}, 200,
                  lambda b: comparison_table(data(pb.CompareModelsResponse)(b), DEMO_COMPARE),
                  check=lambda b: None if [v["version"] for v in b["data"]["versions"]] == ["1.0.0", "1.0.0", "1.1.0"]
                  else "versions did not resolve to 1.0.0, 1.0.0, 1.1.0")
        self.step("Version history", "GET", f"{api}/models/{DEMO_MODEL}/history", None, 200,
                  lambda b: history_table(data(pb.GetModelHistoryResponse)(b)))
        self.step("Registry health", "GET", f"{api}/registry/health", None, 200,
                  lambda b: health_table(data(pb.GetRegistryHealthResponse)(b)),
                  check=lambda b: None if b["data"]["status"] == "ok" else f"status is {b['data']['status']}")
        return not self.failed

    def _bad_register(self, api: str) -> Any:
        def violations(body: Any) -> Table:
            table = Table("field", "problem", title="google.rpc.BadRequest", title_justify="left")
            for detail in body.get("details", []):
                for v in detail.get("field_violations", detail.get("fieldViolations", [])):
                    table.add_row(v["field"], v["description"])
            return table

        def both(body: Any) -> str | None:
            fields = {v["field"] for d in body.get("details", [])
                      for v in d.get("field_violations", d.get("fieldViolations", []))}
            return None if {"version", "model_type"} <= fields else f"violations listed: {sorted(fields)}"

        return self.step("A malformed version is refused, every problem listed", "POST", f"{api}/models",
                         {"name": DEMO_MODEL, "version": "not a version", "model_type": "gigantic"}, 400,
                         violations, check=both)


def _free_port() -> int:
    # Envoy needs a number; port 0 cannot be used for its listener. The port may be taken between
    # this check and Envoy's bind, which then fails the start with Envoy's log.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _mint_demo_key(dsn: str) -> str:
    """An admin key straight in the database, as the service's operator would make one: every
    registry call needs a key, and the demo runs with authentication on, as `serve` does."""
    pool = await open_pool(dsn, min_size=1, max_size=1)
    try:
        new = await KeyStore(pool).create("trainforge-demo", "admin", expires_in=timedelta(hours=1),
                                          description="made by `trainforge demo` for its session")
    finally:
        await pool.close()
    return new.token


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


async def _demo_session(settings: Settings, reset: bool) -> int:
    """Runs the service and the REST demo against it; returns the exit status."""
    stop = asyncio.Event()
    _stop_on_signals(stop)
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[Endpoints] = loop.create_future()
    service = asyncio.create_task(Service(settings, grpc_grace=1.0).run(stop, ready.set_result))
    await asyncio.wait({ready, service}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        await service  # raises what went wrong; returns when a signal came before the start finished
        console.print("[yellow]interrupted[/]")
        return EXIT_INTERRUPTED
    endpoints = ready.result()
    console.print(Panel(endpoints_table(endpoints), title="trainforge is running", title_align="left", expand=False))
    try:
        token = await _mint_demo_key(endpoints.dsn)
    except BaseException:
        stop.set()
        await service
        raise
    console.print(f"minted an admin API key for this session: {escape(token[:len('tf_') + 12])}…")

    cancel = threading.Event()
    demo = _RestDemo(endpoints.http_url, token, cancel)
    demo_task = asyncio.ensure_future(asyncio.to_thread(demo.run, reset))
    stop_wait = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({demo_task, stop_wait, service}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        cancel.set()
        stop.set()
        stop_wait.cancel()
        await service  # the service is down (and any failure of it raised) before we report
        try:
            ok = await demo_task
        except _DemoCancelled:
            ok = None
    if ok is None:
        console.print("[yellow]interrupted[/]")
        return EXIT_INTERRUPTED
    if ok:
        console.print(f"[green]all {demo.steps} steps returned what they should[/]")
        return 0
    console.print("[red]steps with unexpected results:[/]")
    for line in demo.failed:
        console.print(f"  {escape(line)}")
    return EXIT_FAILED


@app.command()
def demo(data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Keep the demo's data here (default: a temporary directory, removed at the end).")] = None,
) -> None:
    """Start the service on free ports, run a short REST session against it, and stop."""
    started = time.monotonic()
    own_dir = data_dir is None
    if own_dir:
        # Under /tmp and 0711 rather than $TMPDIR: as root the embedded cluster runs as `postgres`,
        # which must be able to traverse every parent of its data directory.
        data_dir = Path(tempfile.mkdtemp(prefix="trainforge-demo-", dir="/tmp"))
        data_dir.chmod(0o711)
    assert data_dir is not None
    # The demo is self-contained: its own embedded cluster and free ports, whatever DATABASE_URL or
    # TRAINFORGE_* say, so it never writes its models into a real registry.
    settings = load_settings(env={}, data_dir=str(data_dir.absolute()), grpc_port=0, http_port=_free_port(),
                             envoy_admin_port=0, metrics_port=0)
    configure_logging("WARNING")
    # Each RPC's outcome is on screen already, the refused register included; its WARNING line
    # from the RPC interceptor would only repeat it on stderr.
    logging.getLogger("trainforge.rpc").setLevel(logging.ERROR)
    console.print(f"data directory: {settings.data_dir}" + (" (removed at the end)" if own_dir else ""))
    try:
        status = asyncio.run(_demo_session(settings, reset=not own_dir))
    except TrainforgeError as exc:
        raise _service_error(exc) from None
    finally:
        if own_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    console.print(f"stopped everything after {time.monotonic() - started:.1f} s")
    if status:
        raise typer.Exit(status)


if __name__ == "__main__":
    app()
