"""int8 conversion of a tiny random Llama: both modes, fp32 and bf16, save -> reload -> the same
logits bit for bit; the on-disk compressed-tensors layout; the pack-quantized bit layout; skip
lists; and compress() end to end in-process.

The ops run their pure-torch reference (tests/compression/conftest.py), except in
test_round_trip_through_the_triton_kernels: the interpreter on CPU-only machines, compiled on a GPU."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open
from torch import nn

from tests.training.conftest import build_tiny_model, qa_rows
from trainforge.core.compression.compress import compress, text_perplexity
from trainforge.core.compression.convert import (
    folder_bytes,
    load_int8,
    mode_from_config,
    pack_int8,
    parameter_count,
    quantization_config,
    quantize_model,
    save_int8,
    unpack_int8,
)
from trainforge.core.training.model_loading import load_model_and_tokenizer
from trainforge.kernels import MODES, Int8Linear, dispatch
from trainforge.kernels.dispatch import BACKEND_ENV

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# What config.json's quantization_config must hold, field for field (docs/compression.md).
WEIGHTS = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "group_size": None,
           "dynamic": False, "actorder": None, "block_structure": None}
EXPECTED_CONFIG = {
    "w8a8_dynamic": {
        "quant_method": "compressed-tensors", "format": "int-quantized", "quantization_status": "compressed",
        "config_groups": {"group_0": {
            "targets": ["Linear"], "weights": WEIGHTS, "output_activations": None,
            "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token",
                                  "group_size": None, "dynamic": True, "actorder": None, "block_structure": None}}},
        "ignore": ["lm_head"], "kv_cache_scheme": None},
    "w8a16": {
        "quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": WEIGHTS, "input_activations": None,
                                      "output_activations": None}},
        "ignore": ["lm_head"], "kv_cache_scheme": None},
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    # hidden 64: every K (64, 128) is a multiple of vLLM's pack factor 4 and of a warp-sized block.
    return build_tiny_model(tmp_path_factory.mktemp("compression") / "tiny", hidden=64)


def _ids() -> torch.Tensor:
    return torch.randint(4, 40, (3, 11), generator=torch.Generator().manual_seed(0))  # (B, T)


def _tensors(folder) -> dict[str, torch.Tensor]:
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("mode", MODES)
def test_save_and_reload_give_bit_identical_logits(tiny_dir, tmp_path, mode, dtype):
    model, tokenizer = load_model_and_tokenizer(tiny_dir)
    source_params = parameter_count(model)
    quantize_model(model, mode, dtype=dtype)
    names = {n for n, m in model.named_modules() if isinstance(m, Int8Linear)}
    assert names == {f"model.layers.{i}.{p}.{name}" for i in range(2)
                     for p, group in (("self_attn", LINEARS[:4]), ("mlp", LINEARS[4:])) for name in group}
    assert isinstance(model.lm_head, nn.Linear) and model.lm_head.weight is model.model.embed_tokens.weight
    assert parameter_count(model) == source_params
    with torch.no_grad():
        expected = model(input_ids=_ids()).logits
    assert expected.dtype == dtype and torch.isfinite(expected).all()

    save_int8(model, tokenizer, tmp_path / "int8")
    reloaded, reloaded_tokenizer = load_int8(tmp_path / "int8")
    with torch.no_grad():
        got = reloaded(input_ids=_ids()).logits
    assert torch.equal(got, expected)
    assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight  # still tied
    assert reloaded_tokenizer("What is the capital of France ?")["input_ids"] == \
        tokenizer("What is the capital of France ?")["input_ids"]


@pytest.mark.skipif(not torch.cuda.is_available() and not dispatch.INTERPRETING,
                    reason="no GPU and no TRITON_INTERPRET=1: the ops would run the reference")
@pytest.mark.parametrize("mode", MODES)
def test_round_trip_through_the_triton_kernels(tiny_dir, tmp_path, mode, monkeypatch):
    """The same, with the ops on the Triton kernels (interpreted on a CPU, compiled on a GPU)."""
    monkeypatch.delenv(BACKEND_ENV)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model_and_tokenizer(tiny_dir)
    quantize_model(model, mode).to(device)
    ids = _ids()[:1, :5].to(device)  # one program per kernel launch: the interpreter is slow
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    save_int8(model, tokenizer, tmp_path / "int8")
    reloaded, _ = load_int8(tmp_path / "int8", device=device)
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, expected)


@pytest.mark.parametrize("mode", MODES)
def test_saved_checkpoint_is_compressed_tensors(tiny_dir, tmp_path, mode):
    model, tokenizer = load_model_and_tokenizer(tiny_dir)
    save_int8(quantize_model(model, mode, dtype=torch.bfloat16), tokenizer, tmp_path / "int8")
    config = json.loads((tmp_path / "int8" / "config.json").read_text())
    assert config["quantization_config"] == EXPECTED_CONFIG[mode]
    assert config["dtype"] == "bfloat16" and config["tie_word_embeddings"] is True
    assert mode_from_config(config["quantization_config"]) == mode

    tensors = _tensors(tmp_path / "int8")
    prefix = "model.layers.1.mlp.down_proj"  # (N, K) = (64, 128)
    assert tensors[f"{prefix}.weight_scale"].dtype == torch.float32
    assert tensors[f"{prefix}.weight_scale"].shape == (64, 1)
    if mode == "w8a8_dynamic":
        assert tensors[f"{prefix}.weight"].dtype == torch.int8 and tensors[f"{prefix}.weight"].shape == (64, 128)
        assert not any(k.endswith("weight_packed") for k in tensors)
    else:
        assert tensors[f"{prefix}.weight_packed"].dtype == torch.int32
        assert tensors[f"{prefix}.weight_packed"].shape == (64, 32)
        assert tensors[f"{prefix}.weight_shape"].tolist() == [64, 128]
        assert f"{prefix}.weight" not in tensors
    assert "lm_head.weight" not in tensors  # tied: stored once, as the embedding
    assert tensors["model.embed_tokens.weight"].dtype == torch.bfloat16
    assert tensors["model.norm.weight"].dtype == torch.bfloat16


def test_int8_weights_are_smaller_than_fp32(tiny_dir, tmp_path):
    model, tokenizer = load_model_and_tokenizer(tiny_dir)
    save_int8(quantize_model(model, "w8a8_dynamic"), tokenizer, tmp_path / "int8")  # kept tensors stay fp32
    int8_bytes = (tmp_path / "int8" / "model.safetensors").stat().st_size
    fp32_bytes = (tiny_dir / "model.safetensors").stat().st_size
    # Linear weights are 93% of this model's parameters: 1 byte instead of 4 for those.
    assert int8_bytes < 0.4 * fp32_bytes, (int8_bytes, fp32_bytes)
    assert folder_bytes(tmp_path / "int8") < folder_bytes(tiny_dir)


def _compressed_tensors_pack(value: torch.Tensor) -> torch.Tensor:
    """compressed-tensors' pack_to_int32(value, num_bits=8, packed_dim=1), written out from its
    algorithm: offset by 2^(bits-1) into uint8, pad K to a multiple of 32 // bits, shift-and-sum."""
    offset = 1 << 7
    unsigned = (value.to(torch.int32) + offset).to(torch.uint8)
    rows, cols = unsigned.shape
    pad = math.ceil(cols / 4) * 4 - cols
    unsigned = torch.nn.functional.pad(unsigned, (0, pad))
    grouped = unsigned.view(rows, -1, 4).to(torch.int32)
    shifts = torch.arange(4, dtype=torch.int32) * 8
    return (grouped << shifts).sum(dim=2, dtype=torch.int32)


