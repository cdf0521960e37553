"""int8 conversion of a Hugging Face causal LM: swap nn.Linear for Int8Linear, save the result as
a compressed-tensors checkpoint (safetensors + `quantization_config` in config.json), load it back.

On disk (docs/compression.md has the field-by-field account and what was not verified):
- w8a8_dynamic -> compressed-tensors format `int-quantized`: per quantized module `X`
      X.weight        (N, K) int8, symmetric per output channel
      X.weight_scale  (N, 1) fp32
  with `input_activations` {dynamic, per token} in the config group (vLLM: CompressedTensorsW8A8Int8).
- w8a16 -> compressed-tensors format `pack-quantized` (the one vLLM reads for weight-only int
  schemes, CompressedTensorsWNA16; it refuses `int-quantized` without input activations):
      X.weight_packed (N, ceil(K/4)) int32: the int8 codes plus 128 as bytes, four per int32,
                      little-endian along K (compressed-tensors' pack_to_int32 for num_bits=8)
      X.weight_scale  (N, 1) fp32
      X.weight_shape  (2,) int64 = [N, K]
Every other tensor (embeddings, norms, skipped layers such as lm_head, biases) is saved as it is
in the model, after the optional cast to `dtype`. A tied lm_head is not stored (transformers ties
it again on load).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainforge.kernels import MODES, Int8Linear

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # loading from a folder never reaches for a hub

DEFAULT_SKIP = ("lm_head", "embed_tokens")
WEIGHTS_FILE = "model.safetensors"
# compressed-tensors names for the two on-disk layouts, by mode.
FORMATS = {"w8a8_dynamic": "int-quantized", "w8a16": "pack-quantized"}
_PACK = 4  # int8 codes per int32 word


# -- in memory -------------------------------------------------------------------------------------

def _skipped(name: str, skip: Iterable[str]) -> bool:
    """A module is skipped when its full name, or any dotted component of it, is in `skip`."""
    parts = name.split(".")
    return any(s == name or s in parts for s in skip)


def quantize_model(model: nn.Module, mode: str = "w8a8_dynamic", skip: Iterable[str] = DEFAULT_SKIP,
                   dtype: torch.dtype | None = None) -> nn.Module:
    """Replaces every nn.Linear not named in `skip` with an Int8Linear (per-channel symmetric int8
    weights), in place, and returns the model. With `dtype`, the model is cast to it first: the
    tensors kept in floating point and the activations then have that dtype."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    skip = tuple(skip)
    if dtype is not None:
        _cast_saved_tensors(model, dtype)
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and not _skipped(name, skip)]
    if not targets:
        raise ValueError(f"the model has no nn.Linear outside {skip} to quantize")
    for name, linear in targets:
        _set_module(model, name, Int8Linear.from_linear(linear, mode))
    _untie_if_quantized_head(model)
    model.eval()
    return model


def quantized_modules(model: nn.Module) -> dict[str, Int8Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, Int8Linear)}


def model_mode(model: nn.Module) -> str:
    modes = {m.mode for m in quantized_modules(model).values()}
    if len(modes) != 1:
        raise ValueError(f"the model must hold Int8Linear modules of one mode, found {sorted(modes) or 'none'}")
    return modes.pop()


def _cast_saved_tensors(model: nn.Module, dtype: torch.dtype) -> None:
    """Casts floating-point parameters and persistent buffers, as building the model with
    `from_config(dtype=...)` would. Not `model.to(dtype)`: that also casts non-persistent buffers
    such as Llama's rotary `inv_freq`, which a model built from its config keeps in float32, so the
    reloaded model would compute different logits."""
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if param.is_floating_point():
                param.data = param.data.to(dtype)  # the same Parameter object: ties survive
        for name, buffer in module.named_buffers(recurse=False):
            if buffer.is_floating_point() and name not in module._non_persistent_buffers_set:
                module._buffers[name] = buffer.to(dtype)
    config = getattr(model, "config", None)
    if config is not None:
        config.dtype = dtype


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _untie_if_quantized_head(model: nn.Module) -> None:
    """An lm_head quantized while its float weight was tied to the embeddings is no longer tied."""
    get_output = getattr(model, "get_output_embeddings", None)
    head = get_output() if callable(get_output) else None
    config = getattr(model, "config", None)
    if isinstance(head, Int8Linear) and config is not None and getattr(config, "tie_word_embeddings", False):
        config.tie_word_embeddings = False


# -- pack-quantized layout -------------------------------------------------------------------------

