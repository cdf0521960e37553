"""W8A16 weight-only matmul against a float64 reference, with and without split-K."""

from __future__ import annotations

import importlib

import pytest
import torch

from trainforge.kernels import reference, w8a16_matmul

# The package re-exports the function w8a16_matmul, which shadows the submodule's attribute.
w8a16_mod = importlib.import_module("trainforge.kernels.w8a16_matmul")

FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (M, K, N): decode-sized M, K not a multiple of BLOCK_K, N not a multiple of BLOCK_N.
SHAPES = [(1, 3000, 129), (5, 3000, 129), (16, 256, 257), (37, 1000, 300)]

# ||out - ref|| / ||ref|| against float64 on the same int8 weight and the same (rounded) x:
# output rounding (2^-24 / 2^-11 / 2^-8) plus fp32 accumulation over K; measured 2e-7 (fp32,
# K = 3000), 2e-4 (fp16), 3.3e-3 (bf16, interpreter truncating fp32 -> bf16 stores).
W8A16_RTOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def _operands(m, k, n, dtype, device):
    x = (torch.randn(m, k, device=device) * 2).to(dtype)
    w_q, w_scale = reference.quantize_rowwise(torch.randn(n, k, device=device) * 0.05)
    bias = torch.randn(n, device=device).to(dtype)
    ref = (x.double() @ w_q.double().T) * w_scale.double()[None, :] + bias.double()[None, :]
    return x, w_q, w_scale, bias, ref


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_w8a16_matches_float64(shape, dtype, device, rel_err):
    m, k, n = shape
    x, w_q, w_scale, bias, ref = _operands(m, k, n, dtype, device)
    out = w8a16_matmul(x, w_q, w_scale, bias)  # split-K chosen by the heuristic
    assert out.dtype == dtype and out.shape == (m, n)
    assert rel_err(out, ref) < W8A16_RTOL[dtype]


@pytest.mark.parametrize("split_k", [1, 2, 3, 16])
def test_w8a16_split_k_variants(split_k, device, rel_err):
    # 3 does not divide the 24 K-tiles evenly; 16 leaves trailing splits with no K at all.
    m, k, n = 5, 3000, 129
    x, w_q, w_scale, bias, ref = _operands(m, k, n, torch.float16, device)
    out = torch.full((m, n), float("nan"), dtype=torch.float16, device=device)
    w8a16_mod.launch_w8a16_matmul(x, w_q, w_scale, bias, out=out, split_k=split_k)
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < W8A16_RTOL[torch.float16]


def test_w8a16_split_k_is_deterministic(device):
    x, w_q, w_scale, bias, _ = _operands(3, 2000, 100, torch.float32, device)
    a = w8a16_mod.launch_w8a16_matmul(x, w_q, w_scale, bias, split_k=4)
    b = w8a16_mod.launch_w8a16_matmul(x, w_q, w_scale, bias, split_k=4)
    assert torch.equal(a, b)


def test_w8a16_non_contiguous_and_no_bias(device, rel_err):
    m, k, n = 7, 500, 96
    x, w_q, w_scale, _, _ = _operands(m, k, n, torch.float32, device)
    x_t = x.T.contiguous().T
    w_q_t = w_q.T.contiguous().T
    out = w8a16_matmul(x_t, w_q_t, w_scale)
    ref = (x.double() @ w_q.double().T) * w_scale.double()[None, :]
    assert rel_err(out, ref) < W8A16_RTOL[torch.float32]


def test_split_k_heuristic():
    cpu = torch.device("cpu")
    # CPU/interpreter pretends 4 SMs: 16 programs wanted.
    assert w8a16_mod.choose_split_k(1, 128, 8192, cpu) == 8  # 2 tiles -> 8 splits
    assert w8a16_mod.choose_split_k(1, 4096, 8192, cpu) == 1  # 64 tiles already
    assert w8a16_mod.choose_split_k(1, 64, 600, cpu) == 1  # K too short to split


def test_w8a16_bad_inputs_raise_value_error(device):
    x, w_q, w_scale, bias, _ = _operands(2, 64, 32, torch.float32, device)
    with pytest.raises(ValueError, match="inner dimensions differ"):
        w8a16_matmul(x[:, :48], w_q, w_scale)
    with pytest.raises(ValueError, match="x must be a 2-D float32/float16/bfloat16"):
        w8a16_matmul(x.to(torch.int8), w_q, w_scale)
    with pytest.raises(ValueError, match="w_q must be a 2-D int8"):
        w8a16_matmul(x, w_q.float(), w_scale)
    with pytest.raises(ValueError, match="split_k"):
        w8a16_mod.launch_w8a16_matmul(x, w_q, w_scale, None, split_k=17)
