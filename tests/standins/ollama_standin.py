"""A stand-in Ollama server: the documented REST endpoints the official `ollama` client uses to push
and run a GGUF model, answering chats with llama.cpp (PyPI llama-cpp-python) on the very blob it
received, rendered with the TEMPLATE and stopped by the `stop` PARAMETERs it received.

No Ollama server installs on the build machines, so deploy tests talk to this. Endpoints and the
shapes of their answers follow Ollama's docs/api.md and server/routes.go:

  HEAD /api/blobs/sha256:<hex>   200 present, 404 absent
  POST /api/blobs/sha256:<hex>   body = the file; 201 created, 200 already present, 400 when the
                                 bytes do not hash to the digest (`digest mismatch, ...`)
  POST /api/create               model, files {name: digest}, from, template, system, parameters,
                                 stream: NDJSON {"status": ...} lines ending in {"status":"success"};
                                 failures after streaming began are {"error": ...} lines with HTTP 200
  GET  /api/tags, POST /api/show, POST /api/copy, DELETE /api/delete, GET /api/version, GET /api/ps
  POST /api/chat, POST /api/generate   streamed or not, with done, done_reason, eval_count, ...

Start it in a thread (`with OllamaStandin() as ollama: ollama.url`) or as a process
(`python tests/standins/ollama_standin.py --port 0 --ready-file F` writes the URL to F when ready).
`corrupt_next_upload()` flips one byte of the next blob body before it is hashed, as a corrupting
network path would, so a test can see the 400 a real server gives for bytes that changed in flight."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from aiohttp import web

if __package__ in (None, ""):  # run as a script: make `tests.standins` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.standins.ollama_template import TemplateError, execute, parse, uses_messages  # noqa: E402

VERSION = "0.0.0-trainforge-standin"
DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
# Ollama's name rules (types/model/name.go): [host/][namespace/]model[:tag], parts of
# [A-Za-z0-9_.-], no "..", at most 128 characters; the tag defaults to "latest".
NAME_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
DEFAULT_TEMPLATE = "{{ .Prompt }}"
# Ollama's defaults for options a request or the model's PARAMETERs do not set (api/types.go).
DEFAULT_OPTIONS = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "repeat_penalty": 1.1,
                   "num_predict": -1, "num_ctx": 2048, "stop": []}
GGUF_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
                   12: "Q3_K_M", 14: "Q4_K_S", 15: "Q4_K_M", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def canonical_name(name: str | None) -> str | None:
    """`model:tag` with the default tag filled in, or None when Ollama would reject the name."""
    if not name or len(name) > 128 or ".." in name:
        return None
    base, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "")
    parts = base.split("/") + [tag or "latest"]
    if len(parts) > 4 or not all(NAME_PART.match(p) for p in parts):
        return None
    return f"{base}:{tag or 'latest'}"


# --- GGUF header (what `ollama show` reports; read without loading the weights) -----------------

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class NotGGUF(ValueError):
    pass


def read_gguf_header(path: Path) -> dict:
    """general.* metadata and the parameter count of a GGUF file; NotGGUF for anything else."""
    with open(path, "rb") as f:
        def read(fmt):
            size = struct.calcsize(fmt)
            data = f.read(size)
            if len(data) != size:
                raise NotGGUF("unexpected end of file")
            return struct.unpack(fmt, data)[0]

        def string():
            return f.read(read("<Q")).decode("utf-8", "replace")

        def value(kind):
            if kind == 8:
                return string()
            if kind == 9:
                item_kind, count = read("<I"), read("<Q")
                return [value(item_kind) for _ in range(count)] if count <= 64 else _skip(item_kind, count)
            if kind not in _SCALARS:
                raise NotGGUF(f"unknown value type {kind}")
            return read(_SCALARS[kind])

        def _skip(item_kind, count):
            for _ in range(count):
                value(item_kind)
            return None

        if f.read(4) != b"GGUF":
            raise NotGGUF("invalid file magic")
        version, n_tensors, n_kv = read("<I"), read("<Q"), read("<Q")
        meta = {"gguf.version": version}
        for _ in range(n_kv):
            key = string()
            item = value(read("<I"))
            if key.startswith("general.") or key.endswith((".context_length", ".block_count", ".embedding_length")):
                meta[key] = item
        parameters = 0
        for _ in range(n_tensors):
            string()
            dims = [read("<Q") for _ in range(read("<I"))]
            read("<I"), read("<Q")
            count = 1
            for d in dims:
                count *= d
            parameters += count
        meta["general.parameter_count"] = parameters
        return meta


def human_number(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}".rstrip("0").rstrip(".") + unit
    return str(n)


# --- the model store -----------------------------------------------------------------------------

@dataclass
class Model:
    name: str
    gguf_digest: str  # "sha256:<hex>" of the model layer
    template: str
    system: str
    parameters: dict
    details: dict
    model_info: dict
    size: int
    digest: str = ""  # hex sha256 of the manifest, as /api/tags lists it
    modified_at: str = field(default_factory=now_rfc3339)

    def manifest(self, layer_digests: list[tuple[str, str, int]]) -> bytes:
        layers = [{"mediaType": m, "digest": d, "size": s} for m, d, s in layer_digests]
        doc = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
               "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                          "digest": "sha256:" + hashlib.sha256(json.dumps(self.details).encode()).hexdigest(),
                          "size": len(json.dumps(self.details))},
               "layers": layers}
        return json.dumps(doc, sort_keys=True).encode()


class Store:
    def __init__(self, root: Path):
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.models: dict[str, Model] = {}  # key: canonical name, lower-cased (names are case-insensitive)

    def blob_path(self, digest: str) -> Path:
        return self.blobs / f"sha256-{DIGEST.match(digest).group(1)}"

    def put_text(self, text: str) -> tuple[str, int, bool]:
        data = text.encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        existed = path.exists()
        if not existed:
            path.write_bytes(data)
        return digest, len(data), existed

    def get(self, name: str | None) -> Model | None:
        canonical = canonical_name(name)
        return self.models.get(canonical.lower()) if canonical else None


# --- llama.cpp ----------------------------------------------------------------------------------

class Runner:
    """One loaded model at a time (the blob last asked for), like an Ollama runner with keep_alive."""

    def __init__(self):
        self.lock = asyncio.Lock()
        self.loaded: tuple[Path, int] | None = None
        self.llm = None

    def load(self, path: Path, n_ctx: int) -> float:
        """Seconds spent loading (0 when already loaded)."""
        if self.loaded == (path, n_ctx):
            return 0.0
        import llama_cpp

        started = time.monotonic()
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=min(4, os.cpu_count() or 1),
                                   verbose=False)
        self.loaded = (path, n_ctx)
        return time.monotonic() - started


def render_prompt(model: Model, messages: list[dict]) -> str:
    """The prompt Ollama would build: `.Messages` templates render the chat in one pass; legacy
    `.System/.Prompt/.Response` templates render one pass per turn, the last cut at `.Response`."""
    tree = parse(model.template)
    chat = [{"Role": m.get("role", ""), "Content": m.get("content") or ""} for m in messages]
    if model.system and not any(m["Role"] == "system" for m in chat):
        chat.insert(0, {"Role": "system", "Content": model.system})
    if uses_messages(model.template):
        system = next((m["Content"] for m in reversed(chat) if m["Role"] == "system"), "")
        return execute(tree, {"System": system, "Messages": chat, "Prompt": "", "Response": "", "Tools": None})
    out, system, prompt = [], "", ""
    for m in chat:
        if m["Role"] == "system":
            system = m["Content"]
        elif m["Role"] == "user":
            prompt = m["Content"]
        elif m["Role"] == "assistant":
            out.append(execute(tree, {"System": system, "Prompt": prompt, "Response": m["Content"]}))
            system = prompt = ""
    out.append(execute(tree, {"System": system, "Prompt": prompt, "Response": ""}, cut_at_response=True))
    return "".join(out)


def merged_options(model: Model, request_options: dict | None) -> dict:
    options = {**DEFAULT_OPTIONS, **model.parameters, **(request_options or {})}
    if isinstance(options.get("stop"), str):
        options["stop"] = [options["stop"]]
    return options


# --- HTTP ---------------------------------------------------------------------------------------

def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class StandinApp:
    def __init__(self, root: Path):
        self.store = Store(root)
        self.runner = Runner()
        self.corrupt_uploads = 0
        self.app = web.Application(client_max_size=1 << 20)
        r = self.app.router
        r.add_get("/", self.root)
        r.add_get("/api/version", self.version)
        r.add_route("HEAD", "/api/blobs/{digest}", self.head_blob)
        r.add_post("/api/blobs/{digest}", self.create_blob)
        r.add_post("/api/create", self.create)
        r.add_get("/api/tags", self.tags)
        r.add_post("/api/show", self.show)
        r.add_post("/api/copy", self.copy)
        r.add_delete("/api/delete", self.delete)
        r.add_get("/api/ps", self.ps)
        r.add_post("/api/chat", self.chat)
        r.add_post("/api/generate", self.generate)

    async def root(self, request):
        return web.Response(text="Ollama is running")

    async def version(self, request):
        return web.json_response({"version": VERSION})

    # blobs

    async def head_blob(self, request):
        digest = request.match_info["digest"]
        if not DIGEST.match(digest):
            return error(400, "invalid digest format")
        if not self.store.blob_path(digest).exists():
            return error(404, f'blob "{digest}" not found')
        return web.Response(status=200)

    async def create_blob(self, request):
        digest = request.match_info["digest"]
        if not DIGEST.match(digest):
            return error(400, "invalid digest format")
        target = self.store.blob_path(digest)
        if target.exists():
            return web.Response(status=200)
        corrupt = self.corrupt_uploads > 0
        if corrupt:
            self.corrupt_uploads -= 1
        sha = hashlib.sha256()
        fd, partial = tempfile.mkstemp(dir=self.store.blobs, prefix="partial-")
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in request.content.iter_chunked(1 << 20):
                    if corrupt:
                        chunk, corrupt = bytes([chunk[0] ^ 0xFF]) + chunk[1:], False
                    sha.update(chunk)
                    out.write(chunk)
            got = "sha256:" + sha.hexdigest()
            if got != "sha256:" + DIGEST.match(digest).group(1):
                return error(400, f'digest mismatch, expected "{digest}", got "{got}"')
            os.replace(partial, target)
            return web.Response(status=201)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)

    # models

    async def create(self, request):
        try:
            body = await request.json()
        except json.JSONDecodeError as exc:
            return error(400, str(exc))
        name = canonical_name(body.get("model") or body.get("name"))
        if name is None:
            return error(400, "invalid model name")
        files = body.get("files") or {}
        for filename, digest in files.items():
            if filename in ("", ".") or filename.startswith("/") or ".." in filename.split("/") or "\\" in filename:
                return error(400, f"file path must be relative: {filename}")
            if not isinstance(digest, str) or not DIGEST.match(digest):
                return error(400, f"invalid digest for {filename}: invalid digest format")
        if body.get("quantize"):
            return error(400, "create-time quantization is only supported for safetensors imports")
        statuses = self._create_statuses(name, body)
        if body.get("stream", True) is False:
            last = {}
            for line in statuses:
                last = line
            status = last.pop("status_code", 500) if "error" in last else 200
            return web.json_response(last, status=status)
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for line in statuses:
            line.pop("status_code", None)
            await response.write((json.dumps(line) + "\n").encode())
        await response.write_eof()
        return response

    def _create_statuses(self, name: str, body: dict):
        """The create's progress lines; a failure ends them with {"error": ...} (and the HTTP code
        Ollama would use without streaming, removed before the line is sent)."""
        files, source = body.get("files") or {}, body.get("from")
        base: Model | None = None
        if source:
            base = self.store.get(source)
            if base is None:
                yield {"error": f"model '{source}' not found", "status_code": 404}
                return
        elif not files:
            yield {"error": "neither 'from' or 'files' was specified", "status_code": 400}
            return
        else:
            if len(files) != 1:
                yield {"error": "the stand-in takes exactly one GGUF file", "status_code": 400}
                return
            (filename, digest), = files.items()
            yield {"status": "parsing GGUF"}
            path = self.store.blob_path(digest)
            if not path.exists():
                yield {"error": f"open {path}: no such file or directory", "status_code": 400}
                return
            try:
                meta = read_gguf_header(path)
            except NotGGUF as exc:
                yield {"error": str(exc), "status_code": 400}
                return
            yield {"status": f"using existing layer {digest}"}
            arch = meta.get("general.architecture", "")
            details = {"parent_model": "", "format": "gguf", "family": arch, "families": [arch],
                       "parameter_size": human_number(meta["general.parameter_count"]),
                       "quantization_level": GGUF_FILE_TYPES.get(meta.get("general.file_type"), "unknown")}
            base = Model(name=name, gguf_digest=digest, template=DEFAULT_TEMPLATE, system="", parameters={},
                         details=details, model_info=meta, size=path.stat().st_size)
        template = body.get("template") if body.get("template") is not None else base.template
        try:
            parse(template)
        except TemplateError as exc:
            yield {"error": str(exc), "status_code": 400}
            return
        parameters = {**base.parameters, **(body.get("parameters") or {})}
        model = replace(base, name=name, template=template, parameters=parameters,
                        system=body.get("system") if body.get("system") is not None else base.system,
                        modified_at=now_rfc3339())
        layers = [("application/vnd.ollama.image.model", model.gguf_digest, model.size)]
        for media, text in (("template", model.template), ("system", model.system),
                            ("params", json.dumps(model.parameters, sort_keys=True) if model.parameters else "")):
            if not text:
                continue
            digest, size, existed = self.store.put_text(text)
            yield {"status": f"{'using existing' if existed else 'creating new'} layer {digest}"}
            layers.append((f"application/vnd.ollama.image.{media}", digest, size))
        yield {"status": "writing manifest"}
        model.digest = hashlib.sha256(model.manifest(layers)).hexdigest()
        self.store.models[name.lower()] = model
        yield {"status": "success"}

    def _listing(self, model: Model) -> dict:
        return {"name": model.name, "model": model.name, "modified_at": model.modified_at, "size": model.size,
                "digest": model.digest, "details": model.details}

    async def tags(self, request):
        return web.json_response({"models": [self._listing(m) for m in self.store.models.values()]})

    async def ps(self, request):
        loaded = self.runner.loaded
        models = [self._listing(m) for m in self.store.models.values()
                  if loaded and self.store.blob_path(m.gguf_digest) == loaded[0]]
        return web.json_response({"models": models})

    async def show(self, request):
        body = await request.json()
        name = body.get("model") or body.get("name")
        model = self.store.get(name)
        if model is None:
            return error(404, f"model '{name}' not found")
        params = []
        for key, value in model.parameters.items():
            for item in value if isinstance(value, list) else [value]:
                params.append(f"{key:<30} {json.dumps(item) if isinstance(item, str) else item}")
        modelfile = ['# Modelfile generated by "ollama show"', f"FROM {self.store.blob_path(model.gguf_digest)}",
                     f'TEMPLATE """{model.template}"""']
        if model.system:
            modelfile.append(f'SYSTEM """{model.system}"""')
        modelfile += [f"PARAMETER {line.split(None, 1)[0]} {line.split(None, 1)[1]}" for line in params]
        return web.json_response({
            "modelfile": "\n".join(modelfile) + "\n", "parameters": "\n".join(params), "template": model.template,
            "system": model.system, "details": model.details, "model_info": model.model_info,
            "modified_at": model.modified_at, "capabilities": ["completion"]})

    async def copy(self, request):
        body = await request.json()
        source = self.store.get(body.get("source"))
        destination = canonical_name(body.get("destination"))
        if destination is None:
            return error(400, f"destination \"{body.get('destination')}\" is invalid")
        if source is None:
            return error(404, f"model \"{body.get('source')}\" not found")
        self.store.models[destination.lower()] = replace(source, name=destination, modified_at=now_rfc3339())
        return web.Response(status=200)

    async def delete(self, request):
        body = await request.json()
        name = body.get("model") or body.get("name")
        model = self.store.get(name)
        if model is None:
            return error(404, f"model '{name}' not found")
        del self.store.models[model.name.lower()]
        return web.Response(status=200)

    # generation

    async def chat(self, request):
        body = await request.json()
        return await self._answer(request, body, body.get("messages") or [], chat=True)

    async def generate(self, request):
        body = await request.json()
        prompt = body.get("prompt") or ""
        messages = ([{"role": "system", "content": body["system"]}] if body.get("system") else [])
        messages += [{"role": "user", "content": prompt}] if prompt else []
        return await self._answer(request, body, messages, chat=False)

    async def _answer(self, request, body: dict, messages: list[dict], *, chat: bool):
        name = body.get("model")
        model = self.store.get(name)
        if model is None:
            return error(404, f'model "{name}" not found, try pulling it first')
        if body.get("template"):
            model = replace(model, template=body["template"])
        options = merged_options(model, body.get("options"))
        started = time.monotonic()

        def piece(text: str) -> dict:
            stamp = {"model": model.name, "created_at": now_rfc3339()}
            return {**stamp, "message": {"role": "assistant", "content": text}} if chat else {**stamp, "response": text}

        async with self.runner.lock:
            load_s = await asyncio.to_thread(self.runner.load, self.store.blob_path(model.gguf_digest),
                                             int(options["num_ctx"]))
            if not messages:  # an empty chat loads the model and answers at once
                return web.json_response({**piece(""), "done": True, "done_reason": "load"})
            try:
                prompt = body["prompt"] if body.get("raw") else render_prompt(model, messages)
            except TemplateError as exc:
                return error(500, str(exc))
            llm = self.runner.llm
            prompt_tokens = len(llm.tokenize(prompt.encode(), special=True))
            num_predict = int(options["num_predict"])
            chunks = llm.create_completion(
                prompt, max_tokens=num_predict if num_predict > 0 else None, stop=list(options["stop"]),
                temperature=float(options["temperature"]), top_k=int(options["top_k"]),
                top_p=float(options["top_p"]), min_p=float(options["min_p"]),
                repeat_penalty=float(options["repeat_penalty"]), seed=options.get("seed"), stream=True)
            generating = time.monotonic()
            first_token = None
            stream = body.get("stream", True) is not False
            response = None
            if stream:
                response = web.StreamResponse(status=200, headers={"Content-Type": "application/x-ndjson"})
                await response.prepare(request)
            text, finish = [], "stop"
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                first_token = first_token or time.monotonic()
                choice = chunk["choices"][0]
                finish = choice.get("finish_reason") or finish
                if choice["text"]:
                    text.append(choice["text"])
                    if stream:
                        await response.write((json.dumps({**piece(choice["text"]), "done": False}) + "\n").encode())
            # llama.cpp evaluates every generated token but the last one sampled, which is an end
            # token (not counted) or, when num_predict ran out, the last counted one.
            eval_count = llm.n_tokens - prompt_tokens + (1 if finish == "length" else 0)
            ended = time.monotonic()
            first_token = first_token or ended
            final = {**piece("" if stream else "".join(text)), "done": True, "done_reason": finish,
                     "total_duration": int((ended - started) * 1e9), "load_duration": int(load_s * 1e9),
                     "prompt_eval_count": prompt_tokens, "prompt_eval_duration": int((first_token - generating) * 1e9),
                     "eval_count": eval_count, "eval_duration": int((ended - first_token) * 1e9)}
            if not stream:
                return web.json_response(final)
            await response.write((json.dumps(final) + "\n").encode())
            await response.write_eof()
            return response


class OllamaStandin:
    """The stand-in on 127.0.0.1 in a background thread: `with OllamaStandin() as s: s.url`."""

    def __init__(self, root: Path | None = None, port: int = 0, host: str = "127.0.0.1"):
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="ollama-standin-"))
        self.host, self.port = host, port
        self.state = StandinApp(self.root)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def store(self) -> Store:
        return self.state.store

    def corrupt_next_upload(self) -> None:
        self.state.corrupt_uploads += 1

    def start(self) -> OllamaStandin:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._start_site())
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="ollama-standin", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self

    async def _start_site(self):
        self._runner = web.AppRunner(self.state.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> OllamaStandin:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None, help="blob store (a temporary folder by default)")
    parser.add_argument("--ready-file", type=Path, default=None, help="written with the URL once listening")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so `finally` removes the temporary blob store
    standin = OllamaStandin(args.data_dir, args.port, args.host).start()
    if args.ready_file:
        partial = args.ready_file.with_suffix(".partial")
        partial.write_text(standin.url)
        os.replace(partial, args.ready_file)  # readers never see half a URL
    print(f"ollama stand-in listening on {standin.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()


if __name__ == "__main__":
    main()
