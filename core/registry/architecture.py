"""A registered version's Architecture read from a Hugging Face model folder's config.json, without
torch or transformers: the registry records what the saved model is, and the worker that registers
a job's model should not import a training stack to do it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainforge.core.registry.models import Architecture

# Each field's key in config.json, then the older names some families use (GPT-2: n_layer, n_embd,
# n_head, n_positions; T5/BART: num_layers, d_model, num_heads).
_KEYS: dict[str, tuple[str, ...]] = {
    "layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "attention_heads": ("num_attention_heads", "n_head", "num_heads"),
    "vocab_size": ("vocab_size",),
    "max_sequence_length": ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"),
}
MAX_FAMILY = 128  # architecture.model_family's limit in registry validation


def architecture_from_config(config: Mapping[str, Any]) -> Architecture:
    """Architecture from a parsed config.json. A missing or malformed key leaves its field at its
    zero value; a multimodal config's `text_config` fills what the top level lacks."""
    text = config.get("text_config")
    layers = [config, text] if isinstance(text, Mapping) else [config]
    family = _first(layers, ("model_type",), str)
    if not family:
        names = config.get("architectures")
        family = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else ""
    numbers = {field: _first(layers, keys, int) or 0 for field, keys in _KEYS.items()}
    return Architecture(model_family=family[:MAX_FAMILY], **numbers)


def read_architecture(folder: Path) -> Architecture:
    """Architecture of the model saved in `folder`; an empty one when it holds no readable
    config.json (a version is registered all the same, just without these facts)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return Architecture()
    return architecture_from_config(config) if isinstance(config, Mapping) else Architecture()


def _first(layers: list[Mapping[str, Any]], keys: tuple[str, ...], kind: type) -> Any:
    for layer in layers:
        for key in keys:
            value = layer.get(key)
            # bool is an int subclass, and `true` is never a layer count.
            if isinstance(value, kind) and not isinstance(value, bool) and (value > 0 if kind is int else value):
                return value
    return None