def pack_int8(q: torch.Tensor) -> torch.Tensor:
    """(N, K) int8 -> (N, ceil(K/4)) int32: byte j of word i holds q[:, 4i + j] + 128 (K padded
    with code 0, i.e. stored byte 128). Same bits as compressed-tensors' pack_to_int32(q, 8)."""
    if q.dtype != torch.int8 or q.dim() != 2:
        raise ValueError(f"pack_int8 needs a 2-D int8 tensor, got {q.dtype} {tuple(q.shape)}")
    n, k = q.shape
    pad = -k % _PACK
    biased = (q.view(torch.uint8) ^ 0x80).contiguous()  # two's complement + 128 == flip the top bit
    if pad:
        biased = torch.nn.functional.pad(biased, (0, pad), value=0x80)
    # Little-endian words from bytes, computed arithmetically so the host's byte order cannot matter.
    b = biased.reshape(n, -1, _PACK).to(torch.int64)  # (N, K/4, 4)
    words = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16) | (b[..., 3] << 24)  # (N, K/4) in [0, 2^32)
    words = torch.where(words >= 2**31, words - 2**32, words)
    return words.to(torch.int32)


def unpack_int8(packed: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Inverse of pack_int8: (N, ceil(K/4)) int32 -> (N, K) int8."""
    n, k = shape
    if packed.dtype != torch.int32 or tuple(packed.shape) != (n, -(-k // _PACK)):
        raise ValueError(f"packed weight {packed.dtype} {tuple(packed.shape)} does not fit shape {shape}")
    words = packed.to(torch.int64) & 0xFFFFFFFF  # (N, K/4)
    shifts = torch.arange(_PACK, dtype=torch.int64) * 8
    biased = ((words.unsqueeze(-1) >> shifts) & 0xFF).reshape(n, -1)[:, :k]  # (N, K) in [0, 255]
    return (biased - 128).to(torch.int8)


# -- config ----------------------------------------------------------------------------------------

def quantization_config(mode: str, ignore: Iterable[str]) -> dict[str, Any]:
    """The `quantization_config` block of config.json, in compressed-tensors' schema."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    weights = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "group_size": None,
               "dynamic": False, "actorder": None, "block_structure": None}
    activations = None
    if mode == "w8a8_dynamic":
        activations = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "group_size": None,
                       "dynamic": True, "actorder": None, "block_structure": None}
    return {
        "quant_method": "compressed-tensors",
        "format": FORMATS[mode],
        "quantization_status": "compressed",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights,
                                      "input_activations": activations, "output_activations": None}},
        "ignore": sorted(ignore),
        "kv_cache_scheme": None,
    }


def mode_from_config(qconfig: dict[str, Any]) -> str:
    """Which Int8Linear mode a saved quantization_config describes; ValueError if none of ours."""
    groups = qconfig.get("config_groups") or {}
    if qconfig.get("quant_method") != "compressed-tensors" or len(groups) != 1:
        raise ValueError("not a trainforge int8 checkpoint: expected one compressed-tensors config group")
    group = next(iter(groups.values()))
    weights = group.get("weights") or {}
    if (weights.get("num_bits"), weights.get("type"), weights.get("strategy"), weights.get("symmetric")) != (
            8, "int", "channel", True):
        raise ValueError(f"unsupported weight scheme {weights}: expected 8-bit symmetric int per channel")
    acts = group.get("input_activations")
    mode = "w8a16" if acts is None else "w8a8_dynamic"
    if acts is not None and (acts.get("num_bits"), acts.get("strategy"), acts.get("dynamic")) != (8, "token", True):
        raise ValueError(f"unsupported activation scheme {acts}: expected dynamic 8-bit per token")
    if qconfig.get("format") != FORMATS[mode]:
        raise ValueError(f"format {qconfig.get('format')!r} does not fit {mode}: expected {FORMATS[mode]!r}")
    return mode


# -- save / load -----------------------------------------------------------------------------------

