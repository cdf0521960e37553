"""`trainforge models ...`: a gRPC client of RegistryService. Rich tables, or `--json` with proto
field names (the REST gateway's body shape). `compress` and `evaluate` queue a job (CompressModel,
EvaluateModel), follow it like `jobs watch` and print its result; `--no-wait` prints the job and
returns at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.markup import escape
from rich.panel import Panel

from trainforge.server.cli.common import (
    DEFAULT_SERVER,
    EXIT_FAILED,
    ApiKeyOpt,
    JsonOpt,
    RpcClient,
    ServerOpt,
    console,
    print_json,
    rpc_client,
)
from trainforge.server.cli.jobs import follow, report_end, training_client
from trainforge.server.cli.tables import (
    comparison_table,
    model_table,
    models_list_table,
    version_ref,
    version_table,
    versions_table,
)
from trainforge.v1 import registry_pb2, registry_pb2_grpc, training_pb2

app = typer.Typer(help="Model registry client (gRPC RegistryService).", no_args_is_help=True)


@contextmanager
def _registry(server: str, api_key: str) -> Iterator[RpcClient]:
    with rpc_client(registry_pb2_grpc.RegistryServiceStub, server, api_key) as stub:
        yield stub


@app.command("list")
def models_list(page_size: Annotated[int, typer.Option("--page-size")] = 50,
                server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "", as_json: JsonOpt = False) -> None:
    """List registered models, newest first."""
    with _registry(server, api_key) as stub:
        reply = stub.ListModels(registry_pb2.ListModelsRequest(page_size=page_size))
    if as_json:
        return print_json(reply)
    console.print(models_list_table(reply))


@app.command("get")
def models_get(model: Annotated[str, typer.Argument(help="Model name or id.")],
               version: Annotated[str | None, typer.Option("--version", help="Version string or alias.")] = None,
               server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "", as_json: JsonOpt = False) -> None:
    """Show a model, or one of its versions with --version."""
    with _registry(server, api_key) as stub:
        if version:
            reply: Message = stub.GetModelVersion(registry_pb2.GetModelVersionRequest(model_id=model, version=version))
        else:
            reply = stub.GetModel(registry_pb2.GetModelRequest(model_id=model))
    if as_json:
        return print_json(reply)
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


@app.command("register")
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
    server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "", as_json: JsonOpt = False,
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
        return print_json(reply)
    console.print(Panel(version_table(reply.data), title=f"registered {escape(version_ref(reply.data))}", title_align="left"))


@app.command("search")
def models_search(
    filter: Annotated[str, typer.Option("--filter",
                                        help='AIP-160, e.g. \'metrics.accuracy > 0.8 AND tags:"chat"\'.')] = "",
    query: Annotated[str, typer.Option("--query", help="Free text in name, description, tags.")] = "",
    order_by: Annotated[str, typer.Option("--order-by", help="e.g. 'metrics.accuracy desc'.")] = "",
    page_size: Annotated[int, typer.Option("--page-size")] = 50,
    server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "", as_json: JsonOpt = False,
) -> None:
    """Search model versions."""
    request = registry_pb2.SearchModelsRequest(filter=filter, query=query, order_by=order_by, page_size=page_size)
    with _registry(server, api_key) as stub:
        reply = stub.SearchModels(request)
    if as_json:
        return print_json(reply)
    console.print(versions_table(reply.data, title=f"{len(reply.data)} of {reply.total_size} matching versions"))


@app.command("compare")
def models_compare(
    refs: Annotated[list[str], typer.Argument(help="2-16 references: id, NAME:VERSION or NAME@ALIAS.")],
    metric: Annotated[list[str] | None, typer.Option("--metric", help="Only these metrics; repeatable.")] = None,
    server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "", as_json: JsonOpt = False,
) -> None:
    """Compare model versions side by side; the first is the baseline."""
    with _registry(server, api_key) as stub:
        reply = stub.CompareModels(registry_pb2.CompareModelsRequest(model_version_ids=refs, metrics=metric or []))
    if as_json:
        return print_json(reply)
    console.print(comparison_table(reply.data, refs))


@app.command("delete")
def models_delete(
    model: Annotated[str, typer.Argument(help="Model name or id.")],
    version: Annotated[str | None, typer.Option("--version", help="Delete only this version (or alias).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Even if deployed or aliased.")] = False,
    server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "", as_json: JsonOpt = False,
) -> None:
    """Delete a model with all its versions, or one version with --version."""
    with _registry(server, api_key) as stub:
        if version:
            reply: Message = stub.DeleteModelVersion(
                registry_pb2.DeleteModelVersionRequest(model_id=model, version=version, force=force))
        else:
            reply = stub.DeleteModel(registry_pb2.DeleteModelRequest(model_id=model, force=force))
    if as_json:
        return print_json(reply)
    if version:
        console.print(f"deleted {escape(version_ref(reply.data))}")
    else:
        console.print(f"deleted model {escape(reply.data.name)} with {reply.data.version_count} version(s)")


NoWaitOpt = Annotated[bool, typer.Option("--no-wait", help="Print the queued job and return; "
                                                           "`trainforge jobs watch` follows it later.")]


def _queued(job: training_pb2.Job, stub: RpcClient, no_wait: bool, as_json: bool) -> None:
    """After a call that queued a job: print it (`--no-wait`), or follow it and print its result."""
    if no_wait:
        if as_json:
            return print_json(job)
        console.print(f"queued job {job.job_id}; `trainforge jobs watch {job.job_id}` follows it")
        return
    if as_json:  # only the ended job on stdout; the exit status says whether it succeeded
        job = _wait_quietly(stub, job.job_id)
        print_json(job)
        if job.status != training_pb2.JOB_STATE_SUCCEEDED:
            raise typer.Exit(EXIT_FAILED)
        return
    console.print(f"queued job {job.job_id}")
    report_end(follow(stub, job.job_id))


def _wait_quietly(stub: RpcClient, job_id: str) -> training_pb2.Job:
    for _ in stub.stream("WatchJob", training_pb2.WatchJobRequest(job_id=job_id)):
        pass
    return stub.GetJob(training_pb2.GetJobRequest(job_id=job_id)).data


@app.command("compress")
def models_compress(
    model: Annotated[str, typer.Argument(help="Model name or id.")],
    version: Annotated[str, typer.Option("--version", help="Version string or alias (default: the latest).")] = "",
    mode: Annotated[str, typer.Option("--mode", help="w8a8_dynamic (default) or w8a16.")] = "",
    target_version: Annotated[str, typer.Option("--target-version",
                                                help="Version string of the result (default <version>-int8).")] = "",
    max_perplexity_increase: Annotated[float | None, typer.Option(
        "--max-perplexity-increase", help="Largest relative perplexity increase accepted (default 0.02).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Register the result even if the gate fails.")] = False,
    no_wait: NoWaitOpt = False, server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "", as_json: JsonOpt = False,
) -> None:
    """Compress a version to int8 as a job, wait for it and print the registered version."""
    request = registry_pb2.CompressModelRequest(
        model_id=model, version=version, compression_type="quantization", precision="int8", mode=mode,
        target_version=target_version, force=force)
    if max_perplexity_increase is not None:
        request.max_perplexity_increase = max_perplexity_increase
    with _registry(server, api_key) as stub:
        job = stub.CompressModel(request).data
    with training_client(server, api_key) as stub:
        _queued(job, stub, no_wait, as_json)


@app.command("evaluate")
def models_evaluate(
    model: Annotated[str, typer.Argument(help="Model name.")],
    data: Annotated[str, typer.Option("--data", help="Data file under the server's data root.")],
    version: Annotated[str, typer.Option("--version", help="Version string or alias (default: the latest).")] = "",
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", help="accuracy, f1_score, perplexity or bleu; repeatable (default: all).")] = None,
    max_samples: Annotated[int, typer.Option("--max-samples", min=0, help="0: every row.")] = 0,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=0, help="0: 64.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=0, help="0: 8.")] = 0,
    no_wait: NoWaitOpt = False, server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "", as_json: JsonOpt = False,
) -> None:
    """Evaluate a registered version on the server as a job, wait for it and print its metrics
    (`trainforge evaluate` evaluates a local folder in this process instead)."""
    request = training_pb2.EvaluateModelRequest(
        model_name=model, version=version, data_path=data, metrics=metric or [], max_samples=max_samples,
        max_new_tokens=max_new_tokens, batch_size=batch_size)
    with training_client(server, api_key) as stub:
        _queued(stub.EvaluateModel(request).data, stub, no_wait, as_json)
