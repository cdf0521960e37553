"""Evaluation: the text metrics on hand-made answers (exact numbers), and evaluate() end to end on a
tiny model that memorised the six QA pairs, so its greedy answers are known."""

from __future__ import annotations

import json
import math

import pytest
import sacrebleu
import torch

from tests.training.conftest import QA, build_tiny_model, qa_rows, tiny_spec
from trainforge.core.training.config import validate_config
from trainforge.core.training.data import tokenize_row
from trainforge.core.training.evaluate import (
    evaluate,
    exact_match,
    normalize_answer,
    text_metrics,
    token_f1,
)
from trainforge.core.training.recipe import train
from trainforge.core.training.reporting import NullReporter


def test_squad_normalisation_exact_match_and_token_f1():
    assert normalize_answer("  The Cat, sat!  ") == "cat sat"
    assert exact_match("The cat sat.", "cat   sat") == 1.0
    assert exact_match("a dog", "cat") == 0.0
    assert token_f1("the cat sat on the mat", "a cat sat") == pytest.approx(2 / 3)  # P 2/4, R 2/2
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0
    assert token_f1("blue blue sky", "blue sky sky") == pytest.approx(2 / 3)  # counts, not sets


def test_text_metrics_on_hand_made_answers():
    predictions = ["Paris", "blue sky", "four"]
    references = ["Paris.", "The sky is blue.", "five"]
    scores = text_metrics(predictions, references, ["accuracy", "f1_score", "bleu"])
    assert scores["accuracy"] == pytest.approx(1 / 3)
    assert scores["f1_score"] == pytest.approx((1 + 0.8 + 0) / 3)  # "blue sky" vs "sky is blue": P 1, R 2/3
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, [references]).score)
    assert text_metrics(["The sky is blue ."], ["The sky is blue."], ["bleu"])["bleu"] == pytest.approx(100.0)


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    """The tiny model (hidden 64) after 150 steps on the QA pairs: ~3 s on 2 CPU cores."""
    root = tmp_path_factory.mktemp("memorised")
    (root / "data").mkdir()
    build_tiny_model(root / "models" / "tiny", hidden=64)
    (root / "data" / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_rows()))
    spec = tiny_spec(hyperparameters={"max_steps": 150, "learning_rate": 1e-2}, training_data={"validation_split": 0})
    result = train(validate_config(spec, root / "data", root / "models"), root / "out", NullReporter())
    return result.model_dir, root


def test_evaluate_scores_generated_answers_exactly(memorised):
    model_dir, root = memorised
    references = [a for _, a in QA]
    references[3] = "Paris is in Europe."  # the model says France: F1 3/4
    references[4] = "Cows say woof."  # the model says moo: F1 2/3
    data = root / "eval.jsonl"
    data.write_text("".join(json.dumps({"prompt": q, "completion": r}) + "\n" for (q, _), r in zip(QA, references)))
    scores = evaluate(model_dir, data, ["accuracy", "f1_score", "bleu", "perplexity"], max_samples=10,
                      max_new_tokens=12, batch_size=4, with_predictions=True)
    predictions = [p["prediction"] for p in scores["predictions"]]
    assert predictions == ["The sky is blue .", "Grass is green .", "Two plus two is four .",
                           "Paris is in France .", "Cows say moo .", "The capital of France is Paris ."]
    assert scores["samples"] == 6
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["f1_score"] == pytest.approx((4 + 3 / 4 + 2 / 3) / 6)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, [references]).score)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    total = count = 0
    for (q, _), r in zip(QA, references):
        example = tokenize_row({"prompt": q, "completion": r}, tokenizer, 64)
        labels = torch.tensor([example.labels])
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([example.input_ids]), labels=labels).loss
        n = int((labels[:, 1:] != -100).sum())
        total, count = total + float(loss) * n, count + n
    assert scores["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)


def test_max_samples_and_batched_left_padding_agree_with_one_by_one(memorised):
    model_dir, root = memorised
    one = evaluate(model_dir, root / "data" / "qa.jsonl", ["accuracy"], max_samples=6, max_new_tokens=12, batch_size=1)
    many = evaluate(model_dir, root / "data" / "qa.jsonl", ["accuracy"], max_samples=6, max_new_tokens=12,
                    batch_size=6)
    assert one == many == {"samples": 6, "accuracy": 1.0}
