"""Evaluates a causal LM on prompt/completion (or chat `messages`) rows.

- accuracy: exact match of the generated answer and the reference, after SQuAD normalisation
  (lower case, punctuation and the articles a/an/the removed, whitespace collapsed);
- f1_score: SQuAD token F1 between the two, averaged over rows;
- perplexity: exp of the mean cross-entropy per completion token (teacher-forced, prompt masked);
- bleu: corpus BLEU from sacrebleu (0-100).

Answers come from batched greedy generation with left padding (the prompts end where generation
starts). Scores other than BLEU are fractions in [0, 1].
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainforge.core.errors import InvalidArgument
from trainforge.core.training.data import IGNORE_INDEX, PaddingCollator, check_rows, load_rows, tokenize_row

METRICS = ("accuracy", "f1_score", "perplexity", "bleu")
_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}


# -- text metrics ----------------------------------------------------------------------------------

def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def corpus_bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def text_metrics(predictions: Sequence[str], references: Sequence[str], metrics: Sequence[str]) -> dict[str, float]:
    n = max(len(predictions), 1)
    out: dict[str, float] = {}
    if "accuracy" in metrics:
        out["accuracy"] = sum(exact_match(p, r) for p, r in zip(predictions, references)) / n
    if "f1_score" in metrics:
        out["f1_score"] = sum(token_f1(p, r) for p, r in zip(predictions, references)) / n
    if "bleu" in metrics:
        out["bleu"] = corpus_bleu(predictions, references)
    return out


# -- model metrics ---------------------------------------------------------------------------------

def split_prompt(row: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
    """(messages up to the answer, reference answer): the last assistant turn is the reference."""
    if row.get("messages") is not None:
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        return messages[:last], messages[last]["content"]
    return [{"role": "user", "content": row["prompt"]}], row["completion"]


def render_prompt(messages: list[dict[str, str]], tokenizer: Any) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "


def generate_answers(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int,
                     batch_size: int) -> list[str]:
    """Greedy answers, batched with left padding; special tokens are dropped from the text."""
    import torch

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers: list[str] = []
    model.eval()
    for start in range(0, len(prompts), batch_size):
        chunk = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts[start:start + batch_size]]
        longest = max(len(ids) for ids in chunk)
        input_ids = torch.full((len(chunk), longest), pad_id, dtype=torch.long)  # (B, T), left-padded
        mask = torch.zeros((len(chunk), longest), dtype=torch.long)  # (B, T)
        for row, ids in enumerate(chunk):
            input_ids[row, longest - len(ids):] = torch.tensor(ids, dtype=torch.long)
            mask[row, longest - len(ids):] = 1
        with torch.no_grad():
            out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                 max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                                 eos_token_id=tokenizer.eos_token_id)
        for row in range(len(chunk)):
            answers.append(tokenizer.decode(out[row, longest:], skip_special_tokens=True).strip())
    return answers


def completion_perplexity(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], *, max_seq_length: int = 2048,
                          batch_size: int = 8) -> float:
    """exp(mean cross-entropy per completion token), prompt tokens masked as in training."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collate = PaddingCollator(pad_id)
    examples = [tokenize_row(r, tokenizer, max_seq_length) for r in rows]
    examples = [e for e in examples if any(label != IGNORE_INDEX for label in e.labels)]
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(examples[start:start + batch_size]).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logits = logits[:, :-1].float()  # (B, T-1, V)
            labels = batch["labels"][:, 1:]  # (B, T-1)
            total += float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                                           ignore_index=IGNORE_INDEX, reduction="sum"))
            count += int((labels != IGNORE_INDEX).sum())
    return math.exp(min(total / max(count, 1), 50.0))


def evaluate_rows(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], metrics: Sequence[str], *,
                  max_samples: int | None = None, max_new_tokens: int = 64, batch_size: int = 8,
                  with_predictions: bool = False) -> dict[str, Any]:
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise InvalidArgument.one("metrics", f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    rows = list(rows)[:max_samples] if max_samples else list(rows)
    out: dict[str, Any] = {"samples": len(rows)}
    if "perplexity" in metrics:
        out["perplexity"] = completion_perplexity(model, tokenizer, rows, batch_size=batch_size)
    generation = [m for m in metrics if m != "perplexity"]
    if generation or with_predictions:
        prompts, references = zip(*[split_prompt(r) for r in rows]) if rows else ((), ())
        predictions = generate_answers(model, tokenizer, [render_prompt(p, tokenizer) for p in prompts],
                                       max_new_tokens=max_new_tokens, batch_size=batch_size)
        out.update(text_metrics(predictions, references, generation))
        if with_predictions:
            out["predictions"] = [{"prediction": p, "reference": r} for p, r in zip(predictions, references)]
    return out


def evaluate(model_dir: Path, data_path: Path, metrics: Sequence[str] = METRICS, max_samples: int | None = 200,
             max_new_tokens: int = 64, batch_size: int = 8, *, data_format: str | None = None,
             with_predictions: bool = False) -> dict[str, Any]:
    """Scores the model in `model_dir` on the rows of `data_path` (jsonl, csv or parquet)."""
    from trainforge.core.training.model_loading import load_model_and_tokenizer

    fmt = data_format or _FORMATS.get(Path(data_path).suffix.lower())
    if fmt is None:
        raise InvalidArgument.one("data", f"cannot tell the format of {Path(data_path).name!r}; "
                                          "use .jsonl, .csv or .parquet")
    rows = load_rows(Path(data_path), fmt)
    check_rows(rows)
    model, tokenizer = load_model_and_tokenizer(Path(model_dir))
    import torch

    if torch.cuda.is_available():
        model.to("cuda")
    return evaluate_rows(model, tokenizer, rows, metrics, max_samples=max_samples, max_new_tokens=max_new_tokens,
                         batch_size=batch_size, with_predictions=with_predictions)
