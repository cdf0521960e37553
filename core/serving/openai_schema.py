"""The OpenAI wire format of the inference server: request bodies checked field by field (every
problem reported at once, as InvalidArgument), and the response, stream-chunk and error documents.

Unknown request fields are ignored, as OpenAI-compatible servers (vLLM, llama.cpp's server) do:
clients send `user`, `logprobs: false`, `presence_penalty: 0` and the like routinely. Options we
cannot honour are refused when they ask for something: `n` other than 1."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from trainforge.core.errors import FieldViolation, InvalidArgument, NotFound, TrainforgeError, Unavailable
from trainforge.core.serving.engines import GenerationParams, GenerationResult

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_STOP_STRINGS = 4  # as OpenAI
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[dict[str, str], ...]
    params: GenerationParams
    stream: bool
    include_usage: bool


@dataclass(frozen=True)
class CompletionRequest:
    prompt: str
    params: GenerationParams
    stream: bool
    include_usage: bool


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_model(body: dict, served_name: str | tuple[str, ...]) -> None:
    """`served_name`: the name this server lists, or every name it answers to (listed one first)."""
    names = (served_name,) if isinstance(served_name, str) else served_name
    model = body.get("model")
    if model is not None and model not in names:
        raise NotFound(f"the model {model!r} does not exist here; this server serves {names[0]!r}",
                       reason="model_not_found", metadata={"param": "model"})


def _options(body: dict, bad: list[FieldViolation]) -> tuple[GenerationParams, bool, bool]:
    """The sampling and streaming options shared by both endpoints."""
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    field = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
        bad.append(FieldViolation(field, "must be an integer >= 1"))
    temperature = body.get("temperature", 1.0)
    if temperature is None:
        temperature = 1.0
    if not _is_number(temperature) or not 0 <= temperature <= 2:
        bad.append(FieldViolation("temperature", "must be a number between 0 and 2"))
    top_p = body.get("top_p", 1.0)
    if top_p is None:
        top_p = 1.0
    if not _is_number(top_p) or not 0 < top_p <= 1:
        bad.append(FieldViolation("top_p", "must be a number greater than 0 and at most 1"))
    stop = body.get("stop")
    stops: tuple[str, ...] = ()
    if isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list):
        stops = tuple(stop)
    elif stop is not None:
        bad.append(FieldViolation("stop", "must be a string or a list of strings"))
    if len(stops) > MAX_STOP_STRINGS:
        bad.append(FieldViolation("stop", f"at most {MAX_STOP_STRINGS} stop strings"))
    for i, s in enumerate(stops):
        if not isinstance(s, str) or not s:
            bad.append(FieldViolation(f"stop[{i}]" if isinstance(stop, list) else "stop",
                                      "must be a non-empty string"))
    seed = body.get("seed")
    if seed is not None and (not _is_int(seed) or not -MAX_SEED <= seed <= MAX_SEED):
        bad.append(FieldViolation("seed", "must be a 64-bit integer"))
    n = body.get("n")
    if n is not None and n != 1:
        bad.append(FieldViolation("n", "only n = 1 is supported"))
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        bad.append(FieldViolation("stream", "must be true or false"))
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            bad.append(FieldViolation("stream_options", "must be an object"))
        elif stream is not True:
            bad.append(FieldViolation("stream_options", "is only allowed when stream is true"))
        elif not isinstance(options.get("include_usage", False), bool):
            bad.append(FieldViolation("stream_options.include_usage", "must be true or false"))
        else:
            include_usage = options.get("include_usage", False)
    if bad:
        return GenerationParams(), False, False
    # llama.cpp seeds are 32-bit; both engines take the same value so a seed means one thing.
    seed_value = None if seed is None else seed % 2**32
    params = GenerationParams(max_tokens=max_tokens, temperature=float(temperature), top_p=float(top_p),
                              stop=stops, seed=seed_value)
    return params, stream, include_usage


def _message(i: int, raw: Any, bad: list[FieldViolation]) -> dict[str, str]:
    where = f"messages[{i}]"
    if not isinstance(raw, dict):
        bad.append(FieldViolation(where, "must be an object with role and content"))
        return {}
    role, content = raw.get("role"), raw.get("content")
    if role not in ROLES:
        bad.append(FieldViolation(f"{where}.role", f"must be one of {', '.join(ROLES)}"))
    text = None
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                bad.append(FieldViolation(f"{where}.content[{j}]", "only text parts ({type: text, text}) are supported"))
        text = "".join(parts)
    else:
        bad.append(FieldViolation(f"{where}.content", "must be a string or a list of text parts"))
    # "developer" is OpenAI's newer name for the system message; chat templates know "system".
    return {"role": "system" if role == "developer" else str(role), "content": text or ""}


def parse_chat_request(body: Any, served_name: str | tuple[str, ...]) -> ChatRequest:
    if not isinstance(body, dict):
        raise InvalidArgument.one("body", "must be a JSON object")
    _check_model(body, served_name)
    bad: list[FieldViolation] = []
    raw_messages = body.get("messages")
    messages: list[dict[str, str]] = []
    if not isinstance(raw_messages, list) or not raw_messages:
        bad.append(FieldViolation("messages", "is required: a non-empty list of {role, content}"))
    else:
        messages = [_message(i, m, bad) for i, m in enumerate(raw_messages)]
    params, stream, include_usage = _options(body, bad)
    if bad:
        raise InvalidArgument(bad)
    return ChatRequest(tuple(messages), params, stream, include_usage)


def parse_completion_request(body: Any, served_name: str | tuple[str, ...]) -> CompletionRequest:
    if not isinstance(body, dict):
        raise InvalidArgument.one("body", "must be a JSON object")
    _check_model(body, served_name)
    bad: list[FieldViolation] = []
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        bad.append(FieldViolation("prompt", "is required: a non-empty string (or a list of exactly one)"))
    params, stream, include_usage = _options(body, bad)
    if bad:
        raise InvalidArgument(bad)
    return CompletionRequest(prompt, params, stream, include_usage)


# -- documents -----------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(result: GenerationResult) -> dict[str, int]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


def chat_completion(rid: str, model: str, created: int, text: str, result: GenerationResult) -> dict:
    return {"id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": result.finish_reason}],
            "usage": usage(result)}


def chat_chunk(rid: str, model: str, created: int, delta: dict, finish_reason: str | None,
               include_usage: bool) -> dict:
    chunk = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
    if include_usage:
        chunk["usage"] = None
    return chunk


def text_completion(rid: str, model: str, created: int, text: str, result: GenerationResult) -> dict:
    return {"id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": result.finish_reason}],
            "usage": usage(result)}


def text_chunk(rid: str, model: str, created: int, text: str, finish_reason: str | None,
               include_usage: bool) -> dict:
    chunk = {"id": rid, "object": "text_completion", "created": created, "model": model,
             "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}]}
    if include_usage:
        chunk["usage"] = None
    return chunk


def usage_chunk(rid: str, model: str, created: int, obj: str, result: GenerationResult) -> dict:
    """The last chunk when stream_options.include_usage is set: no choices, the usage."""
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [], "usage": usage(result)}


def model_list(served_name: str, created: int) -> dict:
    return {"object": "list",
            "data": [{"id": served_name, "object": "model", "created": created, "owned_by": "trainforge"}]}


def now() -> int:
    return int(time.time())


# -- errors --------------------------------------------------------------------------------------
def error_document(status: int, message: str, err_type: str, param: str | None = None,
                   code: str | None = None) -> dict:
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


def error_for(exc: BaseException) -> tuple[int, dict]:
    """(HTTP status, OpenAI error document) for an exception; internal errors name only their class,
    never a traceback."""
    if isinstance(exc, InvalidArgument):
        param = exc.violations[0].field if exc.violations else None
        return 400, error_document(400, exc.message, "invalid_request_error", param, "invalid_value")
    if isinstance(exc, NotFound):
        return 404, error_document(404, exc.message, "invalid_request_error", exc.metadata.get("param"),
                                   exc.reason.lower())
    if isinstance(exc, Unavailable):
        return 503, error_document(503, exc.message, "service_unavailable_error", None,
                                   exc.metadata.get("code", "unavailable"))
    if isinstance(exc, TrainforgeError) and exc.reason != "INTERNAL":
        return 400, error_document(400, exc.message, "invalid_request_error", exc.metadata.get("field"),
                                   exc.reason.lower())
    return 500, error_document(500, f"internal error ({type(exc).__name__}); see the server's log",
                               "server_error", None, "internal_error")
