"""GGUF export of a registry version (a transformers folder, floating point or our int8) for
llama.cpp and Ollama, written with the `gguf` library.

What llama.cpp needs beyond the weights, and where each piece comes from here:
- architecture hyperparameters (`llama.*`, `gpt2.*`) from config.json;
- weights in GGML's layout: Llama's q/k rows permuted from Hugging Face's rotate-half RoPE to
  GGML's interleaved pairs (k with the KV head count: grouped-query attention), GPT-2's Conv1D
  weights transposed to (out, in);
- the tokenizer: byte-level BPE tokens, token types, merges, special token ids, add_bos/add_eos as
  the transformers tokenizer actually behaves, and `tokenizer.ggml.pre`, the name of the
  pre-tokenizer regex llama.cpp applies. A name llama.cpp does not know fails its load ("unknown
  pre-tokenizer type", llama.cpp#9927), and a wrong known name tokenizes some text differently
  from training, silently. So the name is read off the tokenizer.json pre-tokenizer structure
  (_PRE_TOKENIZERS) and anything else is refused;
- `tokenizer.chat_template` (the Jinja template; Ollama needs the Go template and stop tokens
  besides: core/deploy/chat_format.py).

Types: "f16", "bf16", "f32" or "q8_0" for the 2-D weights (1-D tensors, norms and biases, stay
f32 as llama.cpp's own converter keeps them, and so do GPT-2's position embeddings); "auto" is q8_0 for an int8 version
(our int8 weights dequantised, then quantised by gguf.quants, bit-exact with ggml's reference
quantize_row_q8_0) and f16 otherwise. A row length that is not a multiple of 32 cannot be Q8_0:
such a tensor is written f16, as convert_hf_to_gguf.py does."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainforge.core.deploy.chat_format import END_OF_TEXT_TOKENS, derive_chat_format
from trainforge.core.errors import FailedPrecondition, InvalidArgument

OUTTYPES = ("auto", "f16", "bf16", "f32", "q8_0")

# tokenizer.json pre-tokenizer structures -> the llama.cpp pre-tokenizer with the same regexes
# (llama-vocab.cpp). "smollm" is digits split one by one, then GPT-2's regex: StarCoder's
# tokenizer, which SmolLM and SmolLM2 reuse.
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
_PRE_TOKENIZERS: dict[str, list[dict[str, Any]]] = {
    "gpt-2": [_BYTE_LEVEL],
    "smollm": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL],
}
_PRE_KEYS = ("type", "add_prefix_space", "use_regex", "individual_digits")


@dataclass(frozen=True)
class GgufExport:
    """One written GGUF file and the facts a deploy target needs from it."""

    path: Path
    sha256: str
    outtype: str                # the resolved type: f16, bf16, f32 or q8_0
    architecture: str           # general.architecture: "llama" or "gpt2"
    tensor_count: int
    chat_template: str | None   # tokenizer.chat_template (Jinja), None when the tokenizer has none
    stop_tokens: list[str]
    bos_token_id: int | None
    eos_token_id: int | None
    tokenizer_pre: str          # tokenizer.ggml.pre
    size_bytes: int
    seconds: float


def export_gguf(model_dir: Path, out_path: Path, *, outtype: str = "auto", name: str | None = None) -> GgufExport:
    """Writes the version in `model_dir` as GGUF to `out_path` (through a temporary file in the
    same folder, renamed into place: a reader never sees half a file)."""
    import gguf

    started = time.monotonic()
    model_dir, out_path = Path(model_dir), Path(out_path)
    if outtype not in OUTTYPES:
        raise InvalidArgument.one("outtype", f"must be one of {', '.join(OUTTYPES)}, got {outtype!r}")
    arch = _architecture(_read_config(model_dir), model_dir)
    config = _full_config(model_dir)
    arch.check(config)
    int8 = _int8_method(model_dir)
    resolved = ("q8_0" if int8 else "f16") if outtype == "auto" else outtype
    vocab = read_vocab(model_dir, int(config["vocab_size"]))

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex[:8]}.tmp")
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch.gguf_arch])
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name or model_dir.name)
        arch.hparams(writer, config)
        writer.add_vocab_size(int(config["vocab_size"]))
        writer.add_file_type(_file_types()[resolved])
        vocab.add_to(writer)
        if resolved == "q8_0":
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        count = _add_tensors(writer, arch, config, model_dir, resolved)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        digest = _sha256(tmp)
        os.replace(tmp, out_path)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)  # gone after the rename; a failed export's partial file otherwise
    return GgufExport(path=out_path, sha256=digest, outtype=resolved, architecture=gguf.MODEL_ARCH_NAMES[arch.gguf_arch],
                      tensor_count=count, chat_template=vocab.chat_template, stop_tokens=vocab.stop_tokens(),
                      bos_token_id=vocab.bos_id, eos_token_id=vocab.eos_id, tokenizer_pre=vocab.pre,
                      size_bytes=out_path.stat().st_size, seconds=time.monotonic() - started)


# -- config ----------------------------------------------------------------------------------------

def _read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise FailedPrecondition(f"model folder {str(model_dir)!r} has no config.json: not a transformers folder",
                                 metadata={"model_dir": str(model_dir)}) from None
    except ValueError as exc:
        raise FailedPrecondition(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise FailedPrecondition(f"{path} does not hold a JSON object")
    return config


def _full_config(model_dir: Path) -> dict[str, Any]:
    """config.json with the architecture's defaults filled in: save_pretrained leaves out values
    equal to the defaults, and those differ by class (tie_word_embeddings is False for Llama,
    True for GPT-2)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_dir).to_dict()
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(f"{model_dir / 'config.json'} does not load as a transformers config: {exc}") \
            from None
    if not isinstance(config.get("vocab_size"), int):
        raise FailedPrecondition(f"{model_dir / 'config.json'} has no integer vocab_size")
    return config


