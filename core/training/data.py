"""Training data: a jsonl, csv or parquet file read with `datasets`, formatted with the tokenizer's
chat template, tokenised, split deterministically into train and validation, and padded into
batches. Loss is computed on completion (assistant) tokens only: every prompt token and every pad
position carries the label -100, which cross-entropy ignores.

Rows are either `{"prompt": ..., "completion": ...}` or `{"messages": [{"role", "content"}, ...]}`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainforge.core.errors import FieldViolation, InvalidArgument

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index
MAX_ROW_VIOLATIONS = 20  # a file with thousands of bad rows reports the first 20
_FIELD = "training_data.path"


@dataclass(frozen=True)
class Example:
    """One tokenised example; `labels[i] == -100` where no loss is taken."""

    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class PreparedData:
    train: list[Example]
    validation: list[Example]
    validation_rows: list[dict[str, Any]]  # the raw rows held out, for generation metrics
    sha256: str
    rows: int
    dropped: int  # rows left with no completion token after truncation


def dataset_sha256(path: Path) -> str:
    """sha256 of the file's bytes: the dataset's identity in a model's lineage."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_rows(path: Path, fmt: str, cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """The file's rows through `datasets` (its arrow cache goes to `cache_dir` when given)."""
    from datasets import load_dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    builder = {"jsonl": "json", "csv": "csv", "parquet": "parquet"}[fmt]
    try:
        ds = load_dataset(builder, data_files=str(path), split="train",
                          cache_dir=str(cache_dir) if cache_dir else None)
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds for a malformed file
        raise InvalidArgument.one(_FIELD, f"cannot be read as {fmt}: {type(exc).__name__}: {exc}"[:1000]) from None
    return ds.to_list()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def check_rows(rows: Sequence[dict[str, Any]]) -> None:
    """Every row has a prompt and a completion (strings), or a list of messages with string roles
    and contents and at least one assistant turn. Raises InvalidArgument naming row and field."""
    problems: list[FieldViolation] = []
    if not rows:
        problems.append(FieldViolation(_FIELD, "holds no rows"))
    for number, row in enumerate(rows, start=1):
        if len(problems) >= MAX_ROW_VIOLATIONS:
            break
        messages = row.get("messages")
        if messages is not None:
            if not isinstance(messages, list) or not messages:
                problems.append(FieldViolation(_FIELD, f"row {number}: 'messages' must be a non-empty list"))
                continue
            for i, msg in enumerate(messages):
                if not isinstance(msg, dict) or _text(msg.get("role")) is None or _text(msg.get("content")) is None:
                    problems.append(FieldViolation(
                        _FIELD, f"row {number}: messages[{i}] needs string fields 'role' and 'content'"))
                    break
            else:
                if not any(m["role"] == "assistant" for m in messages):
                    problems.append(FieldViolation(_FIELD, f"row {number}: 'messages' has no assistant turn to learn"))
            continue
        missing = [k for k in ("prompt", "completion") if _text(row.get(k)) is None]
        if missing:
            what = " and ".join(repr(k) for k in missing)
            problems.append(FieldViolation(
                _FIELD, f"row {number}: missing field {what} (each row needs 'prompt' and 'completion', or 'messages')"))
    if problems:
        raise InvalidArgument(problems)


def _messages(row: dict[str, Any]) -> list[dict[str, str]]:
    if row.get("messages") is not None:
        return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    return [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]


def _segments(messages: list[dict[str, str]], tokenizer: Any) -> list[tuple[str, bool]]:
    """The conversation as (text, trainable) pieces whose concatenation is the full rendering.

    With a chat template each assistant turn is the difference between the rendering up to and
    including it and the rendering of what came before with the generation prompt; without one,
    turns are `role: content` lines and assistant text ends with the eos token."""
    if getattr(tokenizer, "chat_template", None):
        pieces: list[tuple[str, bool]] = []
        done = ""
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prefix = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
            through = tokenizer.apply_chat_template(messages[:i + 1], tokenize=False)
            if not prefix.startswith(done) or not through.startswith(prefix):
                # A template that rewrites earlier turns: learn the whole conversation instead.
                full = tokenizer.apply_chat_template(messages, tokenize=False)
                return [(full, True)]
            pieces += [(prefix[len(done):], False), (through[len(prefix):], True)]
            done = through
        return pieces
    pieces = []
    eos = tokenizer.eos_token or ""
    for message in messages:
        if message["role"] == "assistant":
            pieces += [("assistant: ", False), (message["content"] + eos, True), ("\n", False)]
        else:
            pieces.append((f"{message['role']}: {message['content']}\n", False))
    return pieces


def tokenize_row(row: dict[str, Any], tokenizer: Any, max_seq_length: int) -> Example:
    """Token ids and labels for one row: labels copy the ids on trainable pieces, -100 elsewhere;
    truncated to `max_seq_length` tokens."""
    input_ids: list[int] = []
    labels: list[int] = []
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and not getattr(tokenizer, "chat_template", None) and getattr(tokenizer, "add_bos_token", False):
        input_ids.append(bos)
        labels.append(IGNORE_INDEX)
    for text, trainable in _segments(_messages(row), tokenizer):
        if not text:
            continue
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids if trainable else [IGNORE_INDEX] * len(ids)
    return Example(input_ids[:max_seq_length], labels[:max_seq_length])


def split_indices(n: int, validation_split: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic (train, validation) row indices: a seeded permutation, the first
    round(n * split) rows (at least one when split > 0 and n > 1) held out."""
    import numpy as np

    if validation_split <= 0 or n < 2:
        return list(range(n)), []
    order = np.random.default_rng(seed).permutation(n).tolist()
    held = min(n - 1, max(1, round(n * validation_split)))
    return sorted(order[held:]), sorted(order[:held])


