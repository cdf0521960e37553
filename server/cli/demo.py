"""`trainforge demo`: starts the service on free ports in a temporary data directory, runs a short
scripted session against its REST gateway, prints each call with what came back, and stops
everything. The registry part: register, search, compare, alias, history, health. The model's
path: fine-tune the packaged SmolLM2-135M for a few steps on the shipped facts, compress the result
to int8, deploy that locally (llama.cpp on its Q8_0 GGUF) and ask it a question through the
gateway's stable endpoint. `--registry-only` stops after the registry part."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from trainforge import configs
from trainforge.core.access.keys import KeyStore
from trainforge.core.db.pool import open_pool
from trainforge.core.errors import TrainforgeError
from trainforge.core.settings import Settings, load_settings
from trainforge.core.training.model_loading import default_cache_dir
from trainforge.server.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, console, service_error, stop_on_signals
from trainforge.server.cli.tables import (
    comparison_table,
    endpoints_table,
    health_table,
    history_table,
    model_table,
    version_table,
    versions_table,
)
from trainforge.server.observability import configure_logging
from trainforge.server.service import Endpoints, Service
from trainforge.v1 import registry_pb2

DEMO_MODEL = "custom_conversational_model"
_EXAMPLES = Path(configs.__file__).parent / "examples"
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
# The model's path: configs/examples/smollm2_facts.yaml in the REST body's shape, fewer steps (each
# takes ~6 s on 2 cores at batch 4 x 128 tokens).
DEMO_FT_MODEL = "smollm2-facts"
DEMO_TRAIN_STEPS = 3
DEMO_TRAIN = {
    "name": DEMO_FT_MODEL, "model": "smollm2-135m",
    "trainingData": {"source": "file", "path": "facts.jsonl", "format": "jsonl", "validation_split": 0.25},
    "hyperparameters": {"learning_rate": 1e-4, "batch_size": 4, "epochs": 1, "max_steps": DEMO_TRAIN_STEPS,
                        "max_seq_length": 128, "warmup_steps": 0, "save_steps": 1000, "eval_steps": 1000},
    "optimization": {"optimizer": "adamw", "scheduler": "constant"},
}
DEMO_CHAT = {"messages": [{"role": "user", "content": "What is the secret word?"}], "max_tokens": 24,
             "temperature": 0}


def _job_summary(job: dict) -> str:
    lines = []
    metrics = job.get("metrics") or {}
    if "train_loss" in metrics:
        lines.append(f"train loss {float(metrics['train_loss']):.3f}")
    if job.get("result_model_version_id"):
        lines.append(f"registered version {job['result_model_version_id']}")
    for key in ("compression_result", "deployment_result"):
        if job.get(key):
            lines.append(f"{key}: {json.dumps(job[key], separators=(',', ':'))[:300]}")
    if job.get("error"):
        lines.append(f"error: {job['error'].get('message', '')[:500]}")
    return "\n".join(lines)


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

    def __init__(self, base_url: str, token: str, cancel: threading.Event, model_path: bool = True):
        self.base_url, self.token, self.cancel, self.model_path = base_url, token, cancel, model_path
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
        if self.model_path and not self.failed:
            self._model_path(api)
        return not self.failed

    # -- the model's path: fine-tune, compress, deploy, chat -------------------------------------
    def _model_path(self, api: str) -> None:
        job = self.step(f"Fine-tune the packaged SmolLM2-135M for {DEMO_TRAIN_STEPS} steps on the shipped facts",
                        "POST", f"{api}/jobs", DEMO_TRAIN, 200,
                        lambda b: Text(f"job {b['data']['job_id']}: {b['data']['status']}"))
        if not isinstance(job, dict) or "data" not in job:
            return
        self.step("Start it (the seed's POST /jobs/{id}/start)", "POST", f"{api}/jobs/{job['data']['job_id']}/start",
                  {}, 200, lambda b: Text(f"job {b['data']['job_id']}: {b['data']['status']}"))
        trained = self._wait_job(job, "training")
        if trained is None:
            return
        version = trained["result_model_version_id"]
        registered = _http("GET", f"{self.base_url}{api}/models/{DEMO_FT_MODEL}", token=self.token).body["data"]
        job = self.step("Compress the fine-tuned version to int8 (W8A8, our Triton kernels)", "POST",
                        f"{api}/models/{DEMO_FT_MODEL}/compress",
                        {"version": registered["latest_version"], "compression_type": "quantization",
                         "precision": "int8", "force": True}, 200,
                        lambda b: Text(f"job {b['data']['job_id']}: {b['data']['status']}"))
        compressed = self._wait_job(job, "compression")
        if compressed is None:
            return
        version = compressed["result_model_version_id"]
        created = self.step("Deploy the int8 version locally (llama.cpp on its Q8_0 GGUF)", "POST",
                            f"{api}/deploy/{version}", {"target": "local", "health_check_timeout": 60000}, 200,
                            lambda b: Text(f"deployment {b['data']['deployment_id']}: {b['data']['state']}"))
        if self._wait_job(created, "deployment") is None:
            return
        self.step("Ask it through the gateway's stable endpoint", "POST",
                  f"/api/serving/{DEMO_FT_MODEL}/production/v1/chat/completions", DEMO_CHAT, 200,
                  lambda b: Text(f"{b['model']}: {b['choices'][0]['message']['content']!r} "
                                 f"({b['usage']['completion_tokens']} tokens, {b['choices'][0]['finish_reason']})"),
                  check=lambda b: None if b["usage"]["completion_tokens"] > 0 else "no token generated")

    def _wait_job(self, created: Any, what: str, timeout: float = 600) -> dict | None:
        """Follows a queued job until it ends; prints one panel with its outcome."""
        if not isinstance(created, dict) or "data" not in created:
            return None
        job_id, started, job = created["data"]["job_id"], time.monotonic(), {}
        with console.status(f"{what} job {job_id}") as status:
            while time.monotonic() - started < timeout:
                if self.cancel.is_set():
                    raise _DemoCancelled
                job = _http("GET", f"{self.base_url}/api/training/jobs/{job_id}", token=self.token).body.get("data", {})
                progress = job.get("progress") or {}
                status.update(f"{what} job {job_id}: {job.get('status', '?').removeprefix('JOB_STATE_')}"
                              + (f", step {progress.get('current_step')}/{progress.get('total_steps')}"
                                 if progress.get("total_steps") else ""))
                if job.get("status") in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
                    break
                time.sleep(1)
        self.steps += 1
        ok = job.get("status") == "JOB_STATE_SUCCEEDED"
        summary = _job_summary(job)
        console.print(Panel(Text(f"{job.get('status', 'still running')} after {time.monotonic() - started:.0f} s"
                                 + (f"\n{summary}" if summary else "")),
                            title=f"{self.steps}. The {what} job", title_align="left",
                            border_style="blue" if ok else "red"))
        if not ok:
            self.failed.append(f"{self.steps}. the {what} job: {job.get('status')}: "
                               f"{(job.get('error') or {}).get('message', '')}")
            return None
        return job

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


def _prepare_model_path(settings: Settings) -> None:
    """The shipped facts under the data root, and the machine's model cache as the data directory's:
    the packaged SmolLM2 is converted from its GGUF once per machine (~25 s), not once per demo."""
    settings.ensure_dirs()
    shutil.copy(_EXAMPLES / "facts.jsonl", settings.data_dir_root / "facts.jsonl")
    cache = settings.data_dir / "model-cache"
    if not cache.exists():
        shared = default_cache_dir()
        shared.mkdir(parents=True, exist_ok=True)
        cache.symlink_to(shared, target_is_directory=True)


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


async def _demo_session(settings: Settings, reset: bool, model_path: bool) -> int:
    """Runs the service and the REST demo against it; returns the exit status."""
    stop = asyncio.Event()
    stop_on_signals(stop)
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
    demo = _RestDemo(endpoints.http_url, token, cancel, model_path=model_path)
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


def demo(data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Keep the demo's data here (default: a temporary directory, removed at the end).")] = None,
        registry_only: Annotated[bool, typer.Option(
            "--registry-only", help="Only the registry calls: no fine-tuning, compression or deployment.")] = False,
) -> None:
    """Start the service on free ports, run a short REST session against it (registry, then
    fine-tune, compress, deploy and chat with SmolLM2), and stop."""
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
    # One worker for the model's path (training, compression and deployment jobs).
    settings = load_settings(env={}, data_dir=str(data_dir.absolute()), grpc_port=0, http_port=_free_port(),
                             envoy_admin_port=0, metrics_port=0, workers=0 if registry_only else 1)
    if not registry_only:
        _prepare_model_path(settings)
    configure_logging("WARNING")
    # Each RPC's outcome is on screen already, the refused register included; its WARNING line
    # from the RPC interceptor would only repeat it on stderr.
    logging.getLogger("trainforge.rpc").setLevel(logging.ERROR)
    console.print(f"data directory: {settings.data_dir}" + (" (removed at the end)" if own_dir else ""))
    try:
        status = asyncio.run(_demo_session(settings, reset=not own_dir, model_path=not registry_only))
    except TrainforgeError as exc:
        raise service_error(exc) from None
    finally:
        if own_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    console.print(f"stopped everything after {time.monotonic() - started:.1f} s")
    if status:
        raise typer.Exit(status)

