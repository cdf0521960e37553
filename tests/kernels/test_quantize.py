"""Quantize / dequantize kernels against the pure-torch reference: bit-exact, ties included."""

from __future__ import annotations

import pytest
import torch

from trainforge.kernels import (
    dequantize,
    quantize_per_channel,
    quantize_per_group,
    quantize_per_token,
    reference,
    to_q8_0_blocks,
)
from trainforge.kernels import quantize as qmod

FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (..., K): odd sizes; K = 1000 and 3000 are not multiples of 64 or 128 (nor 1000 of 32).
SHAPES = [(37, 1000), (5, 3000), (2, 3, 129), (1, 1)]


def _poisoned_outputs(shape, n_scales_shape, scale_dtype, device):
    # -128 is never produced (symmetric range), NaN never a valid scale.
    q = torch.full(shape, -128, dtype=torch.int8, device=device)
    scale = torch.full(n_scales_shape, float("nan"), dtype=scale_dtype, device=device)
    return q, scale


def _ties(rows: int, k: int, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose absmax is 127 * 2^e, so scale = 2^e exactly and (j + 0.5) * 2^e / scale ties."""
    e = torch.randint(-4, 4, (rows, 1)).double()
    step = torch.pow(2.0, e)  # (rows, 1)
    j = torch.randint(-127, 127, (rows, k)).double()  # tie at j + 0.5 in [-126.5, 126.5]
    x = (j + 0.5) * step
    x[:, 0] = 127 * step[:, 0] * torch.where(torch.rand(rows) < 0.5, 1.0, -1.0).double()
    expected = torch.where(j.remainder(2) == 0, j, j + 1)  # half to even, computed independently
    expected[:, 0] = torch.sign(x[:, 0]) * 127
    return x.to(dtype).to(device), expected.to(torch.int8).to(device)


# ------------------------------------------------------------------------------------------
# per token / per channel
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_per_token_is_bit_exact(shape, dtype, device):
    x = (torch.randn(shape) * torch.rand(shape[:-1] + (1,)) * 10).to(dtype).to(device)
    ref_q, ref_scale = reference.quantize_rowwise(x)

    q, scale = _poisoned_outputs(shape, shape[:-1], torch.float32, device)
    qmod.launch_quantize_rows(x, q=q, scale=scale)
    assert torch.equal(q, ref_q)
    assert torch.equal(scale, ref_scale)

    q2, scale2 = quantize_per_token(x)
    assert torch.equal(q2, ref_q) and torch.equal(scale2, ref_scale)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_per_token_rounds_ties_to_even(dtype, device):
    x, expected = _ties(9, 301, dtype, device)
    q, scale = quantize_per_token(x)
    ref_q, ref_scale = reference.quantize_rowwise(x)
    assert torch.equal(ref_q, expected)  # the reference itself rounds half to even
    assert torch.equal(q, expected)
    assert torch.equal(scale, ref_scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_per_token_two_read_path_for_long_rows(dtype, device, monkeypatch):
    # Rows longer than ONE_PASS_MAX_COLS are read twice; lower the limit to cover it cheaply.
    monkeypatch.setattr(qmod, "ONE_PASS_MAX_COLS", 256)
    x = torch.randn(6, 1500).to(dtype).to(device)
    x[2, 1499] = 40.0  # absmax in the last, partial chunk
    q, scale = _poisoned_outputs(x.shape, x.shape[:-1], torch.float32, device)
    qmod.launch_quantize_rows(x, q=q, scale=scale)
    ref_q, ref_scale = reference.quantize_rowwise(x)
    assert torch.equal(q, ref_q) and torch.equal(scale, ref_scale)


def test_per_token_all_zero_rows(device):
    x = torch.randn(8, 200, device=device)
    x[3] = 0.0
    x[7] = -0.0
    q, scale = quantize_per_token(x)
    assert torch.equal(scale[[3, 7]], torch.ones(2, device=device))  # guard: no 0 scale
    assert not q[[3, 7]].any()
    assert torch.isfinite(scale).all()
    assert torch.equal(q, reference.quantize_rowwise(x)[0])
    assert not dequantize(q, scale, 0, torch.float32)[[3, 7]].any()


def test_per_token_non_contiguous_inputs(device):
    base = torch.randn(1000, 37, device=device)
    for x in (base.T, base[::3, ::2], torch.randn(4, 129, 3, device=device).transpose(1, 2)):
        assert not x.is_contiguous()
        q, scale = quantize_per_token(x)
        ref_q, ref_scale = reference.quantize_rowwise(x.contiguous())
        assert torch.equal(q, ref_q) and torch.equal(scale, ref_scale)
        assert q.is_contiguous()


def test_per_channel_is_per_row_of_the_weight(device):
    w = torch.randn(129, 300, device=device)
    q, scale = quantize_per_channel(w)
    assert scale.shape == (129,)
    ref_q, ref_scale = reference.quantize_rowwise(w)
    assert torch.equal(q, ref_q) and torch.equal(scale, ref_scale)


def test_quantization_error_is_at_most_half_a_step(device):
    x = torch.randn(37, 1000, device=device)
    q, scale = quantize_per_token(x)
    err = (dequantize(q, scale, 0, torch.float32) - x).abs()
    assert (err <= scale[:, None] * 0.5 * (1 + 1e-6)).all()


# ------------------------------------------------------------------------------------------
# per group
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_per_group_is_bit_exact(group_size, scale_dtype, dtype, device):
    x = (torch.randn(37, 1000) * 3).to(dtype).to(device)  # 1000 = 7 * 128 + 104: partial group
    n_groups = -(-1000 // group_size)
    ref_q, ref_scale = reference.quantize_per_group(x, group_size, scale_dtype)

    q, scale = _poisoned_outputs(x.shape, (37, n_groups), scale_dtype, device)
    qmod.launch_quantize_groups(x, group_size, scale_dtype, q=q, scale=scale)
    assert torch.equal(q, ref_q)
    assert torch.equal(scale, ref_scale)

    q2, scale2 = quantize_per_group(x, group_size, scale_dtype)
    assert torch.equal(q2, ref_q) and torch.equal(scale2, ref_scale)


@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.float16])
def test_per_group_rounds_ties_to_even(scale_dtype, device):
    # Each 32-group of a row gets its own power-of-two step: one row of _ties per group.
    x, expected = _ties(5 * 4, 32, torch.float32, device)
    x, expected = x.reshape(5, 128), expected.reshape(5, 128)
    q, scale = quantize_per_group(x, 32, scale_dtype)
    assert torch.equal(q, expected)
    assert torch.equal(q, reference.quantize_per_group(x, 32, scale_dtype)[0])


def test_per_group_zero_tiny_and_huge_groups(device):
    x = torch.randn(3, 256, device=device)
    x[0, :64] = 0.0  # all-zero groups
    x[1, 32:64] = 1e-6  # fp16 scale underflows to 0 -> guarded to 1, quantizes to 0
    x[2, 96:128] = 2e7  # fp16 scale overflows -> clamped to 65504, q saturates at 127
    q, scale = quantize_per_group(x, 32, torch.float16)
    ref_q, ref_scale = reference.quantize_per_group(x, 32, torch.float16)
    assert torch.equal(q, ref_q) and torch.equal(scale, ref_scale)
    assert torch.isfinite(scale).all() and (scale > 0).all()
    assert scale[0, 0] == 1 and scale[1, 1] == 1 and not q[1, 32:64].any()
    assert scale[2, 3] == 65504 and (q[2, 96:128] == 127).all()


def test_q8_0_blocks_layout(device):
    x = torch.randn(3, 2, 96, device=device)
    q, d = quantize_per_group(x, 32, torch.float16)
    blocks = to_q8_0_blocks(q, d)
    assert blocks.shape == (3, 2, 3 * 34) and blocks.dtype == torch.uint8
    b = blocks.reshape(3, 2, 3, 34)
    assert torch.equal(b[..., :2].contiguous().view(torch.float16).squeeze(-1), d)
    assert torch.equal(b[..., 2:].contiguous().view(torch.int8).reshape(3, 2, 96), q)


# ------------------------------------------------------------------------------------------
# dequantize
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("out_dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("group_size", [0, 32, 128])
def test_dequantize_matches_reference(group_size, out_dtype, device, bf16_store_is_exact):
    x = torch.randn(37, 1000, device=device) * 5
    if group_size:
        q, scale = quantize_per_group(x, group_size, torch.float16)
    else:
        q, scale = quantize_per_token(x)
    ref = reference.dequantize(q, scale, group_size, out_dtype)

    out = torch.full(q.shape, float("nan"), dtype=out_dtype, device=device)
    qmod.launch_dequantize(q, scale, group_size, out_dtype, out=out)
    out2 = dequantize(q, scale, group_size, out_dtype)
    for o in (out, out2):
        if out_dtype == torch.bfloat16 and not bf16_store_is_exact:
            # The interpreter truncates fp32 -> bf16: at most 1 ulp (2^-7 relative) below.
            torch.testing.assert_close(o.float(), ref.float(), rtol=2**-7, atol=0)
        else:
            assert torch.equal(o, ref)


def test_dequantize_non_contiguous_q(device):
    q, scale = quantize_per_token(torch.randn(300, 37, device=device).T)  # (37, 300)
    q_t = q.T.contiguous().T  # same values, column-major
    assert not q_t.is_contiguous()
    assert torch.equal(dequantize(q_t, scale, 0, torch.float32), dequantize(q, scale, 0, torch.float32))


# ------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------
def test_bad_inputs_raise_value_error(device):
    x = torch.randn(4, 64, device=device)
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        quantize_per_token(torch.ones(4, 64, dtype=torch.int32, device=device))
    with pytest.raises(ValueError, match="non-empty last dimension"):
        quantize_per_token(torch.ones(4, 0, device=device))
    with pytest.raises(ValueError, match="group_size must be one of"):
        quantize_per_group(x, 48)
    with pytest.raises(ValueError, match="scale_dtype"):
        quantize_per_group(x, 32, torch.bfloat16)
    with pytest.raises(ValueError, match="2-D"):
        quantize_per_channel(torch.randn(64, device=device))
    q, scale = quantize_per_group(x, 32)
    with pytest.raises(ValueError, match="does not match"):
        dequantize(q, scale, 64)
    with pytest.raises(ValueError, match="int8"):
        dequantize(q.float(), scale, 32)
    with pytest.raises(ValueError, match="multiple of 32"):
        to_q8_0_blocks(q[:, :40], scale)
    with pytest.raises(ValueError, match="q must be a torch.int8 tensor of shape"):
        qmod.launch_quantize_rows(x, q=torch.empty(4, 63, dtype=torch.int8, device=device))