def _int8_method(model_dir: Path) -> bool:
    """True for an int8 version written by CompressModel; other quantized folders are refused."""
    from trainforge.core.training.model_loading import int8_checkpoint_method

    method = int8_checkpoint_method(model_dir)
    if method is None:
        return False
    if method != "compressed-tensors":
        raise FailedPrecondition(f"model folder {model_dir.name!r} holds a {method!r} quantization_config; GGUF "
                                 "export reads floating-point and trainforge int8 (compressed-tensors) folders only",
                                 reason="UNSUPPORTED_QUANTIZATION")
    return True


# -- architectures ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Architecture:
    gguf_arch: Any                              # gguf.MODEL_ARCH
    check: Callable[[dict], None]               # refuses configs llama.cpp would run differently
    hparams: Callable[[Any, dict], None]        # writes <arch>.* keys
    transform: Callable[[str, Any, dict], Any]  # (HF name, float32 tensor, config) -> GGML layout
    skip_suffixes: tuple[str, ...]              # buffers that are not weights
    duplicate_tied_output: bool                 # write output.weight = token_embd when tied


def _unsupported(config: dict, field: str, value: Any, why: str) -> FailedPrecondition:
    arch = (config.get("architectures") or ["?"])[0]
    return FailedPrecondition(f"{arch} with {field}={value!r} cannot be exported to GGUF: {why}",
                              reason="GGUF_UNSUPPORTED_CONFIG", metadata={"field": field})


def _rope_theta(config: dict) -> tuple[float, str]:
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    theta = params.get("rope_theta") or config.get("rope_theta") or 10000.0
    kind = params.get("rope_type") or params.get("type") or "default"
    return float(theta), str(kind)


def _llama_check(config: dict) -> None:
    _, kind = _rope_theta(config)
    if kind != "default":
        raise _unsupported(config, "rope_type", kind, "only the default RoPE is exported")
    if config.get("hidden_act", "silu") != "silu":
        raise _unsupported(config, "hidden_act", config.get("hidden_act"), "llama.cpp's llama graph uses SiLU")


def _head_dim(config: dict) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def _llama_hparams(writer: Any, config: dict) -> None:
    heads = int(config["num_attention_heads"])
    head_dim = _head_dim(config)
    theta, _ = _rope_theta(config)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != int(config["hidden_size"]) // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