def prepare_data(path: Path, fmt: str, tokenizer: Any, *, max_seq_length: int, validation_split: float,
                 seed: int, cache_dir: Path | None = None) -> PreparedData:
    rows = load_rows(path, fmt, cache_dir)
    check_rows(rows)
    train_idx, val_idx = split_indices(len(rows), validation_split, seed)

    def build(indices: list[int]) -> tuple[list[Example], int]:
        out, dropped = [], 0
        for i in indices:
            example = tokenize_row(rows[i], tokenizer, max_seq_length)
            if all(label == IGNORE_INDEX for label in example.labels):
                dropped += 1  # its completion fell past max_seq_length: nothing to learn
                continue
            out.append(example)
        return out, dropped

    train, dropped_train = build(train_idx)
    validation, dropped_val = build(val_idx)
    if not train:
        raise InvalidArgument.one(_FIELD, f"no training row keeps a completion token within max_seq_length="
                                          f"{max_seq_length}; raise hyperparameters.max_seq_length")
    return PreparedData(train=train, validation=validation, validation_rows=[rows[i] for i in val_idx],
                        sha256=dataset_sha256(path), rows=len(rows), dropped=dropped_train + dropped_val)


class PaddingCollator:
    """Pads a list of examples to the longest in the batch (right side): input_ids with the pad
    id, attention_mask 0 and labels -100 on pad positions. Returns tensors (B, T)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: Sequence[Example]) -> dict[str, Any]:
        import torch

        longest = max(len(e.input_ids) for e in examples)
        ids = torch.full((len(examples), longest), self.pad_token_id, dtype=torch.long)  # (B, T)
        labels = torch.full((len(examples), longest), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(examples), longest), dtype=torch.long)  # (B, T)
        for row, e in enumerate(examples):
            n = len(e.input_ids)
            ids[row, :n] = torch.tensor(e.input_ids, dtype=torch.long)
            labels[row, :n] = torch.tensor(e.labels, dtype=torch.long)
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Rows as JSON lines (tests and the quick start make their data with it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
