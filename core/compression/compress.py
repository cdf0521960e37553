"""compress(): a transformers folder -> an int8 folder, with the numbers that decide whether to keep it.

Reads top to bottom: load the source -> pick the evaluation and calibration data -> score the
source -> smooth (w8a8_dynamic) -> quantize -> save -> reload the saved folder -> score it -> gate.
The int8 scores come from the reloaded folder, so they describe the artifact that gets registered,
not an in-memory model.

Evaluation data, in order of preference:
- `eval_data_path` with prompt/completion (or chat `messages`) rows (.jsonl/.json/.csv/.parquet):
  perplexity over completion tokens (prompt masked, as in training) and accuracy (exact match of
  greedy answers, core.training.evaluate); with `validation_split` > 0 only the rows training held
  out (the same seeded split as core.training.data.split_indices);
- `eval_data_path` as a .txt file, or rows with a `text` column: perplexity over the text;
- nothing: perplexity over HELDOUT_TEXT (core.compression.heldout).

Calibration data for activation smoothing (core.compression.smoothing, w8a8_dynamic only) is never
the evaluation data: the training rows (those the seeded split did not hold out) when the rows have
a held-out part, otherwise CALIBRATION_TEXT (core.compression.calibration_text).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainforge.core.compression.calibration_text import CALIBRATION_TEXT
from trainforge.core.compression.convert import (
    DEFAULT_SKIP,
    FORMATS,
    folder_bytes,
    load_int8,
    parameter_count,
    quantize_model,
    save_int8,
)
from trainforge.core.compression.heldout import HELDOUT_TEXT
from trainforge.core.compression.smoothing import DEFAULT_ALPHA, calibration_batches, smooth_model
from trainforge.core.errors import InvalidArgument

DEFAULT_MAX_PERPLEXITY_INCREASE = 0.02
DTYPES = ("bfloat16", "float16", "float32")
_ROW_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
SMOOTHED_MODES = ("w8a8_dynamic",)  # w8a16 keeps activations in floating point: nothing to smooth
MAX_CALIBRATION_ROWS = 256


@dataclass(frozen=True)
class CompressionResult:
    """What compress() measured. `metrics` holds perplexity (int8), perplexity_source,
    perplexity_increase ((int8 - source) / source) and, for prompt/completion data, accuracy and
    accuracy_source."""

    output_dir: str
    mode: str
    format: str
    dtype: str
    size_bytes: int
    size_mb: float
    source_size_bytes: int
    parameter_count: int
    metrics: dict[str, float]
    gate_passed: bool
    max_perplexity_increase: float
    eval_data: str  # "heldout_text", or the path of the data file
    eval_samples: int  # rows scored, or tokens for text
    seconds: float
    skip: list[str] = field(default_factory=list)
    # SmoothingReport.record() plus calibration_data (its label), or None when not smoothed
    smoothing: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompressionResult:
        return cls(**d)


@dataclass(frozen=True)
class EvalData:
    """Either prompt/completion rows or plain text, and where they came from."""

    label: str
    rows: list[dict[str, Any]] | None = None
    text: str | None = None


def relative_increase(perplexity: float, perplexity_source: float) -> float:
    return (perplexity - perplexity_source) / perplexity_source


def compress(source_dir: Path, output_dir: Path, mode: str = "w8a8_dynamic", eval_data_path: Path | None = None,
             max_perplexity_increase: float = DEFAULT_MAX_PERPLEXITY_INCREASE, *, dtype: str = "bfloat16",
             skip: tuple[str, ...] = DEFAULT_SKIP, data_format: str | None = None, validation_split: float = 0.0,
             seed: int = 42, max_samples: int = 64, max_new_tokens: int = 32, batch_size: int = 8,
             window: int = 512, smoothing: bool = True, smoothing_alpha: float = DEFAULT_ALPHA) -> CompressionResult:
    """Quantizes the model in `source_dir` to int8 (`mode`), writes it to `output_dir` and scores
    both. `dtype` is what the tensors kept in floating point (embeddings, norms, lm_head) and the
    activations of the int8 model are stored and run in; the source is scored in float32.
    With `smoothing` (and a mode in SMOOTHED_MODES) SmoothQuant scales with `smoothing_alpha` are
    folded into the float32 weights first, from the calibration data."""
    import torch

    from trainforge.core.training.model_loading import load_model_and_tokenizer

    if mode not in FORMATS:
        raise InvalidArgument.one("mode", f"must be one of {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise InvalidArgument.one("dtype", f"must be one of {', '.join(DTYPES)}")
    started = time.monotonic()
    source_dir, output_dir = Path(source_dir), Path(output_dir)

    model, tokenizer = load_model_and_tokenizer(source_dir, dtype=torch.float32)
    data, calibration = load_data(eval_data_path, data_format=data_format, validation_split=validation_split,
                                  seed=seed, max_samples=max_samples)
    scoring = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "window": window}
    source_scores, samples = score(model, tokenizer, data, **scoring)

    smoothed = None
    if smoothing and mode in SMOOTHED_MODES:
        batches = calibration_batches(tokenizer, text=calibration.text, rows=calibration.rows, window=window)
        report = smooth_model(model, batches, smoothing_alpha)
        smoothed = {**report.record(), "calibration_data": calibration.label}
    quantize_model(model, mode, skip, dtype=getattr(torch, dtype))
    save_int8(model, tokenizer, output_dir)
    params = parameter_count(model)
    del model
    int8_model, int8_tokenizer = load_int8(output_dir)
    int8_scores, _ = score(int8_model, int8_tokenizer, data, **scoring)

    metrics = {"perplexity": int8_scores["perplexity"], "perplexity_source": source_scores["perplexity"],
               "perplexity_increase": relative_increase(int8_scores["perplexity"], source_scores["perplexity"])}
    if "accuracy" in int8_scores:
        metrics["accuracy"] = int8_scores["accuracy"]
        metrics["accuracy_source"] = source_scores["accuracy"]
    size = folder_bytes(output_dir)
    return CompressionResult(
        output_dir=str(output_dir), mode=mode, format=FORMATS[mode], dtype=dtype, size_bytes=size,
        size_mb=round(size / 2**20, 3), source_size_bytes=folder_bytes(source_dir), parameter_count=params,
        metrics=metrics, gate_passed=metrics["perplexity_increase"] <= max_perplexity_increase,
        max_perplexity_increase=max_perplexity_increase, eval_data=data.label, eval_samples=samples,
        seconds=time.monotonic() - started, skip=list(skip), smoothing=smoothed)


def load_eval_data(path: Path | None, *, data_format: str | None = None, validation_split: float = 0.0,
                   seed: int = 42, max_samples: int = 64) -> EvalData:
    """The rows or text to score on (see the module docstring)."""
    return load_data(path, data_format=data_format, validation_split=validation_split, seed=seed,
                     max_samples=max_samples)[0]


def load_data(path: Path | None, *, data_format: str | None = None, validation_split: float = 0.0,
              seed: int = 42, max_samples: int = 64) -> tuple[EvalData, EvalData]:
    """(the rows or text to score on, the rows or text to calibrate smoothing on): the training
    rows when the split held some rows out, else CALIBRATION_TEXT; never what is scored."""
    from trainforge.core.training.data import check_rows, load_rows, split_indices

    calibration_text = EvalData(label="calibration_text", text=CALIBRATION_TEXT)
    if path is None:
        return EvalData(label="heldout_text", text=HELDOUT_TEXT), calibration_text
    path = Path(path)
    if path.suffix.lower() == ".txt" or data_format == "text":
        return EvalData(label=str(path), text=path.read_text(errors="replace")), calibration_text
    fmt = data_format or _ROW_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidArgument.one("eval_data", f"cannot tell the format of {path.name!r}; use .jsonl, .csv, "
                                               ".parquet or .txt")
    rows = load_rows(path, fmt)
    if rows and all(isinstance(r.get("text"), str) for r in rows) and not any("prompt" in r or "messages" in r
                                                                              for r in rows):
        return EvalData(label=str(path), text="\n\n".join(r["text"] for r in rows)), calibration_text
    check_rows(rows)
    train, held_out = split_indices(len(rows), validation_split, seed)
    chosen = [rows[i] for i in held_out] if held_out else rows
    evaluation = EvalData(label=str(path), rows=chosen[:max_samples] if max_samples else chosen)
    if not held_out:  # every row is scored: none is left to calibrate on
        return evaluation, calibration_text
    return evaluation, EvalData(label=f"{path} (training rows)", rows=[rows[i] for i in train[:MAX_CALIBRATION_ROWS]])


def score(model: Any, tokenizer: Any, data: EvalData, *, max_new_tokens: int, batch_size: int,
          window: int) -> tuple[dict[str, float], int]:
    """({"perplexity": ..., "accuracy"?: ...}, samples scored)."""
    from trainforge.core.training.evaluate import evaluate_rows

    if data.rows is not None:
        out = evaluate_rows(model, tokenizer, data.rows, ["perplexity", "accuracy"], max_new_tokens=max_new_tokens,
                            batch_size=batch_size)
        return {"perplexity": float(out["perplexity"]), "accuracy": float(out["accuracy"])}, int(out["samples"])
    perplexity, tokens = text_perplexity(model, tokenizer, data.text or "", window=window)
    return {"perplexity": perplexity}, tokens


def text_perplexity(model: Any, tokenizer: Any, text: str, *, window: int = 512) -> tuple[float, int]:
    """exp(mean next-token cross-entropy) over `text`, cut into windows of at most `window` tokens
    (and the model's context length) scored independently. Returns (perplexity, tokens predicted)."""
    import torch
    import torch.nn.functional as F

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    limit = getattr(model.config, "max_position_embeddings", None) or window
    window = max(2, min(window, limit))
    device = next(model.parameters()).device
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(ids), window):
            chunk = ids[start:start + window]
            if len(chunk) < 2:
                continue
            input_ids = torch.tensor([chunk], dtype=torch.long, device=device)  # (1, T)
            logits = model(input_ids=input_ids).logits[0, :-1].float()  # (T-1, V)
            total += float(F.cross_entropy(logits, input_ids[0, 1:], reduction="sum"))
            count += len(chunk) - 1
    if count == 0:
        raise InvalidArgument.one("eval_data", "the evaluation text is shorter than two tokens")
    return math.exp(min(total / count, 50.0)), count


__all__ = ["DEFAULT_MAX_PERPLEXITY_INCREASE", "DTYPES", "SMOOTHED_MODES", "CompressionResult", "EvalData", "compress",
           "load_data", "load_eval_data", "relative_increase", "score", "text_perplexity"]
