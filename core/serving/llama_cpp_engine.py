"""The llama.cpp engine: PyPI llama-cpp-python on a GGUF file, the CPU default of local deployments.

Chat prompts are rendered from the GGUF's own `tokenizer.chat_template` with llama-cpp-python's
Jinja2 chat formatter (the template export wrote, so the server and Ollama see the same prompt).
Tokens come from `Llama.generate` one at a time, so the server can stream each as it is sampled and
count them exactly; bytes are decoded incrementally, since one token may hold half a UTF-8 character."""

from __future__ import annotations

import codecs
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

from trainforge.core.errors import FailedPrecondition, InvalidArgument
from trainforge.core.serving.engines import (
    END_OF_TURN_TEXTS,
    GenerationParams,
    GenerationResult,
    StopScanner,
    TextStream,
    completion_budget,
)

# The default context when --n-ctx is not given. SmolLM2 was trained on 8192; its KV cache in f16
# is 24 KiB per token (30 layers x 3 KV heads x 64 x 2 x 2 bytes), so 4096 tokens cost 96 MiB.
DEFAULT_N_CTX = 4096


class LlamaCppEngine:
    served_format = "gguf"

    def __init__(self, path: Path, *, n_ctx: int | None = None, threads: int | None = None):
        self.path = Path(path)
        self.n_ctx = n_ctx or DEFAULT_N_CTX
        self.threads = threads or os.cpu_count() or 1
        self.context_length = 0
        self.description = "llama.cpp"
        self._llm = None
        self._formatter = None
        self._stop_ids: frozenset[int] = frozenset()

    def load(self) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        try:
            llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=self.n_ctx, n_threads=self.threads,
                                  n_threads_batch=self.threads, verbose=False)
        except ValueError as exc:  # llama-cpp-python's answer to any file llama.cpp refuses
            raise FailedPrecondition(f"llama.cpp could not load {self.path.name}: {exc}",
                                     metadata={"field": "model"}) from None
        self._llm = llm
        self.context_length = llm.n_ctx()
        self.description = f"llama.cpp, {self.threads} threads"
        stop_ids = {llm.token_eos()}
        for text in END_OF_TURN_TEXTS:
            ids = llm.tokenize(text.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                stop_ids.add(ids[0])
        self._stop_ids = frozenset(i for i in stop_ids if i >= 0)
        template = llm.metadata.get("tokenizer.chat_template")
        if template:
            def token_text(token: int) -> str:
                return llm.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""

            self._formatter = Jinja2ChatFormatter(template=template, eos_token=token_text(llm.token_eos()),
                                                  bos_token=token_text(llm.token_bos()),
                                                  add_generation_prompt=True)

    def _ends_turn(self, token: int) -> bool:
        import llama_cpp

        return token in self._stop_ids or llama_cpp.llama_vocab_is_eog(self._llm._model.vocab, token)

    def chat(self, messages: Sequence[dict], params: GenerationParams) -> TextStream:
        if self._formatter is None:
            raise FailedPrecondition(f"{self.path.name} carries no tokenizer.chat_template: use /v1/completions",
                                     reason="NO_CHAT_TEMPLATE")
        rendered = self._formatter(messages=list(messages))
        # As llama-cpp-python's own chat handler does: the template wrote any BOS it wants.
        tokens = self._llm.tokenize(rendered.prompt.encode(), add_bos=not rendered.added_special, special=True)
        return (yield from self._stream(tokens, params, "messages"))

    def complete(self, prompt: str, params: GenerationParams) -> TextStream:
        tokens = self._llm.tokenize(prompt.encode(), add_bos=True, special=True)
        if not tokens:
            raise InvalidArgument.one("prompt", "holds no tokens")
        return (yield from self._stream(tokens, params, "prompt"))

    def _stream(self, tokens: list[int], params: GenerationParams, field: str) -> TextStream:
        llm = self._llm
        budget = completion_budget(len(tokens), params, self.context_length, field)
        llm.set_seed(params.seed if params.seed is not None else secrets.randbits(32))
        # top_k 0 and min_p 0 turn llama.cpp's own defaults (40 and 0.05) off, so sampling is the
        # OpenAI/transformers kind: temperature, then top_p; temperature 0 is greedy.
        tokens_out: Iterator[int] = llm.generate(tokens, top_k=0, top_p=params.top_p, min_p=0.0,
                                                 temp=params.temperature, repeat_penalty=1.0, reset=True)
        scanner, decoder = StopScanner(params.stop), codecs.getincrementaldecoder("utf-8")("replace")
        produced, finish = 0, "length"
        try:
            for token in tokens_out:
                if self._ends_turn(token):
                    finish = "stop"
                    break
                produced += 1
                text = scanner.feed(decoder.decode(llm.detokenize([token])))
                if text:
                    yield text
                if scanner.hit:
                    finish = "stop"
                    break
                if produced >= budget:
                    break
        finally:
            tokens_out.close()
        if not scanner.hit:
            tail = scanner.feed(decoder.decode(b"", final=True))
            tail += "" if scanner.hit else scanner.flush()
            finish = "stop" if scanner.hit else finish
            if tail:
                yield tail
        return GenerationResult(len(tokens), produced, finish)