def permute_rope(weight: Any, heads: int) -> Any:
    """Hugging Face Llama rotates the two halves of each head (rotate_half); GGML's llama RoPE
    rotates adjacent pairs. Reorders the rows of a q or k projection (weight (heads * d, in) or
    bias (heads * d,)) so that row pairs (2i, 2i + 1) of a head are HF's rows (i, i + d/2)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _llama_transform(name: str, tensor: Any, config: dict) -> Any:
    heads = int(config["num_attention_heads"])
    if ".self_attn.q_proj." in name:
        return permute_rope(tensor, heads)
    if ".self_attn.k_proj." in name:
        return permute_rope(tensor, int(config.get("num_key_value_heads") or heads))
    return tensor


_GPT2_GELU = ("gelu_new", "gelu_pytorch_tanh")  # ggml_gelu is the tanh approximation


def _gpt2_check(config: dict) -> None:
    act = config.get("activation_function", "gelu_new")
    if act not in _GPT2_GELU:
        raise _unsupported(config, "activation_function", act, f"llama.cpp's gpt2 graph computes {_GPT2_GELU[0]}")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if config.get(flag):
            raise _unsupported(config, flag, True, "llama.cpp's gpt2 graph has no such option")
    if config.get("scale_attn_weights") is False:
        raise _unsupported(config, "scale_attn_weights", False, "llama.cpp scales attention by 1/sqrt(head_dim)")


def _gpt2_hparams(writer: Any, config: dict) -> None:
    embd = int(config["n_embd"])
    writer.add_context_length(int(config.get("n_positions") or config.get("n_ctx") or 1024))
    writer.add_embedding_length(embd)
    writer.add_block_count(int(config["n_layer"]))
    writer.add_feed_forward_length(int(config.get("n_inner") or 4 * embd))
    writer.add_head_count(int(config["n_head"]))
    writer.add_layer_norm_eps(float(config.get("layer_norm_epsilon", 1e-5)))


_CONV1D = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")


def _gpt2_transform(name: str, tensor: Any, config: dict) -> Any:
    if name.endswith(_CONV1D):  # transformers' Conv1D stores (in, out); GGML wants Linear's (out, in)
        return tensor.transpose(0, 1).contiguous()
    return tensor


def _architectures() -> dict[str, _Architecture]:
    import gguf

    return {
        "LlamaForCausalLM": _Architecture(gguf.MODEL_ARCH.LLAMA, _llama_check, _llama_hparams, _llama_transform,
                                          (".rotary_emb.inv_freq",), duplicate_tied_output=False),
        "GPT2LMHeadModel": _Architecture(gguf.MODEL_ARCH.GPT2, _gpt2_check, _gpt2_hparams, _gpt2_transform,
                                         (".attn.bias", ".attn.masked_bias"), duplicate_tied_output=True),
    }


def supported_architectures() -> tuple[str, ...]:
    return tuple(_architectures())


def _architecture(config: dict, model_dir: Path) -> _Architecture:
    names = config.get("architectures") or []
    known = _architectures()
    for name in names:
        if name in known:
            return known[name]
    shown = ", ".join(map(str, names)) or f"none (model_type {config.get('model_type')!r})"
    raise FailedPrecondition(f"model folder {model_dir.name!r} has architecture {shown}; GGUF export supports "
                             f"{', '.join(known)}", reason="GGUF_UNSUPPORTED_ARCHITECTURE",
                             metadata={"architecture": str(names[0]) if names else ""})


# -- tensors ---------------------------------------------------------------------------------------

def _file_types() -> dict[str, Any]:
    import gguf

    t = gguf.LlamaFileType
    return {"f32": t.ALL_F32, "f16": t.MOSTLY_F16, "bf16": t.MOSTLY_BF16, "q8_0": t.MOSTLY_Q8_0}


_INT8_SUFFIXES = ("weight_scale", "weight_packed", "weight_shape")


def read_weights(model_dir: Path) -> Iterator[tuple[str, Any]]:
    """(name, float32 tensor) for every tensor of the folder's *.safetensors, with our int8 weights
    dequantised (codes * per-channel scale) under their Linear's `.weight` name."""
    import torch
    from safetensors import safe_open

    from trainforge.core.compression.convert import unpack_int8

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FailedPrecondition(f"model folder {model_dir.name!r} holds no *.safetensors weights",
                                 metadata={"model_dir": str(model_dir)})
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            keys = list(handle.keys())
            quantized = {k.rsplit(".", 1)[0] for k in keys if k.endswith(".weight_scale")}
            for key in keys:
                prefix, _, leaf = key.rpartition(".")
                if prefix in quantized and leaf in (*_INT8_SUFFIXES, "weight"):
                    if leaf != "weight_scale":
                        continue  # the module is emitted once, at its scale
                    if f"{prefix}.weight_packed" in keys:
                        shape = tuple(int(v) for v in handle.get_tensor(f"{prefix}.weight_shape").tolist())
                        codes = unpack_int8(handle.get_tensor(f"{prefix}.weight_packed"), shape)
                    else:
                        codes = handle.get_tensor(f"{prefix}.weight")
                    scale = handle.get_tensor(key).to(torch.float32).reshape(-1, 1)  # (N, 1)
                    yield f"{prefix}.weight", codes.to(torch.float32) * scale  # (N, K)
                    continue
                yield key, handle.get_tensor(key).to(torch.float32)


