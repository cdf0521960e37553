"""`trainforge deploy`, `trainforge deployments ...` (a gRPC client of DeployService) and
`trainforge chat` (an OpenAI-compatible client of a local deployment's stable path through the
gateway). `deploy --wait` follows the deploy job like `jobs watch` and prints the deployment."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from trainforge.server.cli.common import (
    DEFAULT_SERVER,
    EXIT_FAILED,
    ApiKeyOpt,
    JsonOpt,
    RpcClient,
    ServerOpt,
    console,
    fail,
    print_json,
    rpc_client,
)
from trainforge.server.cli.jobs import follow, report_end, training_client
from trainforge.v1 import deploy_pb2, deploy_pb2_grpc, training_pb2

app = typer.Typer(help="Deployments (gRPC DeployService): list, get, health, rollback, undeploy.",
                  no_args_is_help=True)

DeploymentArg = Annotated[str, typer.Argument(help="Deployment id.")]
GatewayOpt = Annotated[str, typer.Option("--gateway", envvar="TRAINFORGE_GATEWAY",
                                         help="The REST gateway's URL (stable serving paths).")]
DEFAULT_GATEWAY = "http://127.0.0.1:8080"


@contextmanager
def _deploy(server: str, api_key: str) -> Iterator[RpcClient]:
    with rpc_client(deploy_pb2_grpc.DeployServiceStub, server, api_key) as stub:
        yield stub


def _state(value: int) -> str:
    return deploy_pb2.DeploymentState.Name(value).removeprefix("DEPLOYMENT_STATE_")


def _show(x: deploy_pb2.Deployment) -> None:
    color = {"HEALTHY": "green", "FAILED": "red", "UNHEALTHY": "yellow"}.get(_state(x.state), "white")
    console.print(f"deployment {x.deployment_id}: {escape(x.model_name)}:{escape(x.version)} on {x.target} as "
                  f"{escape(x.alias)!r} [{color}]{_state(x.state)}[/]")
    if x.serving_path:
        console.print(f"  stable path: {escape(x.serving_path)}/chat/completions")
    if x.endpoint:
        console.print(f"  endpoint: {escape(x.endpoint)}")
    if x.HasField("error") and x.error.message:
        console.print(f"  error: {escape(x.error.message)}")


@contextmanager
def _deploy_and_training(server: str, api_key: str):
    with _deploy(server, api_key) as deploy, training_client(server, api_key) as training:
        yield deploy, training


def deploy(
    version: Annotated[str, typer.Argument(help="The version: its id, NAME:VERSION or NAME@ALIAS.")],
    target: Annotated[str, typer.Option("--target", help="local, ollama, huggingface or cloud.")] = "local",
    alias: Annotated[str, typer.Option("--alias", help="The alias moved to it once healthy.")] = "production",
    engine: Annotated[str, typer.Option("--engine", help="Local target: llama_cpp (default) or transformers.")] = "",
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Deployment tag; repeatable.")] = None,
    auto_rollback: Annotated[bool, typer.Option("--auto-rollback/--no-auto-rollback")] = True,
    health_check_timeout: Annotated[int, typer.Option("--health-check-timeout", help="Milliseconds.")] = 30000,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the deploy job to its end.")] = True,
    server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "", as_json: JsonOpt = False,
) -> None:
    """Deploy a registered version; with --wait (the default), follow it until it is live or failed."""
    request = deploy_pb2.DeployModelRequest(model_version_id=version, target=target, alias=alias, engine=engine,
                                            deployment_tags=tag or [], auto_rollback=auto_rollback,
                                            health_check_timeout=health_check_timeout)
    with _deploy_and_training(server, api_key) as (stub, training):
        created = stub.DeployModel(request).data
        if not wait:
            return print_json(created) if as_json else _show(created)
        job = None
        if as_json:  # only the deployment on stdout once it ended
            for _ in training.stream("WatchJob", training_pb2.WatchJobRequest(job_id=created.job_id)):
                pass
        else:
            console.print(f"deploying {escape(created.model_name)}:{escape(created.version)} to {target} "
                          f"(job {created.job_id})")
            job = follow(training, created.job_id)
        final = stub.GetDeployment(deploy_pb2.GetDeploymentRequest(model_version_id=created.model_version_id,
                                                                   deployment_id=created.deployment_id)).data
    if as_json:
        print_json(final)
    else:
        _show(final)
        report_end(job)
    if _state(final.state) != "HEALTHY":
        raise typer.Exit(EXIT_FAILED)


@app.command("list")
def deployments_list(
    version: Annotated[str, typer.Option("--version", help="Only this version id ('-': all).")] = "-",
    state: Annotated[list[str] | None, typer.Option("--state", help="e.g. HEALTHY; repeatable.")] = None,
    target: Annotated[list[str] | None, typer.Option("--target", help="Repeatable.")] = None,
    page_size: Annotated[int, typer.Option("--page-size")] = 50,
    server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "", as_json: JsonOpt = False,
) -> None:
    """List deployments, newest first."""
    try:
        states = [deploy_pb2.DeploymentState.Value("DEPLOYMENT_STATE_" + s.upper()) for s in state or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--state") from None
    with _deploy(server, api_key) as stub:
        reply = stub.ListDeployments(deploy_pb2.ListDeploymentsRequest(
            model_version_id=version, states=states, targets=target or [], page_size=page_size))
    if as_json:
        return print_json(reply)
    table = Table("deployment", "model", "version", "target", "alias", "state", "where")
    for x in reply.data:
        table.add_row(x.deployment_id, x.model_name, x.version, x.target, x.alias, _state(x.state),
                      x.serving_path or x.endpoint)
    console.print(table)


@app.command("get")
def deployments_get(deployment_id: DeploymentArg, server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "",
                    as_json: JsonOpt = False) -> None:
    """Show one deployment."""
    with _deploy(server, api_key) as stub:
        x = stub.GetDeployment(deploy_pb2.GetDeploymentRequest(model_version_id="-", deployment_id=deployment_id)).data
    return print_json(x) if as_json else _show(x)


@app.command("health")
def deployments_health(deployment_id: DeploymentArg, server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "",
                       as_json: JsonOpt = False) -> None:
    """Check a deployment now (a real generation where it serves); exit 1 when unhealthy."""
    with _deploy(server, api_key) as stub:
        h = stub.CheckDeploymentHealth(deploy_pb2.CheckDeploymentHealthRequest(
            model_version_id="-", deployment_id=deployment_id)).data
    if as_json:
        print_json(h)
    else:
        word = "[green]healthy[/]" if h.healthy else "[red]unhealthy[/]"
        console.print(f"{deployment_id}: {word} in {h.latency_ms:.0f} ms: {escape(h.detail)}")
    if not h.healthy:
        raise typer.Exit(EXIT_FAILED)


@app.command("rollback")
def deployments_rollback(deployment_id: DeploymentArg, server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "",
                         as_json: JsonOpt = False) -> None:
    """Bring back the deployment this live one replaced; the alias moves back."""
    with _deploy(server, api_key) as stub:
        x = stub.RollbackDeployment(deploy_pb2.RollbackDeploymentRequest(model_version_id="-",
                                                                         deployment_id=deployment_id)).data
    return print_json(x) if as_json else _show(x)


@app.command("undeploy")
def deployments_undeploy(deployment_id: DeploymentArg, server: ServerOpt = DEFAULT_SERVER, api_key: ApiKeyOpt = "",
                         as_json: JsonOpt = False) -> None:
    """Take a live deployment down and remove the alias it held."""
    with _deploy(server, api_key) as stub:
        x = stub.UndeployDeployment(deploy_pb2.UndeployDeploymentRequest(model_version_id="-",
                                                                         deployment_id=deployment_id)).data
    return print_json(x) if as_json else _show(x)


def chat(
    model: Annotated[str, typer.Argument(help="MODEL or MODEL@ALIAS (default alias: production).")],
    message: Annotated[list[str] | None, typer.Option("--message", "-m", help="Ask this and exit; repeatable "
                                                      "(one conversation). Without it: an interactive chat.")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens")] = 256,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.0,
    gateway: GatewayOpt = DEFAULT_GATEWAY, api_key: ApiKeyOpt = "",
) -> None:
    """Chat with a local deployment through the gateway's stable path, streaming the answer."""
    name, _, alias = model.partition("@")
    url = f"{gateway.rstrip('/')}/api/serving/{name}/{alias or 'production'}/v1/chat/completions"
    history: list[dict] = []
    questions = iter(message) if message else _prompts()
    for question in questions:
        history.append({"role": "user", "content": question})
        answer = _stream_chat(url, history, max_tokens, temperature, api_key)
        history.append({"role": "assistant", "content": answer})


def _prompts() -> Iterator[str]:
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            return
        if line.strip():
            yield line


def _stream_chat(url: str, messages: list[dict], max_tokens: int, temperature: float, api_key: str) -> str:
    body = json.dumps({"messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                       "stream": True}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    pieces: list[str] = []
    try:
        with urllib.request.urlopen(request, timeout=600) as reply:
            for raw in reply:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                delta = json.loads(data)["choices"][0].get("delta", {}).get("content") or ""
                pieces.append(delta)
                sys.stdout.write(delta)
                sys.stdout.flush()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise fail(f"{url}: HTTP {exc.code}: {detail}",
                   "hint: is the model deployed locally with that alias? (`trainforge deployments list`)") from None
    except urllib.error.URLError as exc:
        raise fail(f"{url}: {exc.reason}", "hint: is `trainforge serve` running? (--gateway)") from None
    sys.stdout.write("\n")
    return "".join(pieces)
