"""Compression test setup: the int8 ops run their pure-torch reference by default, on one thread.

Under the Triton interpreter (CPU-only machines, tests/conftest.py) one Int8Linear call on these
tiny shapes costs ~0.1 s, and a perplexity pass calls ~14 of them per window: the reference keeps
the suite fast. The kernels' parity with the reference is tests/kernels' subject; here one test
(`test_round_trip_through_the_triton_kernels`) runs the kernels themselves. The environment
variable is read per call, and child processes (CompressModel's) inherit it.

One intra-op thread, here and in the children (OMP_NUM_THREADS): the models are tiny, and on a busy
2-core machine two OpenMP threads waiting on each other made a 60-step training run 5-20x slower
(measured 0.3 s alone, up to 47 s beside another job's training)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from trainforge.kernels.dispatch import BACKEND_ENV


@pytest.fixture(autouse=True)
def reference_kernels_on_one_thread(monkeypatch, request):
    monkeypatch.setenv(BACKEND_ENV, "reference")
    if request.node.get_closest_marker("slow"):  # the real model wants every core
        yield
        return
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with one_thread():
        yield


@contextmanager
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def build_int8_hostile_model(folder, rows, *, steps: int = 60):
    """A tiny Llama that knows `rows` (60 Adam steps, ~0.3 s: completion loss ~0.02) and that
    per-channel int8 ruins, deterministically: every quantized Linear gets one outlier input
    column of 1000 (the outlier weights that break naive int8, as in LLM.int8), made inert in float
    by zeroing the features that multiply it (norm weight[0], v_proj and up_proj row 0). int8
    then rounds every other weight of each row to zero (scale 1000/127 ~ 7.9 >> |w|), so the int8
    model loses its attention and MLPs: perplexity on `rows` goes from ~1.04 to ~2900 (measured),
    in both modes. Random tiny models are no use for this: int8 moves their perplexity by
    +-0.05%, either way."""
    import torch

    from tests.training.conftest import build_tiny_model
    from trainforge.core.training.data import PaddingCollator, tokenize_row
    from trainforge.core.training.model_loading import load_model_and_tokenizer

    build_tiny_model(folder, hidden=64)
    model, tokenizer = load_model_and_tokenizer(folder)
    batch = PaddingCollator(tokenizer.pad_token_id)([tokenize_row(r, tokenizer, 64) for r in rows])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    with one_thread():  # module-scoped callers run before the autouse fixture
        for _ in range(steps):
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            for zeroed in (layer.input_layernorm.weight, layer.post_attention_layernorm.weight):
                zeroed[0] = 0.0  # feature 0 of every q/k/v/gate/up input is now exactly 0
            attn.v_proj.weight[0] = 0.0  # ... and of o_proj's input
            mlp.up_proj.weight[0] = 0.0  # ... and of down_proj's input
            for linear in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj,
                           mlp.down_proj):
                linear.weight[:, 0] = 1000.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
