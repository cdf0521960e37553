"""W8A16 weight-only matmul for small batches (decode, M <= 16): int8 weights, float activations.

    out (M, N) = x (M, K) @ (w_q (N, K) * w_scale (N,)[:, None]).T + bias (N,)    in x.dtype

At M = 1 the cost is reading the weight: 8192x8192 is 64 MiB in int8 against 128 MiB in bf16, so
the kernel streams int8 tiles, converts them to x's dtype in registers (exact: |q| <= 127) and
feeds tl.dot with an fp32 accumulator. The per-channel scale factors out of the sum over K and is
applied once per output element in the epilogue, not once per weight element.

Split-K: at M <= 16 the (M, N) output has only N / BLOCK_N tiles (128 for N = 8192, BLOCK_N = 64),
about one per SM on an H100 (132 SMs), too few to keep enough loads in flight. The K range is cut
into SPLIT_K slices of whole BLOCK_K tiles; each program writes its fp32 partial sum to a
(SPLIT_K, M, N) workspace and a second small kernel adds the slices in a fixed order (so results
are deterministic, unlike atomics), applies scale and bias and casts. With SPLIT_K = 1 the GEMM
kernel writes the output directly. Any M works (the grid has an M axis); the configs aim at M <= 16.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import reference
from .dispatch import INTERPRETING, use_triton
from .quantize import FLOAT_DTYPES
from .w8a8_matmul import _check_out_dtype, _check_weight

# BLOCK_N the split-K heuristic assumes when it counts output tiles.
_SPLIT_K_REF_BLOCK_N = 64
# Each split keeps at least this many K elements, so that a program amortises its setup and
# its epilogue store (4 * BLOCK_M * BLOCK_N bytes) over >= 8 KiB of weight per output column block.
_MIN_K_PER_SPLIT = 512
_MAX_SPLIT_K = 16


def _configs() -> list[triton.Config]:
    """Autotune configs.

    Provenance: chosen by reasoning about bytes in flight for a memory-bound GEMV (a 64x256 int8
    tile is 16 KiB; 3-4 stages keep ~50-64 KiB per program in flight), not taken from a reference
    set and not yet tuned on a card: no GPU in the session that wrote this.
    """
    if INTERPRETING:
        return [triton.Config({"BLOCK_N": 64, "BLOCK_K": 128})]
    c = triton.Config
    return [
        c({"BLOCK_N": 64, "BLOCK_K": 256}, num_stages=4, num_warps=4),
        c({"BLOCK_N": 32, "BLOCK_K": 256}, num_stages=4, num_warps=4),
        c({"BLOCK_N": 128, "BLOCK_K": 128}, num_stages=4, num_warps=4),
        c({"BLOCK_N": 64, "BLOCK_K": 512}, num_stages=3, num_warps=8),
        c({"BLOCK_N": 32, "BLOCK_K": 512}, num_stages=3, num_warps=4),
        c({"BLOCK_N": 128, "BLOCK_K": 256}, num_stages=3, num_warps=8),
    ]


@triton.autotune(configs=_configs(), key=["M_BUCKET", "N", "K", "SPLIT_K"])
@triton.jit
def _w8a16_matmul_kernel(
    # pointers
    x_ptr,  # (M, K) fp32/fp16/bf16 activations
    w_ptr,  # (N, K) int8 weight, nn.Linear layout
    w_scale_ptr,  # (N,) fp32, contiguous
    bias_ptr,  # (N,) any float, contiguous; unused without HAS_BIAS
    out_ptr,  # (M, N) x.dtype; written when SPLIT_K == 1
    ws_ptr,  # (SPLIT_K, M, N) fp32 partial sums, contiguous; written when SPLIT_K > 1
    # sizes
    M,
    N,
    K,
    M_BUCKET,  # next power of two of M (capped): the autotune key
    # strides, in elements
    stride_xm,
    stride_xk,
    stride_wn,
    stride_wk,
    stride_om,
    stride_on,
    # meta-parameters
    HAS_BIAS: tl.constexpr,
    SPLIT_K: tl.constexpr,
    DOT_F32: tl.constexpr,  # upcast tiles to fp32 before tl.dot (bf16 under the interpreter)
    INPUT_PRECISION: tl.constexpr,  # "ieee" for fp32 x: tf32 would drop 13 mantissa bits of x
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M  # (BLOCK_M,) wrapped: no load mask on M
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N  # (BLOCK_N,)
    # This split's K range: tiles_per_split whole BLOCK_K tiles starting at k_start.
    tiles_per_split = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K)
    offs_k = pid_k * tiles_per_split * BLOCK_K + tl.arange(0, BLOCK_K)  # (BLOCK_K,)
    x_ptrs = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm + offs_k[None, :] * stride_xk
    w_ptrs = w_ptr + offs_n.to(tl.int64)[None, :] * stride_wn + offs_k[:, None] * stride_wk

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for t in range(0, tiles_per_split):
        k_ok = (offs_k + t * BLOCK_K) < K  # the last tile of K (and empty trailing splits)
        x = tl.load(x_ptrs, mask=k_ok[None, :], other=0.0)  # (BLOCK_M, BLOCK_K)
        w = tl.load(w_ptrs, mask=k_ok[:, None], other=0)  # (BLOCK_K, BLOCK_N) int8
        # Dequantize in registers (the scale waits for the epilogue). Under the interpreter bf16
        # is stored as raw uint16 and int8 -> bf16 casts and bf16 tl.dot are wrong (Triton
        # issue #11584), so both tiles go to fp32 there; the products are exact either way.
        if DOT_F32:
            x = x.to(tl.float32)
            w = w.to(tl.float32)
        else:
            w = w.to(x.dtype)
        acc = tl.dot(x, w, acc, input_precision=INPUT_PRECISION)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    if SPLIT_K == 1:
        out = acc * tl.load(w_scale_ptr + offs_n)[None, :]
        if HAS_BIAS:
            out += tl.load(bias_ptr + offs_n).to(tl.float32)[None, :]
        out_ptrs = out_ptr + rows.to(tl.int64)[:, None] * stride_om + cols[None, :] * stride_on
        tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        ws_ptrs = ws_ptr + (pid_k * M + rows.to(tl.int64))[:, None] * N + cols[None, :]
        tl.store(ws_ptrs, acc, mask=mask)


@triton.jit
def _splitk_reduce_kernel(
    # pointers
    ws_ptr,  # (SPLIT_K, M, N) fp32 partial sums, contiguous
    w_scale_ptr,  # (N,) fp32
    bias_ptr,  # (N,) any float; unused without HAS_BIAS
    out_ptr,  # (M, N) output dtype
    # sizes
    M,
    N,
    # strides, in elements
    stride_om,
    stride_on,
    # meta-parameters
    HAS_BIAS: tl.constexpr,
    SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)[:, None]  # (BLOCK_M, 1)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    mask = (rows < M) & (cols[None, :] < N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for s in range(0, SPLIT_K):  # fixed order: bitwise reproducible
        acc += tl.load(ws_ptr + (s * M + rows) * N + cols[None, :], mask=mask, other=0.0)
    out = acc * tl.load(w_scale_ptr + cols, mask=cols < N, other=0.0)[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    out_ptrs = out_ptr + rows * stride_om + cols[None, :] * stride_on
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------------------
# Input checks
# ------------------------------------------------------------------------------------------
def _check_w8a16(x, w_q, w_scale, bias) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype not in FLOAT_DTYPES or x.dim() != 2:
        raise ValueError(
            f"x must be a 2-D float32/float16/bfloat16 (M, K) tensor, got "
            f"{getattr(x, 'dtype', None)} {tuple(getattr(x, 'shape', ()))}"
        )
    if x.shape[1] == 0:
        raise ValueError("K must be positive")
    _check_weight(w_q, w_scale, bias, x.shape[1], x.device)
    _check_out_dtype(x.dtype)


# ------------------------------------------------------------------------------------------
# Launcher
# ------------------------------------------------------------------------------------------
def _block_m(m: int) -> int:
    return 16 if m <= 16 else 32 if m <= 32 else 64  # tl.dot needs >= 16


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # the interpreter: a few splits, so that the split-K path is exercised


def choose_split_k(m: int, n: int, k: int, device: torch.device) -> int:
    """Split K until there are ~4 programs per SM, keeping >= 512 K-elements per split.

    H100 (132 SMs), M=1, N=K=8192: 128 output tiles -> SPLIT_K = 4, 512 programs.
    """
    tiles = triton.cdiv(m, _block_m(m)) * triton.cdiv(n, _SPLIT_K_REF_BLOCK_N)
    wanted = max(1, (4 * _sm_count(device)) // tiles)
    split = 1
    while split * 2 <= min(wanted, _MAX_SPLIT_K, max(1, k // _MIN_K_PER_SPLIT)):
        split *= 2
    return split


def launch_w8a16_matmul(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor | None = None,
    split_k: int = 0,
) -> torch.Tensor:
    """Triton W8A16 matmul -> (M, N) in x.dtype. ``split_k`` 0 picks it with choose_split_k."""
    _check_w8a16(x, w_q, w_scale, bias)
    m, k = x.shape
    n = w_q.shape[0]
    if out is None:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if tuple(out.shape) != (m, n) or out.dtype != x.dtype or out.device != x.device:
        raise ValueError(f"out must be a {x.dtype} tensor of shape ({m}, {n}) on {x.device}")
    if not isinstance(split_k, int) or not 0 <= split_k <= _MAX_SPLIT_K:
        raise ValueError(f"split_k must be an int in [0, {_MAX_SPLIT_K}], got {split_k!r}")
    if m == 0 or n == 0:
        return out
    split = split_k or choose_split_k(m, n, k, x.device)
    w_scale = w_scale.contiguous()
    bias_arg = bias.contiguous() if bias is not None else w_scale  # placeholder, never read
    # Without a split the workspace pointer is never used; pass the output as a placeholder.
    ws = torch.empty((split, m, n), dtype=torch.float32, device=x.device) if split > 1 else out
    block_m = _block_m(m)

    def grid(meta):
        return (triton.cdiv(n, meta["BLOCK_N"]), split, triton.cdiv(m, block_m))

    _w8a16_matmul_kernel[grid](
        x, w_q, w_scale, bias_arg, out, ws,
        m, n, k, min(triton.next_power_of_2(m), 4096),
        x.stride(0), x.stride(1), w_q.stride(0), w_q.stride(1), out.stride(0), out.stride(1),
        HAS_BIAS=bias is not None, SPLIT_K=split,
        DOT_F32=INTERPRETING and x.dtype == torch.bfloat16,  # interpreter: no bf16 arithmetic
        INPUT_PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        BLOCK_M=block_m,
    )  # fmt: skip
    if split > 1:
        block_n = min(triton.next_power_of_2(n), 256)
        _splitk_reduce_kernel[(triton.cdiv(m, block_m), triton.cdiv(n, block_n))](
            ws, w_scale, bias_arg, out,
            m, n, out.stride(0), out.stride(1),
            HAS_BIAS=bias is not None, SPLIT_K=split, BLOCK_M=block_m, BLOCK_N=block_n,
        )  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------
# torch.library custom op (dispatch rule: trainforge.kernels.dispatch)
# ------------------------------------------------------------------------------------------
@torch.library.custom_op("trainforge::w8a16_matmul", mutates_args=())
def _w8a16_matmul_op(
    x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    _check_w8a16(x, w_q, w_scale, bias)
    if use_triton(x):
        return launch_w8a16_matmul(x, w_q, w_scale, bias)
    return reference.w8a16_matmul(x, w_q, w_scale, bias).contiguous()


@_w8a16_matmul_op.register_fake
def _(x, w_q, w_scale, bias):
    _check_w8a16(x, w_q, w_scale, bias)
    return x.new_empty((x.shape[0], w_q.shape[0]))


def w8a16_matmul(
    x: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """x (M, K) float @ (w_q (N, K) int8 * w_scale (N,) fp32).T + bias (N,) -> (M, N) in x.dtype."""
    return torch.ops.trainforge.w8a16_matmul(x, w_q, w_scale, bias)
