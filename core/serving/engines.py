"""What the inference server asks of an engine, and what the engines share.

An engine owns one loaded model. `chat` and `complete` are generators: they yield text pieces as
the model produces them and return a `GenerationResult` (token counts, finish reason) through
StopIteration. Closing the generator early (a client went away, a stop string matched) stops the
model at its next token. The server calls an engine from one thread only (llama.cpp's Llama object
is not re-entrant), so engines hold no locks.

Both engines stop at the model's end-of-generation tokens and at ChatML's `<|im_end|>` and
`<|endoftext|>` even when a converted checkpoint forgot to mark them (the fine-tuned-GGUF-never-stops
reports: ollama#8363, LLaMA-Factory#6020), and apply `stop` strings here, on the text, so both
engines agree on where a stop string cuts."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from trainforge.core.errors import FailedPrecondition, InvalidArgument

ENGINES = ("llama_cpp", "transformers")

# Token texts that end a turn in the chat templates we ship and export (ChatML for SmolLM2 and our
# fine-tunes; Llama 3's for models users bring).
END_OF_TURN_TEXTS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>")


@dataclass(frozen=True)
class GenerationParams:
    """Sampling options of one request, already validated. `max_tokens` None: up to the context."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class GenerationResult:
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn or a stop string) or "length"


TextStream = Generator[str, None, GenerationResult]


class Engine(Protocol):
    served_format: str  # "gguf" or "transformers": what the server loaded
    context_length: int  # tokens of prompt plus completion; known after load()
    description: str  # what was loaded, for the log: "llama.cpp GGUF", "transformers, int8 w8a16 (Triton kernels) on cuda"

    def load(self) -> None: ...

    def chat(self, messages: Sequence[dict], params: GenerationParams) -> TextStream: ...

    def complete(self, prompt: str, params: GenerationParams) -> TextStream: ...


def completion_budget(prompt_tokens: int, params: GenerationParams, context_length: int, field: str) -> int:
    """How many tokens the completion may take; InvalidArgument naming `field` (the prompt) or
    `max_tokens` when the prompt leaves no room."""
    room = context_length - prompt_tokens
    if params.max_tokens is None:
        if room < 1:
            raise InvalidArgument.one(field, f"the prompt is {prompt_tokens} tokens, which fills the model's "
                                             f"context of {context_length} tokens")
        return room
    if params.max_tokens > room:
        raise InvalidArgument.one("max_tokens", f"the prompt is {prompt_tokens} tokens; with max_tokens "
                                                f"{params.max_tokens} it exceeds the model's context of "
                                                f"{context_length} tokens (at most {max(room, 0)} left)")
    return params.max_tokens


class StopScanner:
    """Cuts streamed text at the first stop string. Text that might be the start of a stop string
    is held back until the next piece settles it, so no part of a stop string is ever sent."""

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(s for s in stops if s)
        self.held = ""
        self.hit = False

    def feed(self, text: str) -> str:
        """The part of `held + text` that is safe to send now."""
        if not self.stops:
            return text
        buffer = self.held + text
        found = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        if found:
            self.hit, self.held = True, ""
            return buffer[: min(found)]
        keep = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if buffer.endswith(stop[:k]):
                    keep = k
                    break
        self.held = buffer[len(buffer) - keep:]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """What was held back, once generation ended without a stop string."""
        out, self.held = self.held, ""
        return out


def make_engine(kind: str, model: Path, *, n_ctx: int | None, threads: int | None) -> Engine:
    """An unloaded engine; the model path is checked here so a bad one fails before the server
    listens (FailedPrecondition naming --model)."""
    model = Path(model)
    if kind == "llama_cpp":
        if not model.is_file():
            raise FailedPrecondition(f"--model {str(model)!r}: the llama_cpp engine needs a GGUF file",
                                     metadata={"field": "model"})
        from trainforge.core.serving.llama_cpp_engine import LlamaCppEngine

        return LlamaCppEngine(model, n_ctx=n_ctx, threads=threads)
    if kind == "transformers":
        if not (model / "config.json").is_file():
            raise FailedPrecondition(f"--model {str(model)!r}: the transformers engine needs a model folder "
                                     "with a config.json", metadata={"field": "model"})
        from trainforge.core.serving.transformers_engine import TransformersEngine

        return TransformersEngine(model, n_ctx=n_ctx, threads=threads)
    raise FailedPrecondition(f"--engine {kind!r}: choose one of {', '.join(ENGINES)}", metadata={"field": "engine"})
