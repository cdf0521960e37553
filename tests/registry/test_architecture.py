"""Architecture from a model folder's config.json: the key names of the common families, missing
and malformed keys tolerated, and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys

from trainforge.core.registry.architecture import architecture_from_config, read_architecture
from trainforge.core.registry.models import Architecture


def test_llama_config_written_by_transformers(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=321, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=512).save_pretrained(tmp_path)
    assert read_architecture(tmp_path) == Architecture(model_family="llama", layers=3, hidden_size=64,
                                                       attention_heads=4, vocab_size=321, max_sequence_length=512)


def test_gpt2_style_keys():
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 12, "n_embd": 768,
              "n_head": 12, "vocab_size": 50257, "n_positions": 1024, "n_ctx": 2048}
    assert architecture_from_config(config) == Architecture("gpt2", 12, 768, 12, 50257, 1024)


def test_family_falls_back_to_architectures_and_text_config_fills_gaps():
    config = {"architectures": ["FooForCausalLM"], "vocab_size": 10,
              "text_config": {"num_hidden_layers": 2, "hidden_size": 8, "num_attention_heads": 2,
                              "max_position_embeddings": 64, "vocab_size": 99}}
    assert architecture_from_config(config) == Architecture("FooForCausalLM", 2, 8, 2, 10, 64)


def test_missing_and_malformed_keys_leave_zero_values(tmp_path):
    config = {"model_type": "", "num_hidden_layers": "three", "hidden_size": True, "num_attention_heads": -4,
              "vocab_size": 12.5, "architectures": "not-a-list"}
    assert architecture_from_config(config) == Architecture()
    assert architecture_from_config({"model_type": "x" * 300}).model_family == "x" * 128
    assert read_architecture(tmp_path) == Architecture()  # no config.json
    (tmp_path / "config.json").write_text("{not json")
    assert read_architecture(tmp_path) == Architecture()
    (tmp_path / "config.json").write_text(json.dumps([1, 2]))
    assert read_architecture(tmp_path) == Architecture()


def test_reading_an_architecture_imports_no_torch():
    code = ("import sys, trainforge.core.registry.architecture; "
            "sys.exit(1 if 'torch' in sys.modules or 'transformers' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