def _tensor_type(gguf_name: str, tensor: Any, outtype: str) -> Any:
    import gguf

    q = gguf.GGMLQuantizationType
    if tensor.dim() < 2 or gguf_name.startswith("position_embd"):
        return q.F32
    if outtype == "q8_0":
        return q.Q8_0 if tensor.shape[-1] % 32 == 0 else q.F16
    return {"f32": q.F32, "f16": q.F16, "bf16": q.BF16}[outtype]


def encode_tensor(tensor: Any, qtype: Any) -> tuple[Any, Any]:
    """(numpy data, raw_dtype for GGUFWriter.add_tensor) of a float32 torch tensor in `qtype`."""
    import gguf
    import numpy as np

    data = tensor.detach().to("cpu").contiguous().numpy().astype(np.float32, copy=False)
    q = gguf.GGMLQuantizationType
    if qtype == q.F32:
        return data, None
    if qtype == q.F16:
        return data.astype(np.float16), None
    return gguf.quants.quantize(data, qtype), qtype


def _add_tensors(writer: Any, arch: _Architecture, config: dict, model_dir: Path, outtype: str) -> int:
    import gguf

    names = gguf.get_tensor_name_map(arch.gguf_arch, int(config.get("num_hidden_layers") or config.get("n_layer")))
    tied = bool(config.get("tie_word_embeddings"))
    token_embd = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.TOKEN_EMBD] + ".weight"
    output = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.OUTPUT] + ".weight"
    count = 0
    written: set[str] = set()
    for hf_name, tensor in read_weights(model_dir):
        if hf_name.endswith(arch.skip_suffixes):
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise FailedPrecondition(f"tensor {hf_name!r} of {model_dir.name!r} has no GGUF name for "
                                     f"{gguf.MODEL_ARCH_NAMES[arch.gguf_arch]}", reason="GGUF_UNKNOWN_TENSOR")
        if gguf_name == output and tied:
            continue  # a tied head is the embedding: llama.cpp reuses token_embd (or gets the copy below)
        tensor = arch.transform(hf_name, tensor, config)
        targets = [gguf_name] + ([output] if gguf_name == token_embd and tied and arch.duplicate_tied_output else [])
        for target in targets:
            qtype = _tensor_type(target, tensor, outtype)
            data, raw_dtype = encode_tensor(tensor, qtype)
            writer.add_tensor(target, data, raw_dtype=raw_dtype)
            written.add(target)
            count += 1
    if token_embd not in written:
        raise FailedPrecondition(f"model folder {model_dir.name!r} has no token embedding among its weights")
    if not tied and output not in written:  # llama.cpp would silently use the embedding as the head
        raise FailedPrecondition(f"model folder {model_dir.name!r} has untied word embeddings but no lm_head weight")
    return count


# -- tokenizer -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GgufVocab:
    """The tokenizer facts a GGUF carries."""

    pre: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    special_ids: dict[str, int]      # bos, eos, unk, pad -> id
    add_bos: bool
    add_eos: bool
    chat_template: str | None
    special_tokens: list[str]        # the special token strings (control tokens)
    eos_token: str | None
    bos_token: str | None

    @property
    def bos_id(self) -> int | None:
        return self.special_ids.get("bos")

    @property
    def eos_id(self) -> int | None:
        return self.special_ids.get("eos")

    def add_to(self, writer: Any) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        writer.add_token_merges(self.merges)
        for kind, token_id in self.special_ids.items():
            getattr(writer, f"add_{kind}_token_id")(token_id)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)

    def stop_tokens(self) -> list[str]:
        """The chat format's stop strings (ChatML), else the end-of-text special tokens."""
        try:
            return list(derive_chat_format(self.chat_template, self.special_tokens, eos_token=self.eos_token,
                                           bos_token=self.bos_token).stop)
        except FailedPrecondition:
            stops = [self.eos_token] if self.eos_token else []
            return stops + [t for t in END_OF_TEXT_TOKENS if t in self.special_tokens and t not in stops]


