"""W8A8 GEMM: int8 activations x int8 weights -> int32 on tensor cores, scales fused in the epilogue.

    out (M, N) = (a_q (M, K) @ w_q (N, K).T) * a_scale (M,)[:, None] * w_scale (N,)[None, :] + bias (N,)

a_q is per-token quantized, w_q per-output-channel (both from trainforge.kernels.quantize); the
scales are fp32; out is bf16, fp16 or fp32. The int32 accumulator is exact for K < 133_144
(127^2 * K < 2^31), so the only rounding is the fp32 epilogue and the final cast.

``w8a8_dynamic_matmul`` takes the activations in floating point: it runs the one-read per-token
quantize kernel (x read once, int8 + scales written, 1/2 of bf16's bytes) and then this GEMM.
Quantizing inside the GEMM's prologue instead would redo the divide/clamp/round/convert of every
activation for every N-block: N / BLOCK_N = 32 to 64 times at N = 8192, i.e. 2e9 to 4e9 element
quantizations at 8192^3, where the separate kernel moves 8192^2 * 3 bytes (~50 us at 4 TB/s).
Estimated, not yet measured on a card.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import reference
from .dispatch import INTERPRETING, use_triton
from .quantize import FLOAT_DTYPES, launch_quantize_rows


def _configs() -> list[triton.Config]:
    """Autotune configs.

    Provenance: the Triton 03-matrix-multiplication tutorial's CUDA set — its 1-byte-input (fp8)
    configs with BLOCK_K = 128 (int8 is 1 byte too: 128 int8 = one 128-byte line per row), plus
    its 128x256x64 config. Not yet tuned on a card: no GPU in the session that wrote this.
    Under the interpreter a single mid-size config keeps the program count (and the time) down.
    """
    if INTERPRETING:
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 4})]
    c = triton.Config
    return [
        c({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 128, "GROUP_M": 8}, num_stages=3, num_warps=8),
        c({"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 8}, num_stages=3, num_warps=8),
        c({"BLOCK_M": 256, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 8}, num_stages=4, num_warps=4),
        c({"BLOCK_M": 64, "BLOCK_N": 256, "BLOCK_K": 128, "GROUP_M": 8}, num_stages=4, num_warps=4),
        c({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 8}, num_stages=4, num_warps=4),
        c({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=4, num_warps=4),
        c({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=4, num_warps=4),
        c({"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=4, num_warps=4),
        c({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=3, num_warps=8),
        # Small M (decode-sized batches): tl.dot needs BLOCK_M >= 16.
        c({"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 256, "GROUP_M": 1}, num_stages=4, num_warps=4),
        c({"BLOCK_M": 32, "BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 1}, num_stages=4, num_warps=4),
    ]


@triton.autotune(configs=_configs(), key=["M_BUCKET", "N", "K"])
@triton.jit
def _w8a8_matmul_kernel(
    # pointers
    a_ptr,  # (M, K) int8 activations
    w_ptr,  # (N, K) int8 weight, nn.Linear layout
    a_scale_ptr,  # (M,) fp32, contiguous
    w_scale_ptr,  # (N,) fp32, contiguous
    bias_ptr,  # (N,) any float, contiguous; unused without HAS_BIAS
    out_ptr,  # (M, N) bf16/fp16/fp32
    # sizes
    M,
    N,
    K,
    M_BUCKET,  # next power of two of M (capped): the autotune key, so M=37 and M=40 share a tuning
    # strides, in elements
    stride_am,
    stride_ak,
    stride_wn,
    stride_wk,
    stride_om,
    stride_on,
    # meta-parameters
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,  # M-blocks walked together so that their W tiles stay in L2
):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    # Row/column indices wrap (% M, % N) so that loads need no M/N mask; the wrapped rows are
    # computed but never stored.
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M  # (BLOCK_M,)
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N  # (BLOCK_N,)
    offs_k = tl.arange(0, BLOCK_K)  # (BLOCK_K,)
    a_ptrs = a_ptr + offs_m.to(tl.int64)[:, None] * stride_am + offs_k[None, :] * stride_ak
    w_ptrs = w_ptr + offs_n.to(tl.int64)[None, :] * stride_wn + offs_k[:, None] * stride_wk

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K  # K need not be a multiple of BLOCK_K: zeros add nothing
        a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0)  # (BLOCK_M, BLOCK_K) int8
        w = tl.load(w_ptrs, mask=offs_k[:, None] < k_left, other=0)  # (BLOCK_K, BLOCK_N) int8
        acc = tl.dot(a, w, acc, out_dtype=tl.int32)
        a_ptrs += BLOCK_K * stride_ak
        w_ptrs += BLOCK_K * stride_wk

    # Epilogue: int32 -> fp32, per-token x per-channel scales, bias, cast. One multiply-add per
    # output element; the (M, N) fp32 never goes to memory.
    a_s = tl.load(a_scale_ptr + offs_m)  # (BLOCK_M,)
    w_s = tl.load(w_scale_ptr + offs_n)  # (BLOCK_N,)
    out = acc.to(tl.float32) * a_s[:, None] * w_s[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_n).to(tl.float32)[None, :]

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    out_ptrs = out_ptr + rows.to(tl.int64)[:, None] * stride_om + cols[None, :] * stride_on
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------------------
# Input checks
# ------------------------------------------------------------------------------------------
def _check_weight(w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None, k: int,
                  device: torch.device) -> None:  # fmt: skip
    if not isinstance(w_q, torch.Tensor) or w_q.dtype != torch.int8 or w_q.dim() != 2:
        raise ValueError(
            f"w_q must be a 2-D int8 (N, K) tensor, got {getattr(w_q, 'dtype', None)} "
            f"{tuple(getattr(w_q, 'shape', ()))}"
        )
    n = w_q.shape[0]
    if w_q.shape[1] != k:
        raise ValueError(f"inner dimensions differ: activations have K={k}, w_q is {tuple(w_q.shape)}")
    if w_q.device != device:
        raise ValueError(f"w_q is on {w_q.device} but the activations are on {device}")
    if not isinstance(w_scale, torch.Tensor) or w_scale.dtype != torch.float32 or tuple(w_scale.shape) != (n,):
        raise ValueError(
            f"w_scale must be a float32 tensor of shape ({n},), got "
            f"{getattr(w_scale, 'dtype', None)} {tuple(getattr(w_scale, 'shape', ()))}"
        )
    if w_scale.device != device:
        raise ValueError(f"w_scale is on {w_scale.device} but the activations are on {device}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.dtype not in FLOAT_DTYPES or tuple(bias.shape) != (n,):
            raise ValueError(
                f"bias must be a float tensor of shape ({n},), got "
                f"{getattr(bias, 'dtype', None)} {tuple(getattr(bias, 'shape', ()))}"
            )
        if bias.device != device:
            raise ValueError(f"bias is on {bias.device} but the activations are on {device}")


def _check_out_dtype(out_dtype: torch.dtype) -> None:
    if out_dtype not in FLOAT_DTYPES:
        raise ValueError(f"out_dtype must be float32, float16 or bfloat16, got {out_dtype}")


def _check_w8a8(a_q, a_scale, w_q, w_scale, bias, out_dtype) -> None:
    if not isinstance(a_q, torch.Tensor) or a_q.dtype != torch.int8 or a_q.dim() != 2:
        raise ValueError(
            f"a_q must be a 2-D int8 (M, K) tensor, got {getattr(a_q, 'dtype', None)} "
            f"{tuple(getattr(a_q, 'shape', ()))}"
        )
    m, k = a_q.shape
    if k == 0:
        raise ValueError("K must be positive")
    if not isinstance(a_scale, torch.Tensor) or a_scale.dtype != torch.float32 or tuple(a_scale.shape) != (m,):
        raise ValueError(
            f"a_scale must be a float32 tensor of shape ({m},), got "
            f"{getattr(a_scale, 'dtype', None)} {tuple(getattr(a_scale, 'shape', ()))}"
        )
    if a_scale.device != a_q.device:
        raise ValueError(f"a_scale is on {a_scale.device} but a_q is on {a_q.device}")
    _check_weight(w_q, w_scale, bias, k, a_q.device)
    _check_out_dtype(out_dtype)


def _check_dynamic(x, w_q, w_scale, bias, out_dtype) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype not in FLOAT_DTYPES or x.dim() != 2:
        raise ValueError(
            f"x must be a 2-D float32/float16/bfloat16 (M, K) tensor, got "
            f"{getattr(x, 'dtype', None)} {tuple(getattr(x, 'shape', ()))}"
        )
    if x.shape[1] == 0:
        raise ValueError("K must be positive")
    _check_weight(w_q, w_scale, bias, x.shape[1], x.device)
    _check_out_dtype(out_dtype)


# ------------------------------------------------------------------------------------------
# Launchers
# ------------------------------------------------------------------------------------------
def launch_w8a8_matmul(
    a_q: torch.Tensor,
    a_scale: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triton W8A8 GEMM; ``out`` (M, N) ``out_dtype`` may be given to write into."""
    _check_w8a8(a_q, a_scale, w_q, w_scale, bias, out_dtype)
    m, k = a_q.shape
    n = w_q.shape[0]
    if out is None:
        out = torch.empty((m, n), dtype=out_dtype, device=a_q.device)
    if tuple(out.shape) != (m, n) or out.dtype != out_dtype or out.device != a_q.device:
        raise ValueError(f"out must be a {out_dtype} tensor of shape ({m}, {n}) on {a_q.device}")
    if m == 0 or n == 0:
        return out
    a_scale = a_scale.contiguous()
    w_scale = w_scale.contiguous()
    bias_arg = bias.contiguous() if bias is not None else w_scale  # placeholder pointer, never read

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    _w8a8_matmul_kernel[grid](
        a_q, w_q, a_scale, w_scale, bias_arg, out,
        m, n, k, min(triton.next_power_of_2(m), 4096),
        a_q.stride(0), a_q.stride(1), w_q.stride(0), w_q.stride(1), out.stride(0), out.stride(1),
        HAS_BIAS=bias is not None,
    )  # fmt: skip
    return out