def int8_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors to write, under compressed-tensors names; a tied output embedding is left out."""
    quantized = quantized_modules(model)
    mode = model_mode(model)
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for name, module in quantized.items():
        prefix = f"{name}." if name else ""
        scale = module.weight_scale.detach().reshape(-1, 1).contiguous()  # (N, 1)
        if mode == "w8a16":
            out[prefix + "weight_packed"] = pack_int8(module.weight.detach().cpu())
            out[prefix + "weight_shape"] = torch.tensor(list(module.weight.shape), dtype=torch.int64)
        else:
            out[prefix + "weight"] = module.weight.detach().contiguous()
        out[prefix + "weight_scale"] = scale
        if module.bias is not None:
            out[prefix + "bias"] = module.bias.detach().contiguous()
    owned = {f"{n}.{suffix}" if n else suffix for n in quantized for suffix in ("weight", "weight_scale", "bias")}
    tied = _tied_keys(model)
    for key, tensor in state.items():
        if key not in owned and key not in tied:
            out[key] = tensor.detach().contiguous()
    return {k: v.cpu() for k, v in out.items()}


def _tied_keys(model: nn.Module) -> set[str]:
    """State-dict keys that share storage with an earlier key (a tied lm_head): saved once."""
    seen: dict[int, str] = {}
    tied: set[str] = set()
    for key, tensor in model.state_dict(keep_vars=True).items():
        ptr = tensor.data_ptr() if tensor.numel() else None
        if ptr is not None and ptr in seen:
            tied.add(key)
        elif ptr is not None:
            seen[ptr] = key
    return tied


def save_int8(model: nn.Module, tokenizer: Any, folder: Path) -> Path:
    """Writes model.safetensors, config.json (with quantization_config), generation_config.json
    and the tokenizer into `folder`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mode = model_mode(model)
    tensors = int8_state_dict(model)
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    ignore = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    # What save_pretrained writes (non-default values), less the folder the model was loaded from.
    config = json.loads(model.config.to_json_string(use_diff=True))
    for key in ("quantization_config", "_name_or_path"):
        config.pop(key, None)
    if hasattr(model.config, "tie_word_embeddings"):  # explicit: quantize_model may have untied the head
        config["tie_word_embeddings"] = bool(model.config.tie_word_embeddings)
    config["quantization_config"] = quantization_config(mode, ignore)
    embeddings = model.get_input_embeddings()
    if embeddings is not None:  # the dtype of what stays in floating point, for readers building the model
        config["dtype"] = str(embeddings.weight.dtype).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def load_int8(folder: Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """(model, tokenizer) from a folder written by save_int8. The model is built from its config
    with the quantization_config taken out (transformers would otherwise hand the folder to its
    compressed-tensors integration), its Linear layers named in the weights become Int8Linear,
    and every tensor is loaded strictly."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = Path(folder)
    raw = json.loads((folder / "config.json").read_text())
    qconfig = raw.get("quantization_config")
    if not qconfig:
        raise ValueError(f"{folder / 'config.json'} has no quantization_config: not an int8 checkpoint")
    mode = mode_from_config(qconfig)
    config = AutoConfig.from_pretrained(folder)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    dtype = _dtype(raw.get("dtype") or raw.get("torch_dtype"))
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open has no items()
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)

    suffix = "weight_packed" if mode == "w8a16" else "weight_scale"
    names = sorted(k[: -len(suffix) - 1] for k in tensors if k.endswith("." + suffix))
    state: dict[str, torch.Tensor] = {}
    for name in names:
        linear = model.get_submodule(name)
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"{name} holds quantized weights but is a {type(linear).__name__}, not nn.Linear")
        has_bias = f"{name}.bias" in tensors
        module = Int8Linear(linear.in_features, linear.out_features, bias=has_bias, mode=mode,
                            bias_dtype=tensors[f"{name}.bias"].dtype if has_bias else torch.float32)
        _set_module(model, name, module)
        if mode == "w8a16":
            shape = tuple(int(v) for v in tensors.pop(f"{name}.weight_shape").tolist())
            state[f"{name}.weight"] = unpack_int8(tensors.pop(f"{name}.weight_packed"), shape)
        else:
            state[f"{name}.weight"] = tensors.pop(f"{name}.weight")
        state[f"{name}.weight_scale"] = tensors.pop(f"{name}.weight_scale").reshape(-1).float()
    state.update(tensors)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = _tied_keys(model)
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(f"{folder.name}: weights do not fit the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _dtype(name: str | None) -> torch.dtype:
    value = getattr(torch, str(name or "float32").removeprefix("torch."), None)
    return value if isinstance(value, torch.dtype) else torch.float32


def folder_bytes(folder: Path) -> int:
    """Total size of the files under `folder` (what the registry will store)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def parameter_count(model: nn.Module) -> int:
    """Parameters of the network as trained: float parameters plus one per int8 weight element
    (scales are quantization metadata, not parameters); a tied weight is counted once."""
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        tensors = list(module.parameters(recurse=False))
        if isinstance(module, Int8Linear):
            tensors += [module.weight] + ([module.bias] if module.bias is not None else [])
        for t in tensors:
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel()
    return total


__all__ = ["DEFAULT_SKIP", "FORMATS", "WEIGHTS_FILE", "folder_bytes", "int8_state_dict", "load_int8",
           "mode_from_config", "model_mode", "pack_int8", "parameter_count", "quantization_config",
           "quantize_model", "quantized_modules", "save_int8", "unpack_int8"]
