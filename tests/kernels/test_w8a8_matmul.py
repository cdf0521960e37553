"""W8A8 GEMM against a float64 reference of the same int8 operands, and against the float matmul."""

from __future__ import annotations

import importlib

import pytest
import torch

from trainforge.kernels import reference, w8a8_dynamic_matmul, w8a8_matmul

# The package re-exports the function w8a8_matmul, which shadows the submodule's attribute.
w8a8_mod = importlib.import_module("trainforge.kernels.w8a8_matmul")

FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (M, K, N): odd sizes, K not a multiple of the block, M = 1 and M = 16 decode-sized.
SHAPES = [(37, 1000, 300), (5, 3000, 129), (1, 200, 64), (16, 256, 257)]

# ||out - ref|| / ||ref|| against float64 on the same int8 operands, per output dtype. The output
# rounding dominates: unit roundoff 2^-24 / 2^-11 / 2^-8; measured 4e-8 (fp32), 2e-4 (fp16),
# 3.3e-3 (bf16 under the interpreter, which truncates fp32 -> bf16; ~1.7e-3 rounding to nearest).
GEMM_RTOL = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}
# Quantization error of per-token x per-channel int8 on Gaussian data against the unquantized
# float64 matmul: ~0.8% measured (step = absmax / 127 ~ 0.025 sigma at K ~ 1000).
QUANT_RTOL = 3e-2


def _operands(m, k, n, device):
    x = torch.randn(m, k, device=device) * torch.rand(m, 1, device=device) * 4
    w = torch.randn(n, k, device=device) * 0.05
    a_q, a_scale = reference.quantize_rowwise(x)
    w_q, w_scale = reference.quantize_rowwise(w)
    return x, w, a_q, a_scale, w_q, w_scale


def _exact(a_q, a_scale, w_q, w_scale, bias):
    ref = (a_q.double() @ w_q.double().T) * a_scale.double()[:, None] * w_scale.double()[None, :]
    return ref if bias is None else ref + bias.double()[None, :]


@pytest.mark.parametrize("out_dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_w8a8_matches_float64(shape, out_dtype, device, rel_err):
    m, k, n = shape
    _, _, a_q, a_scale, w_q, w_scale = _operands(m, k, n, device)
    bias = torch.randn(n, device=device).to(out_dtype)
    ref = _exact(a_q, a_scale, w_q, w_scale, bias)

    out = torch.full((m, n), float("nan"), dtype=out_dtype, device=device)
    w8a8_mod.launch_w8a8_matmul(a_q, a_scale, w_q, w_scale, bias, out_dtype, out=out)
    assert torch.isfinite(out).all()  # every element written
    assert rel_err(out, ref) < GEMM_RTOL[out_dtype]

    out2 = w8a8_matmul(a_q, a_scale, w_q, w_scale, bias, out_dtype)
    assert out2.dtype == out_dtype and out2.shape == (m, n)
    assert rel_err(out2, ref) < GEMM_RTOL[out_dtype]


def test_w8a8_without_bias_and_non_contiguous(device, rel_err):
    m, k, n = 21, 333, 100
    _, _, a_q, a_scale, w_q, w_scale = _operands(m, k, n, device)
    a_q_t = a_q.T.contiguous().T  # column-major activations
    w_q_t = w_q.T.contiguous().T  # column-major weight
    a_scale_s = torch.stack([a_scale, a_scale], 1)[:, 0]  # strided scale
    assert not (a_q_t.is_contiguous() or w_q_t.is_contiguous() or a_scale_s.is_contiguous())
    out = w8a8_matmul(a_q_t, a_scale_s, w_q_t, w_scale, None, torch.float32)
    assert rel_err(out, _exact(a_q, a_scale, w_q, w_scale, None)) < GEMM_RTOL[torch.float32]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", [(37, 1000, 300), (5, 3000, 129)])
def test_w8a8_dynamic(shape, dtype, device, rel_err):
    m, k, n = shape
    x, w, _, _, w_q, w_scale = _operands(m, k, n, device)
    x = x.to(dtype)
    bias = torch.randn(n, device=device)
    a_q, a_scale = reference.quantize_rowwise(x)  # what the kernel must have computed
    ref = _exact(a_q, a_scale, w_q, w_scale, bias)

    out = torch.full((m, n), float("nan"), dtype=dtype, device=device)
    w8a8_mod.launch_w8a8_dynamic_matmul(x, w_q, w_scale, bias, dtype, out=out)
    assert rel_err(out, ref) < GEMM_RTOL[dtype]

    out2 = w8a8_dynamic_matmul(x, w_q, w_scale, bias)
    assert out2.dtype == dtype
    assert rel_err(out2, ref) < GEMM_RTOL[dtype]
    # and the whole thing is a good approximation of the float matmul
    exact_float = x.double() @ w.double().T + bias.double()
    assert rel_err(out2, exact_float) < QUANT_RTOL


def test_w8a8_dynamic_zero_rows_give_the_bias(device):
    x = torch.randn(6, 256, device=device)
    x[[1, 4]] = 0.0
    w_q, w_scale = reference.quantize_rowwise(torch.randn(64, 256, device=device))
    bias = torch.randn(64, device=device)
    out = w8a8_dynamic_matmul(x, w_q, w_scale, bias, torch.float32)
    assert torch.equal(out[[1, 4]], bias.expand(2, 64))


def test_w8a8_bad_inputs_raise_value_error(device):
    _, _, a_q, a_scale, w_q, w_scale = _operands(4, 64, 32, device)
    with pytest.raises(ValueError, match="inner dimensions differ"):
        w8a8_matmul(a_q, a_scale, w_q[:, :32], w_scale)
    with pytest.raises(ValueError, match="a_q must be a 2-D int8"):
        w8a8_matmul(a_q.float(), a_scale, w_q, w_scale)
    with pytest.raises(ValueError, match="w_scale must be a float32 tensor of shape"):
        w8a8_matmul(a_q, a_scale, w_q, w_scale.half())
    with pytest.raises(ValueError, match="bias must be a float tensor of shape"):
        w8a8_matmul(a_q, a_scale, w_q, w_scale, torch.zeros(31, device=device))
    with pytest.raises(ValueError, match="out_dtype"):
        w8a8_matmul(a_q, a_scale, w_q, w_scale, None, torch.int32)
    with pytest.raises(ValueError, match="x must be a 2-D float32/float16/bfloat16"):
        w8a8_dynamic_matmul(torch.randn(2, 3, 64, device=device), w_q, w_scale)
