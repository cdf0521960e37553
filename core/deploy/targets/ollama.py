"""The `ollama` deploy target: pushes a version's GGUF to an Ollama server with the official `ollama`
client and creates `{model}:{version}` with an explicit TEMPLATE and stop PARAMETERs, so the model
stops at the end of its turn (a GGUF without them runs on in Ollama: ollama#8363, #6823).

ship():  sha256 of the GGUF -> HEAD /api/blobs/<digest> (skip the upload when the server has it) ->
         POST /api/blobs/<digest> -> POST /api/create {files, template, parameters.stop, system},
         reading every streamed status line; an {"error": ...} line (which arrives with HTTP 200)
         fails the ship with its text -> /api/show read back: FROM blob digest, template and stops.
health(): one real chat of at most 16 tokens at temperature 0.
aliases:  /api/copy `{model}:{version}` -> `{model}:{alias}`; rollback copies the previous version."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import ollama

from trainforge.core.deploy.chat_format import chat_format_for_folder
from trainforge.core.deploy.targets.base import HealthResult, Progress, ShipRequest, ShipResult
from trainforge.core.errors import (
    DataLoss,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    TrainforgeError,
    Unavailable,
)

HEALTH_PROMPT = "What is the capital of France?"
HEALTH_OPTIONS = {"num_predict": 16, "temperature": 0}
_HASH_CHUNK = 1 << 20

# --- names ---------------------------------------------------------------------------------------

def _name_part(value: str, field: str) -> str:
    """One part of an Ollama name: [a-z0-9_.-], starting with a letter or digit, no "..",
    at most 60 characters (a whole name may have 128)."""
    part = re.sub(r"[^a-z0-9_.-]+", "-", value.lower())
    part = re.sub(r"\.{2,}", ".", part).strip("-._")[:60].rstrip("-._")
    if not part:
        raise InvalidArgument.one(field, f"{value!r} has no character Ollama allows in a model name")
    return part


def ollama_name(model_name: str, tag: str) -> str:
    """`model:tag` under Ollama's name rules (types/model/name.go), lower-cased."""
    return f"{_name_part(model_name, 'model_name')}:{_name_part(tag, 'tag')}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


# --- the target ----------------------------------------------------------------------------------

