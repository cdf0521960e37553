"""The transformers engine: an HF model folder through AutoModelForCausalLM, float32 on CPUs and
bfloat16 on CUDA. An int8 version (CompressModel's compressed-tensors folder) loads through
trainforge's loader, whose Int8Linear layers run our Triton kernels.

`generate` runs in a thread of its own and hands text to the caller through TextIteratorStreamer;
closing the caller's generator raises a flag that a stopping criterion reads at the next token."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainforge.core.errors import FailedPrecondition, InvalidArgument
from trainforge.core.serving.engines import (
    END_OF_TURN_TEXTS,
    GenerationParams,
    GenerationResult,
    StopScanner,
    TextStream,
    completion_budget,
)

# Seconds the streamer waits for the next piece before checking that generate is still alive; a
# token of SmolLM2-135M takes ~25 ms on 2 cores, so this only matters when generate died.
_PIECE_WAIT_S = 1.0


class TransformersEngine:
    served_format = "transformers"

    def __init__(self, path: Path, *, n_ctx: int | None = None, threads: int | None = None):
        self.path = Path(path)
        self.n_ctx = n_ctx
        self.threads = threads
        self.context_length = 0
        self.device = "cpu"
        self.int8 = False
        self.description = "transformers"
        self._model: Any = None
        self._tokenizer: Any = None
        self._stop_ids: list[int] = []

    def load(self) -> None:
        import torch

        from trainforge.core.training.model_loading import int8_checkpoint_method, load_model_and_tokenizer

        if self.threads:
            torch.set_num_threads(self.threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cpu" and int8_checkpoint_method(self.path) is not None:
            # No GPU: the Triton int8 kernels run through Triton's interpreter, which must be chosen
            # before triton is first imported (importing torch does not import it).
            os.environ.setdefault("TRITON_INTERPRET", "1")
        # int8 folders load in the dtype they were saved in (the loader ignores dtype for them).
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        model, tokenizer = load_model_and_tokenizer(self.path, dtype=dtype)
        self.int8 = int8_checkpoint_method(self.path) is not None
        self._model = model.to(self.device).eval()
        if self.int8:
            from trainforge.core.compression.convert import model_mode

            kind = f"int8 {model_mode(model)} (Triton kernels)"
        else:
            kind = str(dtype).removeprefix("torch.")
        self.description = f"transformers, {kind} on {self.device}"
        self._tokenizer = tokenizer
        trained = getattr(model.config, "max_position_embeddings", None) or 2048
        self.context_length = self.n_ctx or trained
        stop = set()
        for source in (model.generation_config.eos_token_id if model.generation_config else None,
                       tokenizer.eos_token_id):
            stop.update(source if isinstance(source, list) else [source] if source is not None else [])
        vocab = tokenizer.get_vocab()
        stop.update(vocab[t] for t in END_OF_TURN_TEXTS if t in vocab)
        self._stop_ids = sorted(stop)

    def chat(self, messages: Sequence[dict], params: GenerationParams) -> TextStream:
        if not getattr(self._tokenizer, "chat_template", None):
            raise FailedPrecondition(f"{self.path.name} has no chat template: use /v1/completions",
                                     reason="NO_CHAT_TEMPLATE")
        text = self._tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        # The template wrote every special token the model expects; adding them again would double BOS.
        ids = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        return (yield from self._stream(ids, params, "messages"))

    def complete(self, prompt: str, params: GenerationParams) -> TextStream:
        ids = self._tokenizer(prompt)["input_ids"]
        if not ids:
            raise InvalidArgument.one("prompt", "holds no tokens")
        return (yield from self._stream(ids, params, "prompt"))

    def _stream(self, ids: list[int], params: GenerationParams, field: str) -> TextStream:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        budget = completion_budget(len(ids), params, self.context_length, field)
        cancel = threading.Event()

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, timeout=_PIECE_WAIT_S,
                                        skip_special_tokens=True)
        sampling = {"do_sample": False} if params.greedy else {
            "do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
        inputs = torch.tensor([ids], device=self.device)
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                if not params.greedy:
                    torch.manual_seed(params.seed if params.seed is not None else secrets.randbits(63))
                with torch.inference_mode():
                    outcome["sequences"] = self._model.generate(
                        inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=budget, min_new_tokens=0,
                        eos_token_id=self._stop_ids or None,
                        pad_token_id=self._tokenizer.pad_token_id or (self._stop_ids or [0])[0],
                        streamer=streamer, stopping_criteria=StoppingCriteriaList([Cancelled()]), **sampling)
            except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread
                outcome["error"] = exc
                streamer.end()

        worker = threading.Thread(target=run, name="transformers-generate", daemon=True)
        worker.start()
        scanner = StopScanner(params.stop)
        try:
            while True:
                try:
                    piece = next(streamer)
                except StopIteration:
                    break
                except Exception:  # queue.Empty after _PIECE_WAIT_S: still generating?
                    if worker.is_alive():
                        continue
                    break
                text = scanner.feed(piece)
                if text:
                    yield text
                if scanner.hit:
                    break
        finally:
            cancel.set()
            worker.join()
        if "error" in outcome:
            raise outcome["error"]
        generated = outcome["sequences"][0, len(ids):].tolist()
        if not scanner.hit:
            tail = scanner.flush()
            if tail:
                yield tail
        ended = bool(generated) and generated[-1] in self._stop_ids
        completion_tokens = len(generated) - (1 if ended else 0)
        finish = "stop" if scanner.hit or ended else "length"
        return GenerationResult(len(ids), completion_tokens, finish)