def pre_tokenizer_name(tokenizer_json: dict, where: str = "tokenizer.json") -> str:
    """The llama.cpp pre-tokenizer whose regexes split text as tokenizer.json's pre-tokenizer does."""
    if tokenizer_json.get("normalizer") is not None:
        raise FailedPrecondition(f"{where} has a normalizer ({json.dumps(tokenizer_json['normalizer'])[:200]}); "
                                 "GGUF export handles byte-level BPE tokenizers without one",
                                 reason="GGUF_UNSUPPORTED_TOKENIZER")
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    shape = [{k: step[k] for k in _PRE_KEYS if k in step} for step in steps]
    for name, known in _PRE_TOKENIZERS.items():
        if shape == known:
            return name
    raise FailedPrecondition(f"{where} has a pre-tokenizer llama.cpp has no match for here: "
                             f"{json.dumps(pre)[:300]}; known: "
                             + "; ".join(f"{n} = {json.dumps(s)}" for n, s in _PRE_TOKENIZERS.items()),
                             reason="GGUF_UNKNOWN_PRE_TOKENIZER")


def _merges(model: dict) -> list[str]:
    merges = model.get("merges") or []
    out = []
    for merge in merges:
        if isinstance(merge, str):
            out.append(merge)
        else:  # [left, right] pairs (tokenizers >= 0.20); a space inside a part is written as U+0120+ (llama.cpp)
            out.append(" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in merge))
    return out


def read_vocab(model_dir: Path, n_vocab: int) -> GgufVocab:
    """The tokenizer of `model_dir` as GGUF metadata; FailedPrecondition when there is none or it
    is not a byte-level BPE tokenizer llama.cpp can reproduce."""
    import gguf
    from transformers import AutoTokenizer

    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise FailedPrecondition(f"model folder {model_dir.name!r} has no tokenizer.json: GGUF export needs the "
                                 "model's (fast, byte-level BPE) tokenizer saved beside the weights",
                                 reason="GGUF_MISSING_TOKENIZER", metadata={"model_dir": str(model_dir)})
    raw = json.loads(path.read_text(encoding="utf-8"))
    model = raw.get("model") or {}
    if model.get("type") != "BPE":
        raise FailedPrecondition(f"{model_dir.name}/tokenizer.json holds a {model.get('type')!r} model; GGUF export "
                                 "handles byte-level BPE tokenizers", reason="GGUF_UNSUPPORTED_TOKENIZER")
    pre = pre_tokenizer_name(raw, f"{model_dir.name}/tokenizer.json")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if by_id and max(by_id) >= n_vocab:
        raise FailedPrecondition(f"the tokenizer of {model_dir.name!r} has token id {max(by_id)}, beyond the "
                                 f"model's vocab_size {n_vocab}")
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    types, tokens = [], []
    token_type = gguf.TokenType
    for i in range(n_vocab):
        if i not in by_id:  # embedding rows no token uses (vocab padded to a multiple)
            tokens.append(f"[PAD{i}]")
            types.append(token_type.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(token_type.CONTROL if added[i].special else token_type.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(token_type.NORMAL)
    special_ids = {}
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if isinstance(token_id, int) and 0 <= token_id < n_vocab:
            special_ids[kind] = token_id
    with_specials = tokenizer("Hello", add_special_tokens=True)["input_ids"]
    without = tokenizer("Hello", add_special_tokens=False)["input_ids"]
    extra = len(with_specials) - len(without)
    add_bos = extra > 0 and with_specials[0] == special_ids.get("bos") and with_specials[1:len(without) + 1] == without
    add_eos = extra > 0 and with_specials[-1] == special_ids.get("eos") and with_specials[:len(without)] == without
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    specials = [t.content for t in added.values() if t.special]
    return GgufVocab(pre=pre, tokens=tokens, token_types=[int(t) for t in types], merges=_merges(model),
                     special_ids=special_ids, add_bos=bool(add_bos), add_eos=bool(add_eos), chat_template=template,
                     special_tokens=specials, eos_token=tokenizer.eos_token, bos_token=tokenizer.bos_token)


# -- file ------------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["OUTTYPES", "GgufExport", "GgufVocab", "encode_tensor", "export_gguf", "permute_rope",
           "pre_tokenizer_name", "read_vocab", "read_weights", "supported_architectures"]