class OllamaTarget:
    name = "ollama"

    def __init__(self, host: str, timeout_s: float = 600):
        self.host = (host or "").strip().rstrip("/")
        self.timeout_s = timeout_s

    def validate(self) -> list[FieldViolation]:
        problems = []
        if not self.host:
            problems.append(FieldViolation("ollama_host", "is required (the Ollama server's URL, e.g. "
                                                          "http://localhost:11434)"))
        else:
            try:
                parts = urlsplit(self.host)
                _ = parts.port  # raises ValueError for a port out of range or not a number
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise ValueError
            except ValueError:
                problems.append(FieldViolation("ollama_host", f"{self.host!r} is not an http(s) URL with a host"))
        if not self.timeout_s or self.timeout_s <= 0:
            problems.append(FieldViolation("ollama_timeout_s", "must be a positive number of seconds"))
        return problems

    # ship

    def ship(self, request: ShipRequest, progress: Progress) -> ShipResult:
        if problems := self.validate():
            raise InvalidArgument(problems)
        gguf = request.gguf_path
        if gguf is None or not Path(gguf).is_file():
            raise FailedPrecondition(f"the ollama target ships a GGUF file and version {request.version} has none"
                                     f"{f' at {gguf}' if gguf else ''}: export it first",
                                     metadata={"model_version_id": request.model_version_id})
        # The model's own chat format, written out explicitly: a Modelfile without TEMPLATE and stops
        # is why fine-tuned GGUFs never stop in Ollama (ollama#8363, LLaMA-Factory#6020).
        chat = chat_format_for_folder(request.model_dir)
        template, stops, system = chat.template, list(chat.stop), chat.default_system
        model = ollama_name(request.model_name, request.version)
        client = self._client()

        progress(f"hashing {Path(gguf).name}", 0.0)
        digest = sha256_file(gguf)
        with self._errors(f"uploading {Path(gguf).name}"):
            if self._has_blob(digest):
                progress(f"{self.host} already holds blob {digest}", 0.7)
            else:
                progress(f"uploading {Path(gguf).stat().st_size / 1e6:.0f} MB to {self.host}", 0.1)
                sent = client.create_blob(gguf)
                if sent != digest:
                    raise DataLoss(f"{gguf} changed while it was being shipped ({digest} then {sent})",
                                   metadata={"path": str(gguf)})
                progress(f"uploaded blob {digest}", 0.7)

        with self._errors(f"creating {model}"):
            last = None
            for line in client.create(model=model, files={Path(gguf).name: digest}, template=template,
                                      parameters={"stop": stops}, system=system, stream=True):
                last = line.status
                progress(f"ollama: {last}", 0.8)
            if last != "success":
                raise FailedPrecondition(f"Ollama at {self.host} ended the create of {model} without success "
                                         f"(last status {last!r})", metadata={"host": self.host})

        with self._errors(f"reading back {model}"):
            self._verify(client, model, digest, template, stops)
            manifest = self._manifest_digests(client).get(model)
        progress(f"{model} created on {self.host}", 1.0)
        return ShipResult(endpoint=f"ollama://{urlsplit(self.host).netloc}/{model}",
                          details={"host": self.host, "model": model, "digest": digest, "manifest_digest": manifest})

    def _verify(self, client: ollama.Client, model: str, digest: str, template: str, stops: list[str]) -> None:
        """What the server now holds under `model` is our blob with our template and stops."""
        shown = client.show(model)
        blobs = re.findall(r"^FROM .*sha256[-:]([0-9a-f]{64})\s*$", shown.modelfile or "", re.M)
        if blobs != [digest.split(":", 1)[1]]:
            raise DataLoss(f"Ollama at {self.host} holds {model} on blob {blobs or 'none'}, not {digest}",
                           metadata={"host": self.host, "model": model})
        if (shown.template or "") != template:
            raise DataLoss(f"Ollama at {self.host} stored a different TEMPLATE for {model}",
                           metadata={"host": self.host, "model": model})
        stored = re.findall(r'^stop\s+"(.*)"\s*$', shown.parameters or "", re.M)
        if [json.loads(f'"{s}"') for s in stored] != stops:
            raise DataLoss(f"Ollama at {self.host} stored stop parameters {stored} for {model}, not {stops}",
                           metadata={"host": self.host, "model": model})

    # health

    def health(self, result: ShipResult, timeout_s: float) -> HealthResult:
        started = time.monotonic()
        model = result.details["model"]
        try:
            with self._errors(f"asking {model} for a health answer", timeout_s):
                answer = self._client(timeout_s).chat(model=model, options=HEALTH_OPTIONS,
                                                      messages=[{"role": "user", "content": HEALTH_PROMPT}])
        except TrainforgeError as exc:
            return HealthResult(False, exc.message, (time.monotonic() - started) * 1000)
        latency_ms = (time.monotonic() - started) * 1000
        content = (answer.message.content or "").strip()
        detail = f"{content!r} ({answer.eval_count} tokens, done_reason {answer.done_reason})"
        if latency_ms > timeout_s * 1000:
            return HealthResult(False, f"answered after {latency_ms:.0f} ms, over the {timeout_s:g} s budget: "
                                       f"{detail}", latency_ms)
        if not content:
            return HealthResult(False, f"{model} on {self.host} answered nothing: {detail}", latency_ms)
        return HealthResult(True, detail, latency_ms)

    # aliases

    def point_alias(self, request: ShipRequest, result: ShipResult) -> None:
        self._copy(result.details["model"], ollama_name(request.model_name, request.alias))

    def restore_alias(self, model_name: str, alias: str, previous: ShipResult) -> None:
        self._copy(previous.details["model"], ollama_name(model_name, alias))

    def _copy(self, source: str, destination: str) -> None:
        """/api/copy replaces `destination`'s manifest in one write; read back that it now has the
        source's manifest digest."""
        client = self._client()
        with self._errors(f"copying {source} to {destination}"):
            client.copy(source, destination)
            digests = self._manifest_digests(client)
        if not digests.get(source) or digests.get(destination) != digests[source]:
            raise DataLoss(f"after copying {source} to {destination} on {self.host} the two differ",
                           metadata={"host": self.host, "model": destination})

    def remove(self, model_name: str, alias: str, result: ShipResult) -> None:
        client = self._client()
        version, alias_name = result.details["model"], ollama_name(model_name, alias)
        with self._errors(f"removing {version}"):
            digests = self._manifest_digests(client)
            doomed = [version]
            if digests.get(version) and digests.get(alias_name) == digests[version]:
                doomed.insert(0, alias_name)  # the alias goes first: never an alias to a deleted version
            for name in doomed:
                try:
                    client.delete(name)
                except ollama.ResponseError as exc:
                    if exc.status_code != 404:  # already gone is what remove wants
                        raise

    # plumbing

    def _client(self, timeout_s: float | None = None) -> ollama.Client:
        return ollama.Client(host=self.host, timeout=timeout_s or self.timeout_s)

    def _has_blob(self, digest: str) -> bool:
        """HEAD /api/blobs/<digest>; the official client has no call for it (it always uploads)."""
        with httpx.Client(base_url=self.host, timeout=self.timeout_s) as http:
            answer = http.head(f"/api/blobs/{digest}")
        if answer.status_code not in (200, 404):
            raise ollama.ResponseError(answer.text or answer.reason_phrase, answer.status_code)
        return answer.status_code == 200

    def _manifest_digests(self, client: ollama.Client) -> dict[str, str]:
        return {(m.model or "").lower(): m.digest for m in client.list().models}

    @contextlib.contextmanager
    def _errors(self, doing: str, timeout_s: float | None = None):
        """The client's and httpx's errors as trainforge errors that name the host."""
        meta = {"host": self.host}
        timeout_s = timeout_s or self.timeout_s
        try:
            yield
        except ollama.ResponseError as exc:
            text = exc.error
            if exc.status_code == -1:  # an {"error": ...} line inside a 200 stream
                raise FailedPrecondition(f"Ollama at {self.host} failed {doing}: {text}", metadata=meta) from None
            if exc.status_code == 400 and "digest mismatch" in text:
                raise DataLoss(f"the bytes that reached Ollama at {self.host} differ from the file sent "
                               f"({doing}): {text}", metadata=meta) from None
            if exc.status_code == 404:
                raise NotFound(f"Ollama at {self.host}, {doing}: {text}", metadata=meta) from None
            if exc.status_code in (502, 503, 504):
                raise Unavailable(f"Ollama at {self.host} is unavailable ({exc.status_code}) {doing}: {text}",
                                  metadata=meta) from None
            raise FailedPrecondition(f"Ollama at {self.host} answered {exc.status_code} {doing}: {text}",
                                     metadata=meta) from None
        except (ConnectionError, httpx.ConnectError):  # the client turns httpx.ConnectError into ConnectionError
            raise Unavailable(f"Ollama at {self.host} cannot be reached (connection refused) while {doing}",
                              metadata=meta) from None
        except httpx.TimeoutException as exc:
            raise Unavailable(f"Ollama at {self.host} did not answer within {timeout_s:g} s while {doing} "
                              f"({type(exc).__name__})", metadata=meta) from None
        except httpx.TransportError as exc:
            raise Unavailable(f"Ollama at {self.host} broke the connection while {doing}: {exc}",
                              metadata=meta) from None
