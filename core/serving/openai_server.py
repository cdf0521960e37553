"""The inference server process of a local deployment: an OpenAI-compatible HTTP surface on one
model.

    python -m trainforge.core.serving.openai_server --engine llama_cpp --model model.gguf \\
        --served-model-name smollm2-ft:production --port 0 --ready-file /run/x/ready.json

Life of the process:
1. listen, then write the ready file (`{"port", "pid"}`, atomically) — before the model loads, so a
   supervisor learns the port at once and polls `/health`, which answers 503 `loading`;
2. load the model on the engine thread; `/health` answers 200 `ok` (a model that fails to load
   ends the process with EXIT_LOAD_FAILED and one line on stderr);
3. on SIGTERM (or SIGINT): stop listening, answer 503 `draining` on open connections, let the
   requests in flight — streams included — finish for up to --drain-seconds, flush usage, exit 0.
   The gateway stops routing here before the signal is sent, so a rollout drops no request.

Generation is CPU-bound and llama.cpp's Llama object is not re-entrant, so one engine thread runs
every generation; concurrent requests queue for it, and a stream's text is pushed to its client
piece by piece as the thread produces it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

from trainforge.core.errors import InvalidArgument, TrainforgeError, Unavailable
from trainforge.core.serving import openai_schema as schema
from trainforge.core.serving.engines import ENGINES, Engine, TextStream, make_engine
from trainforge.core.serving.metrics import CONTENT_TYPE, ServingMetrics, endpoint_label

EXIT_OK = 0
EXIT_BAD_ARGUMENTS = 2  # argparse's own code for a bad command line
EXIT_LOAD_FAILED = 3
EXIT_LISTEN_FAILED = 4

DEFAULT_DRAIN_SECONDS = 30.0
MAX_BODY_BYTES = 8 * 1024 * 1024  # a 4,096-token prompt is ~20 KB of text; this only stops abuse
GENERATION_ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Status recorded for a stream whose client went away before its end (nginx's convention).
CLIENT_CLOSED = 499

LOADING, READY, DRAINING, FAILED = "loading", "ok", "draining", "failed"

log = logging.getLogger("trainforge.serving")


class GenerationRun:
    """One request's generation on the engine thread; its events reach the event loop through a
    queue: ("piece", text)*, then ("done", GenerationResult) or ("error", exception)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor,
                 make_stream: Callable[[], TextStream]):
        self._loop = loop
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._cancel = threading.Event()
        self.future = loop.run_in_executor(executor, self._drive, make_stream)

    def _put(self, event: tuple[str, Any]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: the server is gone and nobody waits
            pass

    def _drive(self, make_stream: Callable[[], TextStream]) -> None:
        if self._cancel.is_set():  # the client left (or the server stopped) while this was queued
            return
        try:
            stream = make_stream()
            while not self._cancel.is_set():
                self._put(("piece", next(stream)))
            stream.close()  # raises GeneratorExit inside the engine: it stops at the next token
        except StopIteration as stop:
            self._put(("done", stop.value))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the request
            self._put(("error", exc))

    async def next(self) -> tuple[str, Any]:
        return await self._queue.get()

    def cancel(self) -> None:
        self._cancel.set()


class ServerState:
    def __init__(self, engine: Engine, served_name: str, *, usage: Any = None, also_names: tuple[str, ...] = ()):
        self.engine = engine
        self.served_name = served_name
        # Requests may name the model by any of these (a deployment's `model:alias` and `model`).
        self.accepted_names = (served_name, *also_names)
        self.created = schema.now()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self.metrics = ServingMetrics()
        self.usage = usage
        self.phase = LOADING
        self.load_error = ""
        self.exit_code = EXIT_OK
        self.runs: set[GenerationRun] = set()
        self.active = 0  # requests being answered (the in-flight gauge, readable)

    def require_ready(self) -> None:
        if self.phase == LOADING:
            raise Unavailable("the model is still loading; retry when /health answers 200",
                              metadata={"code": "model_loading"})
        if self.phase == DRAINING:
            raise Unavailable("the server is shutting down", metadata={"code": "draining"})
        if self.phase == FAILED:
            raise Unavailable(f"the model failed to load: {self.load_error}", metadata={"code": "model_load_failed"})

    def start_run(self, make_stream: Callable[[], TextStream]) -> GenerationRun:
        run = GenerationRun(asyncio.get_running_loop(), self.executor, make_stream)
        self.runs.add(run)
        run.future.add_done_callback(lambda _: self.runs.discard(run))
        return run


STATE = web.AppKey("state", ServerState)
# Per-request notes the handlers leave for the observing middleware.
_STARTED, _STATUS, _FAILED, _TOKENS = "tf_started", "tf_status", "tf_failed", "tf_tokens"


def _error_response(status: int, document: dict) -> web.Response:
    response = web.json_response(document, status=status)
    if status == 503:
        response.force_close()  # a draining server closes the connection; a loading one frees it
    return response


@web.middleware
async def observe(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Counts and times every request, and turns every error into OpenAI's error document."""
    state = request.app[STATE]
    endpoint = endpoint_label(request.path)
    request[_STARTED] = started = time.perf_counter()
    state.metrics.in_flight.inc()
    state.active += 1
    status = 500
    try:
        if state.phase == DRAINING and endpoint not in ("/health", "/metrics"):
            raise Unavailable("the server is shutting down", metadata={"code": "draining"})
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # aiohttp's own answers: unknown path, wrong method, body too large
        status = exc.status
        return _error_response(status, schema.error_document(status, f"{exc.reason}: {request.method} {request.path}",
                                                             "invalid_request_error", None, exc.reason.lower().replace(" ", "_")))
    except Exception as exc:  # noqa: BLE001 - the one place errors become HTTP answers
        status, document = schema.error_for(exc)
        if status == 500:
            log.error("%s %s failed", request.method, request.path, exc_info=exc)
        return _error_response(status, document)
    finally:
        state.metrics.in_flight.dec()
        state.active -= 1
        status = request.get(_STATUS, status)
        elapsed = time.perf_counter() - started
        state.metrics.requests.labels(endpoint, str(status)).inc()
        state.metrics.latency.labels(endpoint).observe(elapsed)
        if state.usage is not None and endpoint in GENERATION_ENDPOINTS:
            state.usage.record(elapsed * 1000, status >= 500 or request.get(_FAILED, False), request.get(_TOKENS, 0))


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.phase == READY:
        return web.json_response({"status": "ok"})
    body = {"status": state.phase}
    if state.phase == FAILED:
        body["error"] = state.load_error
    return web.json_response(body, status=503)


async def models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.require_ready()
    return web.json_response(schema.model_list(state.served_name, state.created))


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[STATE].metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidArgument.one("body", f"is not valid JSON ({exc})") from None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state.require_ready()
    req = schema.parse_chat_request(await _json_body(request), state.accepted_names)
    return await _generate(request, state, lambda: state.engine.chat(req.messages, req.params),
                           chat=True, stream=req.stream, include_usage=req.include_usage)


async def completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state.require_ready()
    req = schema.parse_completion_request(await _json_body(request), state.accepted_names)
    return await _generate(request, state, lambda: state.engine.complete(req.prompt, req.params),
                           chat=False, stream=req.stream, include_usage=req.include_usage)


def _sse(document: dict | str) -> bytes:
    data = document if isinstance(document, str) else json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    return f"data: {data}\n\n".encode()


async def _generate(request: web.Request, state: ServerState, make_stream: Callable[[], TextStream], *,
                    chat: bool, stream: bool, include_usage: bool) -> web.StreamResponse:
    endpoint = endpoint_label(request.path)
    rid, created, model = schema.new_id("chatcmpl" if chat else "cmpl"), schema.now(), state.served_name
    run = state.start_run(make_stream)
    try:
        kind, value = await run.next()
        if kind == "error":
            raise value  # before any text: a plain error answer (a prompt too long is a 400)
        state.metrics.ttft.labels(endpoint).observe(time.perf_counter() - request[_STARTED])

        def account(result: Any) -> None:
            request[_TOKENS] = result.completion_tokens
            state.metrics.tokens.labels(endpoint).inc(result.completion_tokens)
            state.metrics.prompt_tokens.labels(endpoint).inc(result.prompt_tokens)

        if not stream:
            texts = []
            while kind == "piece":
                texts.append(value)
                kind, value = await run.next()
            if kind == "error":
                raise value
            account(value)
            build = schema.chat_completion if chat else schema.text_completion
            return web.json_response(build(rid, model, created, "".join(texts), value))

        def chunk(text: str | None, finish: str | None) -> dict:
            if chat:
                delta = {} if text is None else {"content": text}
                return schema.chat_chunk(rid, model, created, delta, finish, include_usage)
            return schema.text_chunk(rid, model, created, text or "", finish, include_usage)

        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        try:
            if chat:  # OpenAI opens a chat stream with the role
                await response.write(_sse(schema.chat_chunk(rid, model, created, {"role": "assistant", "content": ""},
                                                             None, include_usage)))
            while kind == "piece":
                await response.write(_sse(chunk(value, None)))
                kind, value = await run.next()
            if kind == "error":
                status, document = schema.error_for(value)
                log.error("stream %s failed after it started", rid, exc_info=value if status == 500 else None)
                request[_FAILED] = True
                await response.write(_sse(document))
            else:
                account(value)
                await response.write(_sse(chunk(None, value.finish_reason)))
                if include_usage:
                    obj = "chat.completion.chunk" if chat else "text_completion"
                    await response.write(_sse(schema.usage_chunk(rid, model, created, obj, value)))
            await response.write(_sse("[DONE]"))
            await response.write_eof()
        except ConnectionResetError:
            request[_STATUS] = CLIENT_CLOSED
        return response
    finally:
        run.cancel()  # a no-op after the end; otherwise stops the engine at its next token


def create_app(state: ServerState) -> web.Application:
    app = web.Application(middlewares=[observe], client_max_size=MAX_BODY_BYTES)
    app[STATE] = state
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/metrics", metrics)
    return app


def write_ready_file(path: Path, port: int) -> None:
    """{"port", "pid"} at `path`, atomically: a reader sees the whole document or no file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"port": port, "pid": os.getpid()}))
    os.replace(tmp, path)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, TrainforgeError):
        return exc.message
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


async def _load(state: ServerState, stop: asyncio.Event) -> None:
    def load() -> float:
        started = time.perf_counter()
        state.engine.load()
        return time.perf_counter() - started

    try:
        seconds = await asyncio.get_running_loop().run_in_executor(state.executor, load)
    except Exception as exc:  # noqa: BLE001 - reported as one line, the process ends
        state.load_error = _one_line(exc)
        state.phase, state.exit_code = FAILED, EXIT_LOAD_FAILED
        log.error("the model failed to load: %s", state.load_error)
        stop.set()
        return
    state.metrics.load_seconds.set(seconds)
    if state.phase == LOADING:
        state.phase = READY
        state.metrics.ready.set(1)
        log.info("model %s loaded in %.1f s (%s; context %d tokens); serving",
                 state.served_name, seconds, state.engine.description, state.engine.context_length)


async def serve(args: argparse.Namespace, engine: Engine) -> int:
    usage = None
    if args.usage_dsn:
        from trainforge.core.serving.usage_reporter import UsageReporter

        usage = UsageReporter(args.usage_dsn, args.model_version_id, interval_s=args.usage_interval)
    state = ServerState(engine, args.served_model_name, usage=usage, also_names=tuple(args.also_serve_as))
    runner = web.AppRunner(create_app(state), handle_signals=False, access_log=None,
                           shutdown_timeout=max(args.drain_seconds, 0.001))  # aiohttp reads 0 as "no limit"
    await runner.setup()
    try:
        await web.TCPSite(runner, args.host, args.port).start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, exc.strerror or exc)
        await runner.cleanup()
        return EXIT_LISTEN_FAILED
    port = runner.addresses[0][1]
    if args.ready_file:
        write_ready_file(Path(args.ready_file), port)
    log.info("listening on %s:%d (pid %d); loading %s", args.host, port, os.getpid(), args.model)

    loop, stop = asyncio.get_running_loop(), asyncio.Event()

    def drain(signum: int) -> None:
        if not stop.is_set():
            log.info("%s: draining %d request(s) for up to %.0f s", signal.Signals(signum).name,
                     state.active, args.drain_seconds)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, drain, signum)
    if usage is not None:
        usage.start()
    loading = loop.create_task(_load(state, stop))
    await stop.wait()
    if state.phase != FAILED:
        state.phase = DRAINING
        state.metrics.ready.set(0)
    await runner.cleanup()  # closes the listener, then waits for handlers up to shutdown_timeout
    for run in list(state.runs):  # what the drain deadline cut off
        run.cancel()
    state.executor.shutdown(wait=False, cancel_futures=True)
    loading.cancel()
    if usage is not None:
        await usage.close()
    log.info("stopped")
    return state.exit_code


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainforge.core.serving.openai_server",
                                     description="OpenAI-compatible inference server for one model.")
    parser.add_argument("--engine", choices=ENGINES, required=True)
    parser.add_argument("--model", required=True, help="a GGUF file (llama_cpp) or an HF model folder (transformers)")
    parser.add_argument("--served-model-name", required=True, help="the id /v1/models lists and requests may name")
    parser.add_argument("--also-serve-as", action="append", default=[], metavar="NAME",
                        help="another name requests may give as `model`; repeatable")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (see --ready-file)")
    parser.add_argument("--ready-file", help="where to write {\"port\", \"pid\"} once listening")
    parser.add_argument("--n-ctx", type=int, help="context length in tokens (default: 4096 for GGUF, the "
                                                  "model's own for transformers)")
    parser.add_argument("--threads", type=int, help="CPU threads for generation (default: all)")
    parser.add_argument("--usage-dsn", help="PostgreSQL DSN of the registry, to record usage statistics")
    parser.add_argument("--model-version-id", help="the registry version usage is recorded for")
    parser.add_argument("--usage-interval", type=float, default=5.0, help=argparse.SUPPRESS)
    parser.add_argument("--drain-seconds", type=float, default=DEFAULT_DRAIN_SECONDS,
                        help="how long requests in flight may take to finish after SIGTERM")
    args = parser.parse_args(argv)
    problems = []
    if not 0 <= args.port <= 65535:
        problems.append("--port must be between 0 and 65535")
    if args.n_ctx is not None and args.n_ctx < 16:
        problems.append("--n-ctx must be at least 16")
    if args.threads is not None and args.threads < 1:
        problems.append("--threads must be at least 1")
    if args.drain_seconds < 0:
        problems.append("--drain-seconds must be >= 0")
    if args.usage_interval <= 0:
        problems.append("--usage-interval must be > 0")
    if bool(args.usage_dsn) != bool(args.model_version_id):
        problems.append("--usage-dsn and --model-version-id go together")
    if not args.served_model_name.strip():
        problems.append("--served-model-name must not be empty")
    if args.ready_file and not Path(args.ready_file).parent.is_dir():
        problems.append(f"--ready-file: folder {str(Path(args.ready_file).parent)!r} does not exist")
    if problems:
        parser.error("; ".join(problems))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        engine = make_engine(args.engine, Path(args.model), n_ctx=args.n_ctx, threads=args.threads)
    except TrainforgeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    return asyncio.run(serve(args, engine))


if __name__ == "__main__":
    sys.exit(main())