@pytest.mark.parametrize("shape", [(37, 1000), (5, 3001), (1, 4), (3, 7)])
def test_pack_matches_compressed_tensors_and_round_trips(shape):
    generator = torch.Generator().manual_seed(shape[0] * 10007 + shape[1])
    q = torch.randint(-127, 128, shape, generator=generator, dtype=torch.int8)
    q[0, :3] = torch.tensor([-127, 0, 127], dtype=torch.int8)[: shape[1]]
    packed = pack_int8(q)
    assert packed.dtype == torch.int32 and packed.shape == (shape[0], -(-shape[1] // 4))
    if shape[1] % 4 == 0:  # where the two agree on padding: compressed-tensors pads with code -128
        assert torch.equal(packed, _compressed_tensors_pack(q))
    else:
        assert torch.equal(packed[:, :-1], _compressed_tensors_pack(q)[:, :-1])
    assert torch.equal(unpack_int8(packed, shape), q)


def test_skip_list_is_configurable_and_a_quantized_head_is_untied(tiny_dir, tmp_path):
    model, tokenizer = load_model_and_tokenizer(tiny_dir)
    quantize_model(model, "w8a16", skip=("embed_tokens", "mlp"))
    assert isinstance(model.lm_head, Int8Linear) and model.config.tie_word_embeddings is False
    assert isinstance(model.model.layers[0].mlp.up_proj, nn.Linear)
    with torch.no_grad():
        expected = model(input_ids=_ids()).logits
    save_int8(model, tokenizer, tmp_path / "int8")
    config = json.loads((tmp_path / "int8" / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    assert config["quantization_config"]["ignore"] == sorted(
        f"model.layers.{i}.mlp.{p}" for i in range(2) for p in LINEARS[4:])
    reloaded, _ = load_int8(tmp_path / "int8")
    assert isinstance(reloaded.lm_head, Int8Linear)
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=_ids()).logits, expected)


def test_bad_inputs_are_refused(tiny_dir, tmp_path):
    model, _ = load_model_and_tokenizer(tiny_dir)
    with pytest.raises(ValueError, match="mode"):
        quantize_model(model, "w4a16")
    with pytest.raises(ValueError, match="no nn.Linear"):
        quantize_model(model, "w8a16", skip=("self_attn", "mlp", "lm_head"))
    with pytest.raises(ValueError, match="quantization_config"):
        load_int8(tiny_dir)  # a plain fp32 folder
    with pytest.raises(ValueError, match="format"):
        mode_from_config({**quantization_config("w8a16", []), "format": "int-quantized"})


def test_compressed_tensors_library_reads_the_checkpoint(tiny_dir, tmp_path):
    """Optional: needs PyPI compressed-tensors, which trainforge does not depend on. transformers'
    compressed-tensors integration decompresses our folder to dense Linear weights equal to ours."""
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.quantization import QuantizationConfig
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    for mode in MODES:
        model, tokenizer = load_model_and_tokenizer(tiny_dir)
        quantize_model(model, mode)
        save_int8(model, tokenizer, tmp_path / mode)
        QuantizationConfig.model_validate(json.loads((tmp_path / mode / "config.json").read_text())
                                          ["quantization_config"])
        dense = AutoModelForCausalLM.from_pretrained(tmp_path / mode, dtype=torch.float32,
                                                     quantization_config=CompressedTensorsConfig(run_compressed=False))
        ours = model.model.layers[1].mlp.down_proj
        theirs = dense.model.layers[1].mlp.down_proj.weight.detach()
        assert torch.equal(theirs, ours.weight.float() * ours.weight_scale[:, None])


def test_compress_scores_source_and_int8_on_the_validation_rows(tiny_dir, tmp_path):
    """In-process, on rows with a validation split (the built-in text: test_compress_api)."""
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in qa_rows(repeat=2)))
    result = compress(tiny_dir, tmp_path / "rows", "w8a8_dynamic", data, 0.5, validation_split=0.25, seed=3,
                      max_new_tokens=4)
    assert result.eval_data == str(data) and result.eval_samples == 3  # round(12 * 0.25) held out
    assert set(result.metrics) == {"perplexity", "perplexity_source", "perplexity_increase", "accuracy",
                                   "accuracy_source"}
    m = result.metrics
    assert m["perplexity_increase"] == pytest.approx((m["perplexity"] - m["perplexity_source"]) / m["perplexity_source"])
    assert result.gate_passed == (m["perplexity_increase"] <= 0.5)
    assert result.size_bytes == folder_bytes(tmp_path / "rows") and result.size_mb == round(result.size_bytes / 2**20, 3)
    assert result.parameter_count == sum(p.numel() for p in load_model_and_tokenizer(tiny_dir)[0].parameters())
    model, tokenizer = load_int8(tmp_path / "rows")
    perplexity, tokens = text_perplexity(model, tokenizer, "the sky is blue . " * 20, window=16)
    assert perplexity > 1 and tokens == 100 - 7  # 7 windows of 16 tokens and one of 4, each predicting all but one
