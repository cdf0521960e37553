"""Pure-torch references for every trainforge.kernels op.

These define what the Triton kernels compute, operation by operation, so that quantization is
bit-exact between the two and the GEMMs differ only by fp32 summation order. They are also the
fallback wherever the dispatch rule (trainforge.kernels.dispatch) says Triton does not run.
Nothing here imports Triton.

Conventions shared with the kernels:
- symmetric absmax int8: scale = absmax / 127 computed in fp32 (IEEE division), then stored in the
  scale dtype; q = clamp(round_half_even(x / scale), -127, 127). -128 is never produced.
- a stored scale of 0 (an all-zero row or group, or an fp16 scale that underflowed for a group
  with absmax below ~3.8e-6) is replaced by 1.0: every q of such a group is 0, so dequantize
  gives exact zeros and no division by zero happens anywhere.
- an fp16 scale is clamped to 65504 before rounding (groups with absmax > 8.3e6 saturate at +-127
  instead of dividing by inf).
"""

from __future__ import annotations

import torch

QMAX = 127  # symmetric int8: [-127, 127]; -128 is left unused so that negation is closed.


def scale_from_absmax(absmax: torch.Tensor, scale_dtype: torch.dtype) -> torch.Tensor:
    """absmax (fp32, any shape) -> scale in ``scale_dtype`` with the zero guard applied."""
    scale = absmax.float() / QMAX
    scale = scale.clamp(max=torch.finfo(scale_dtype).max).to(scale_dtype)
    return torch.where(scale == 0, torch.ones_like(scale), scale)


def _round_clamp(xf: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    # torch.round rounds half to even, like the kernels' magic-number rounding.
    return torch.round(xf / scale).clamp(-QMAX, QMAX).to(torch.int8)


def quantize_rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., K) float -> q (..., K) int8, scale (...) fp32: one scale per row (token/channel)."""
    xf = x.float()
    scale = scale_from_absmax(xf.abs().amax(dim=-1), torch.float32)  # (...)
    return _round_clamp(xf, scale.unsqueeze(-1)), scale


def quantize_per_group(
    x: torch.Tensor, group_size: int, scale_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., K) -> q (..., K) int8, scale (..., ceil(K / group_size)) in ``scale_dtype``.

    A last, partial group (K not a multiple of group_size) is quantized on its own elements.
    """
    k = x.shape[-1]
    n_groups = -(-k // group_size)
    xf = x.float()
    padded = torch.nn.functional.pad(xf, (0, n_groups * group_size - k))  # zeros leave absmax as is
    grouped = padded.reshape(*x.shape[:-1], n_groups, group_size)  # (..., G, group_size)
    scale = scale_from_absmax(grouped.abs().amax(dim=-1), scale_dtype)  # (..., G)
    q = _round_clamp(grouped, scale.float().unsqueeze(-1))
    return q.reshape(*x.shape[:-1], n_groups * group_size)[..., :k], scale


def dequantize(
    q: torch.Tensor, scale: torch.Tensor, group_size: int, out_dtype: torch.dtype
) -> torch.Tensor:
    """q (..., K) int8 and scale (...) [group_size 0] or (..., G) -> q * scale in ``out_dtype``."""
    s = scale.float()
    if group_size == 0:
        s = s.unsqueeze(-1)
    else:
        s = s.repeat_interleave(group_size, dim=-1)[..., : q.shape[-1]]
    return (q.float() * s).to(out_dtype)


def w8a8_matmul(
    a_q: torch.Tensor,
    a_scale: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """(a_q (M,K) @ w_q (N,K).T) * a_scale[:, None] * w_scale[None, :] + bias -> (M, N)."""
    # float64 holds every int8 dot product exactly (|sum| <= 127^2 * K < 2^53), like the
    # kernel's int32 accumulator does for K < 133_000.
    acc = (a_q.double() @ w_q.double().T).float()  # (M, N)
    out = acc * a_scale.float()[:, None] * w_scale.float()[None, :]
    if bias is not None:
        out = out + bias.float()[None, :]
    return out.to(out_dtype)


def w8a8_dynamic_matmul(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """Quantize x (M, K) per token, then :func:`w8a8_matmul`."""
    a_q, a_scale = quantize_rowwise(x)
    return w8a8_matmul(a_q, a_scale, w_q, w_scale, bias, out_dtype)


def w8a16_matmul(
    x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """x (M, K) float @ (w_q * w_scale[:, None]).T + bias -> (M, N) in x.dtype.

    The per-channel scale is applied after the sum (it factors out of it), as in the kernel.
    """
    acc = x.float() @ w_q.float().T  # (M, N) fp32 accumulation
    out = acc * w_scale.float()[None, :]
    if bias is not None:
        out = out + bias.float()[None, :]
    return out.to(x.dtype)