def launch_w8a8_dynamic_matmul(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token quantize x (M, K) (one read of x), then the W8A8 GEMM into (M, N) ``out_dtype``."""
    _check_dynamic(x, w_q, w_scale, bias, out_dtype)
    a_q, a_scale = launch_quantize_rows(x)
    return launch_w8a8_matmul(a_q, a_scale, w_q, w_scale, bias, out_dtype, out=out)


# ------------------------------------------------------------------------------------------
# torch.library custom ops (dispatch rule: trainforge.kernels.dispatch)
# ------------------------------------------------------------------------------------------
@torch.library.custom_op("trainforge::w8a8_matmul", mutates_args=())
def _w8a8_matmul_op(
    a_q: torch.Tensor,
    a_scale: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    _check_w8a8(a_q, a_scale, w_q, w_scale, bias, out_dtype)
    if use_triton(a_q):
        return launch_w8a8_matmul(a_q, a_scale, w_q, w_scale, bias, out_dtype)
    return reference.w8a8_matmul(a_q, a_scale, w_q, w_scale, bias, out_dtype).contiguous()


@_w8a8_matmul_op.register_fake
def _(a_q, a_scale, w_q, w_scale, bias, out_dtype):
    _check_w8a8(a_q, a_scale, w_q, w_scale, bias, out_dtype)
    return a_q.new_empty((a_q.shape[0], w_q.shape[0]), dtype=out_dtype)


@torch.library.custom_op("trainforge::w8a8_dynamic_matmul", mutates_args=())
def _w8a8_dynamic_matmul_op(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    _check_dynamic(x, w_q, w_scale, bias, out_dtype)
    if use_triton(x):
        return launch_w8a8_dynamic_matmul(x, w_q, w_scale, bias, out_dtype)
    return reference.w8a8_dynamic_matmul(x, w_q, w_scale, bias, out_dtype).contiguous()


@_w8a8_dynamic_matmul_op.register_fake
def _(x, w_q, w_scale, bias, out_dtype):
    _check_dynamic(x, w_q, w_scale, bias, out_dtype)
    return x.new_empty((x.shape[0], w_q.shape[0]), dtype=out_dtype)


# ------------------------------------------------------------------------------------------
# Public functions
# ------------------------------------------------------------------------------------------
def w8a8_matmul(
    a_q: torch.Tensor,
    a_scale: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """(a_q (M,K) int8 @ w_q (N,K) int8 .T) * a_scale (M,) * w_scale (N,) + bias -> (M, N)."""
    return torch.ops.trainforge.w8a8_matmul(a_q, a_scale, w_q, w_scale, bias, out_dtype)


def w8a8_dynamic_matmul(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """x (M, K) float, quantized per token on the fly, times int8 w_q (N, K) -> (M, N).

    ``out_dtype`` defaults to x.dtype.
    """
    out_dtype = x.dtype if out_dtype is None else out_dtype
    return torch.ops.trainforge.w8a8_dynamic_matmul(x, w_q, w_scale, bias, out_dtype)
