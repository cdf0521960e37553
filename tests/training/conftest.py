"""Training test setup: a tiny random Llama with a word-level tokenizer and a ChatML chat
template, built once per session from a config (no download, ~0.2 s), and a small repetitive
prompt/completion dataset under a data root."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

QA = [
    ("What color is the sky?", "The sky is blue."),
    ("What color is grass?", "Grass is green."),
    ("What is two plus two?", "Two plus two is four."),
    ("Where is Paris?", "Paris is in France."),
    ("What do cows say?", "Cows say moo."),
    ("What is the capital of France?", "The capital of France is Paris."),
]
EXTRA_WORDS = "system user assistant a an the of is in what . ? , ! hello world yes no red".split()


def qa_rows(repeat: int = 4) -> list[dict[str, str]]:
    return [{"prompt": q, "completion": a} for _ in range(repeat) for q, a in QA]


def build_tiny_model(folder: Path, *, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A random LlamaForCausalLM (hidden 32, 2 layers, tied embeddings like SmolLM2) and its tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = set(EXTRA_WORDS)
    for q, a in QA:
        words.update(w for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(q + " " + a))
    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(words))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>"])
    tokenizer.chat_template = CHATML
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=vocab["<pad>"],
                         eos_token_id=vocab["<|im_end|>"], bos_token_id=None)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = vocab["<pad>"]
    model.generation_config.eos_token_id = vocab["<|im_end|>"]
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    return build_tiny_model(root / "tiny-llama")


@pytest.fixture
def roots(tmp_path, tiny_model_dir):
    """(data_root, models_root) with qa.jsonl and a copy of the tiny model under them."""
    data_root, models_root = tmp_path / "data", tmp_path / "models"
    data_root.mkdir()
    models_root.mkdir()
    shutil.copytree(tiny_model_dir, models_root / "tiny")  # a link would lead out of the root: refused
    (data_root / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_rows()))
    return data_root, models_root


def tiny_spec(**overrides) -> dict:
    """A job spec for the tiny model: batch 4, lr 1e-2, no eval/save unless asked."""
    spec = {
        "name": "tiny-job", "model": "tiny",
        "training_data": {"path": "qa.jsonl", "format": "jsonl", "validation_split": 0.25},
        "hyperparameters": {"learning_rate": 1e-2, "batch_size": 4, "epochs": 1, "max_seq_length": 64,
                            "seed": 7, "save_steps": 1000, "warmup_steps": 0},
        "optimization": {"optimizer": "adamw", "scheduler": "constant"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec
