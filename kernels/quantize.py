"""Symmetric absmax int8 quantize and dequantize: per row (token / channel), per group, back.

Layouts (x is (..., K), the reduction dim of a matmul is the last one):
- per row:   q (..., K) int8, scale (...) fp32. For activations a row is a token ("per-token");
             for an nn.Linear weight (N, K) a row is an output channel ("per-channel").
- per group: q (..., K) int8, scale (..., ceil(K / g)) fp32 or fp16, g in {32, 64, 128}. g = 32
             with an fp16 scale is GGUF's Q8_0 block (value = d * q); ``to_q8_0_blocks`` packs it.
- dequantize: q * scale in bf16/fp16/fp32, for both layouts.

Numerics, identical to trainforge.kernels.reference (tests check torch.equal, ties included):
scale = absmax / 127 in fp32 with IEEE division (``tl.math.div_rn``: Triton's plain ``/`` on a
GPU is the approximate ``div.full.f32``, up to 2 ulp off, which would break bit-exactness), cast to
the scale dtype; a stored scale of 0 becomes 1.0; q = rint(clamp(x / scale, -127, 127)) with
round-half-to-even done by the 1.5 * 2^23 trick, which is exact in fp32 and runs the same under
the interpreter (libdevice.rint does not exist there) and on the GPU.

Each kernel reads x once: a row of up to 32768 elements (28672 for the 8192x28672 shape of the
issue) is held in registers, absmax'ed and quantized in the same program. Longer rows take a
two-loop path that reads them twice.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import reference
from .dispatch import INTERPRETING, use_triton

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
GROUP_SIZES = (32, 64, 128)
GROUP_SCALE_DTYPES = (torch.float32, torch.float16)
Q8_0_BLOCK_BYTES = 34  # GGUF block_q8_0: { ggml_half d; int8_t qs[32]; }

# Elements one program holds. On a GPU 4096 is 32 fp32 values per thread at 4 warps, enough
# loads in flight per SM without spilling. Under the interpreter every program instance costs
# Python overhead while numpy ops on a whole tile are cheap, so tiles are 16x larger (the 37x1000
# quantize is then one program, ~5 ms).
_TILE_ELEMS = 65536 if INTERPRETING else 4096
# Rows up to this length are quantized from registers in one read (module-level so that tests
# can lower it and cover the two-read path on small shapes).
ONE_PASS_MAX_COLS = 32768

_F32_MAX = 3.4028234663852886e38
_F16_MAX = 65504.0


# ------------------------------------------------------------------------------------------
# Triton kernels
# ------------------------------------------------------------------------------------------
@triton.jit
def _quantize_values(x, scale):
    """x fp32 (any shape), scale fp32 broadcastable, nonzero -> int8 in [-127, 127]."""
    y = tl.math.div_rn(x, scale)
    y = tl.minimum(tl.maximum(y, -127.0), 127.0)
    # Round half to even: after adding 1.5 * 2^23, fp32 spacing is exactly 1.0, so the add itself
    # rounds y to the nearest integer, ties to even (IEEE default); subtracting gives it back
    # exactly. Valid for |y| < 2^22, and |y| <= 127 here. No fast-math reassociation is applied
    # by Triton, so the pair is not folded away.
    y = (y + 12582912.0) - 12582912.0
    return y.to(tl.int8)


@triton.jit
def _row_scale(absmax):
    """absmax fp32 (BLOCK_R,) -> fp32 scale with the zero guard."""
    scale = tl.math.div_rn(absmax, 127.0)
    return tl.where(scale == 0.0, 1.0, scale)


@triton.jit
def _quantize_rows_kernel(
    # pointers
    x_ptr,  # (R, K) fp32/fp16/bf16, any strides
    q_ptr,  # (R, K) int8, rows of stride_qr, unit column stride
    scale_ptr,  # (R,) fp32
    # sizes
    n_rows,
    n_cols,
    # strides, in elements
    stride_xr,
    stride_xc,
    stride_qr,
    # meta-parameters
    BLOCK_R: tl.constexpr,  # rows per program
    BLOCK_C: tl.constexpr,  # columns per tile; >= n_cols when ONE_PASS
    ONE_PASS: tl.constexpr,  # whole row in registers: x is read once
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)  # (BLOCK_R,)
    row_ok = rows < n_rows
    # int64 offsets: R * stride can pass 2^31 (65536 rows of 32768 is exactly 2^31).
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xr  # (BLOCK_R, 1)
    q_rows = q_ptr + rows.to(tl.int64)[:, None] * stride_qr
    cols = tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    if ONE_PASS:
        mask = row_ok[:, None] & (cols[None, :] < n_cols)  # (BLOCK_R, BLOCK_C)
        x = tl.load(x_rows + cols[None, :] * stride_xc, mask=mask, other=0.0).to(tl.float32)
        scale = _row_scale(tl.max(tl.abs(x), axis=1))  # (BLOCK_R,)
        tl.store(scale_ptr + rows, scale, mask=row_ok)
        tl.store(q_rows + cols[None, :], _quantize_values(x, scale[:, None]), mask=mask)
    else:
        absmax = tl.zeros((BLOCK_R,), dtype=tl.float32)
        for c0 in range(0, n_cols, BLOCK_C):
            c = c0 + cols
            mask = row_ok[:, None] & (c[None, :] < n_cols)
            x = tl.load(x_rows + c[None, :] * stride_xc, mask=mask, other=0.0).to(tl.float32)
            absmax = tl.maximum(absmax, tl.max(tl.abs(x), axis=1))
        scale = _row_scale(absmax)
        tl.store(scale_ptr + rows, scale, mask=row_ok)
        for c0 in range(0, n_cols, BLOCK_C):
            c = c0 + cols
            mask = row_ok[:, None] & (c[None, :] < n_cols)
            x = tl.load(x_rows + c[None, :] * stride_xc, mask=mask, other=0.0).to(tl.float32)
            tl.store(q_rows + c[None, :], _quantize_values(x, scale[:, None]), mask=mask)


@triton.jit
def _quantize_groups_kernel(
    # pointers
    x_ptr,  # (R, K) fp32/fp16/bf16, any strides
    q_ptr,  # (R, K) int8, unit column stride
    scale_ptr,  # (R, n_groups) fp32 or fp16, unit group stride
    # sizes
    n_rows,
    n_cols,
    n_groups,
    # strides, in elements
    stride_xr,
    stride_xc,
    stride_qr,
    stride_sr,
    # meta-parameters
    SCALE_MAX: tl.constexpr,  # largest finite value of the scale dtype
    GROUP: tl.constexpr,  # elements per group: 32, 64 or 128
    BLOCK_R: tl.constexpr,  # rows per program
    BLOCK_G: tl.constexpr,  # groups per program
):
    pid_r = tl.program_id(0)
    pid_g = tl.program_id(1)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)  # (BLOCK_R,)
    groups = pid_g * BLOCK_G + tl.arange(0, BLOCK_G)  # (BLOCK_G,)
    r2 = rows.to(tl.int64)[:, None]  # (BLOCK_R, 1)
    r3 = r2[:, :, None]  # (BLOCK_R, 1, 1)
    cols = groups[None, :, None] * GROUP + tl.arange(0, GROUP)[None, None, :]  # (1, BLOCK_G, GROUP)
    mask = (r3 < n_rows) & (cols < n_cols)  # a partial last group reads zeros: absmax unchanged
    x = tl.load(x_ptr + r3 * stride_xr + cols * stride_xc, mask=mask, other=0.0).to(tl.float32)
    absmax = tl.max(tl.abs(x), axis=2)  # (BLOCK_R, BLOCK_G)
    scale = tl.minimum(tl.math.div_rn(absmax, 127.0), SCALE_MAX)
    # Quantize with the scale as stored (fp16 rounding included) so that dequantize reproduces
    # exactly the values q was rounded against.
    scale = scale.to(scale_ptr.dtype.element_ty).to(tl.float32)
    scale = tl.where(scale == 0.0, 1.0, scale)
    scale_mask = (rows[:, None] < n_rows) & (groups[None, :] < n_groups)
    tl.store(scale_ptr + r2 * stride_sr + groups[None, :], scale, mask=scale_mask)
    q = _quantize_values(x, scale[:, :, None])
    tl.store(q_ptr + r3 * stride_qr + cols, q, mask=mask)


@triton.jit
def _dequantize_kernel(
    # pointers
    q_ptr,  # (R, K) int8, any strides
    scale_ptr,  # (R,) or (R, n_groups), any float dtype
    out_ptr,  # (R, K) bf16/fp16/fp32, unit column stride
    # sizes
    n_rows,
    n_cols,
    # strides, in elements; stride_sg = 0 for one scale per row
    stride_qr,
    stride_qc,
    stride_sr,
    stride_sg,
    stride_or,
    # meta-parameters
    GROUP: tl.constexpr,  # elements per scale along K (1 with stride_sg = 0 for per-row)
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    rows = (pid_r * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)[:, None]  # (BLOCK_R, 1)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]  # (1, BLOCK_C)
    mask = (rows < n_rows) & (cols < n_cols)
    q = tl.load(q_ptr + rows * stride_qr + cols * stride_qc, mask=mask, other=0).to(tl.float32)
    # One scale per GROUP columns: the gather hits the same few addresses, served from L1.
    s = tl.load(scale_ptr + rows * stride_sr + (cols // GROUP) * stride_sg, mask=mask, other=1.0)
    out = q * s.to(tl.float32)
    tl.store(out_ptr + rows * stride_or + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------------------
# Input checks (shared by launchers, reference fallback and fake implementations)
# ------------------------------------------------------------------------------------------
def _check_float(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32, float16 or bfloat16, got {x.dtype}")
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"{name} must have a non-empty last dimension, got shape {tuple(x.shape)}")


def _check_group(group_size: int, scale_dtype: torch.dtype) -> None:
    if group_size not in GROUP_SIZES:
        raise ValueError(f"group_size must be one of {GROUP_SIZES}, got {group_size}")
    if scale_dtype not in GROUP_SCALE_DTYPES:
        raise ValueError(f"scale_dtype must be torch.float32 or torch.float16, got {scale_dtype}")


def _check_out(name: str, t: torch.Tensor, shape, dtype: torch.dtype, device: torch.device) -> None:
    if tuple(t.shape) != tuple(shape) or t.dtype != dtype or t.device != device:
        raise ValueError(
            f"{name} must be a {dtype} tensor of shape {tuple(shape)} on {device}, "
            f"got {t.dtype} {tuple(t.shape)} on {t.device}"
        )
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def _n_groups(k: int, group_size: int) -> int:
    return -(-k // group_size)


def _check_dequantize(q: torch.Tensor, scale: torch.Tensor, group_size: int, out_dtype) -> None:
    if not isinstance(q, torch.Tensor) or q.dtype != torch.int8:
        raise ValueError(f"q must be an int8 tensor, got {getattr(q, 'dtype', type(q).__name__)}")
    if q.dim() < 1 or q.shape[-1] == 0:
        raise ValueError(f"q must have a non-empty last dimension, got shape {tuple(q.shape)}")
    if not isinstance(scale, torch.Tensor) or not scale.dtype.is_floating_point:
        raise ValueError("scale must be a floating-point tensor")
    if scale.device != q.device:
        raise ValueError(f"scale is on {scale.device} but q is on {q.device}")
    if out_dtype not in FLOAT_DTYPES:
        raise ValueError(f"out_dtype must be float32, float16 or bfloat16, got {out_dtype}")
    if group_size == 0:
        expected = tuple(q.shape[:-1])
    elif group_size in GROUP_SIZES:
        expected = tuple(q.shape[:-1]) + (_n_groups(q.shape[-1], group_size),)
    else:
        raise ValueError(f"group_size must be 0 (one scale per row) or one of {GROUP_SIZES}")
    if tuple(scale.shape) != expected:
        raise ValueError(
            f"scale of shape {tuple(scale.shape)} does not match q {tuple(q.shape)} with "
            f"group_size={group_size}: expected {expected}"
        )


# ------------------------------------------------------------------------------------------
# Launchers (Triton only; the ops below choose between these and the reference)
# ------------------------------------------------------------------------------------------
def _rows_view(x: torch.Tensor) -> torch.Tensor:
    """(..., K) -> (R, K); a 2-D input keeps its strides (the kernels take any)."""
    return x if x.dim() == 2 else x.reshape(-1, x.shape[-1])


def _num_warps(tile_elems: int) -> int:
    # 32 elements per thread: 4 warps for 4096, up to 32 warps for a 32768-element row.
    return max(4, min(32, tile_elems // 1024))


def launch_quantize_rows(
    x: torch.Tensor, q: torch.Tensor | None = None, scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton per-row quantize of x (..., K) into q (..., K) int8 and scale (...) fp32.

    ``q`` and ``scale`` may be given (contiguous, right shape) to write into them.
    """
    _check_float("x", x)
    if q is None:
        q = torch.empty(x.shape, dtype=torch.int8, device=x.device)
    if scale is None:
        scale = torch.empty(x.shape[:-1], dtype=torch.float32, device=x.device)
    _check_out("q", q, x.shape, torch.int8, x.device)
    _check_out("scale", scale, x.shape[:-1], torch.float32, x.device)
    x2 = _rows_view(x)
    n_rows, n_cols = x2.shape
    if n_rows == 0:
        return q, scale
    one_pass = n_cols <= ONE_PASS_MAX_COLS
    block_c = triton.next_power_of_2(n_cols) if one_pass else min(_TILE_ELEMS, 8192)
    block_r = max(1, min(triton.next_power_of_2(n_rows), _TILE_ELEMS // block_c))
    grid = (triton.cdiv(n_rows, block_r),)
    _quantize_rows_kernel[grid](
        x2, q, scale,
        n_rows, n_cols,
        x2.stride(0), x2.stride(1), n_cols,
        BLOCK_R=block_r, BLOCK_C=block_c, ONE_PASS=one_pass,
        num_warps=_num_warps(block_r * block_c),
    )  # fmt: skip
    return q, scale


def launch_quantize_groups(
    x: torch.Tensor,
    group_size: int,
    scale_dtype: torch.dtype,
    q: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton per-group quantize: x (..., K) -> q (..., K) int8, scale (..., ceil(K/g))."""
    _check_float("x", x)
    _check_group(group_size, scale_dtype)
    n_cols = x.shape[-1]
    n_groups = _n_groups(n_cols, group_size)
    if q is None:
        q = torch.empty(x.shape, dtype=torch.int8, device=x.device)
    if scale is None:
        scale = torch.empty((*x.shape[:-1], n_groups), dtype=scale_dtype, device=x.device)
    _check_out("q", q, x.shape, torch.int8, x.device)
    _check_out("scale", scale, (*x.shape[:-1], n_groups), scale_dtype, x.device)
    x2 = _rows_view(x)
    n_rows = x2.shape[0]
    if n_rows == 0:
        return q, scale
    block_g = min(triton.next_power_of_2(n_groups), max(1, _TILE_ELEMS // group_size))
    block_r = max(1, min(triton.next_power_of_2(n_rows), _TILE_ELEMS // (block_g * group_size)))
    grid = (triton.cdiv(n_rows, block_r), triton.cdiv(n_groups, block_g))
    _quantize_groups_kernel[grid](
        x2, q, scale,
        n_rows, n_cols, n_groups,
        x2.stride(0), x2.stride(1), n_cols, n_groups,
        SCALE_MAX=_F16_MAX if scale_dtype == torch.float16 else _F32_MAX,
        GROUP=group_size, BLOCK_R=block_r, BLOCK_G=block_g,
        num_warps=_num_warps(block_r * block_g * group_size),
    )  # fmt: skip
    return q, scale


def launch_dequantize(
    q: torch.Tensor,
    scale: torch.Tensor,
    group_size: int,
    out_dtype: torch.dtype,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triton dequantize: q (..., K) int8 * scale -> (..., K) ``out_dtype``."""
    _check_dequantize(q, scale, group_size, out_dtype)
    if out is None:
        out = torch.empty(q.shape, dtype=out_dtype, device=q.device)
    _check_out("out", out, q.shape, out_dtype, q.device)
    q2 = _rows_view(q)
    n_rows, n_cols = q2.shape
    if n_rows == 0:
        return out
    if group_size == 0:
        s2 = scale.reshape(n_rows)
        stride_sr, stride_sg, group = s2.stride(0), 0, 1
    else:
        s2 = scale.reshape(n_rows, scale.shape[-1])
        stride_sr, stride_sg, group = s2.stride(0), s2.stride(1), group_size
    block_c = min(triton.next_power_of_2(n_cols), _TILE_ELEMS)
    block_r = max(1, min(triton.next_power_of_2(n_rows), _TILE_ELEMS // block_c))
    grid = (triton.cdiv(n_rows, block_r), triton.cdiv(n_cols, block_c))
    _dequantize_kernel[grid](
        q2, s2, out,
        n_rows, n_cols,
        q2.stride(0), q2.stride(1), stride_sr, stride_sg, n_cols,
        GROUP=group, BLOCK_R=block_r, BLOCK_C=block_c,
        num_warps=_num_warps(block_r * block_c),
    )  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------
# torch.library custom ops (dispatch rule: trainforge.kernels.dispatch)
# ------------------------------------------------------------------------------------------
@torch.library.custom_op("trainforge::quantize_per_token", mutates_args=())
def _quantize_per_token_op(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _check_float("x", x)
    if use_triton(x):
        return launch_quantize_rows(x)
    q, scale = reference.quantize_rowwise(x)
    return q.contiguous(), scale.contiguous()


@_quantize_per_token_op.register_fake
def _(x):
    _check_float("x", x)
    return x.new_empty(x.shape, dtype=torch.int8), x.new_empty(x.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("trainforge::quantize_per_group", mutates_args=())
def _quantize_per_group_op(
    x: torch.Tensor, group_size: int, scale_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_float("x", x)
    _check_group(group_size, scale_dtype)
    if use_triton(x):
        return launch_quantize_groups(x, group_size, scale_dtype)
    q, scale = reference.quantize_per_group(x, group_size, scale_dtype)
    return q.contiguous(), scale.contiguous()


@_quantize_per_group_op.register_fake
def _(x, group_size, scale_dtype):
    _check_float("x", x)
    _check_group(group_size, scale_dtype)
    n_groups = _n_groups(x.shape[-1], group_size)
    return (
        x.new_empty(x.shape, dtype=torch.int8),
        x.new_empty((*x.shape[:-1], n_groups), dtype=scale_dtype),
    )


@torch.library.custom_op("trainforge::dequantize", mutates_args=())
def _dequantize_op(
    q: torch.Tensor, scale: torch.Tensor, group_size: int, out_dtype: torch.dtype
) -> torch.Tensor:
    _check_dequantize(q, scale, group_size, out_dtype)
    if use_triton(q):
        return launch_dequantize(q, scale, group_size, out_dtype)
    return reference.dequantize(q, scale, group_size, out_dtype).contiguous()


@_dequantize_op.register_fake
def _(q, scale, group_size, out_dtype):
    _check_dequantize(q, scale, group_size, out_dtype)
    return q.new_empty(q.shape, dtype=out_dtype)


# ------------------------------------------------------------------------------------------
# Public functions
# ------------------------------------------------------------------------------------------
def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations x (..., K) -> q (..., K) int8, scale (...) fp32, one scale per token."""
    return torch.ops.trainforge.quantize_per_token(x)


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.Linear weight (N, K) -> q (N, K) int8, scale (N,) fp32, one scale per output channel.

    The same computation as :func:`quantize_per_token`: an output channel is a row of the weight.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(
            f"weight must be a 2-D (out_features, in_features) tensor, "
            f"got shape {tuple(getattr(weight, 'shape', ()))}"
        )
    return torch.ops.trainforge.quantize_per_token(weight)


def quantize_per_group(
    x: torch.Tensor, group_size: int = 32, scale_dtype: torch.dtype = torch.float16
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., K) -> q (..., K) int8, scale (..., ceil(K / group_size)) in ``scale_dtype``.

    The defaults (32, fp16) are GGUF's Q8_0 layout. A last group shorter than group_size is
    quantized on its own elements.
    """
    return torch.ops.trainforge.quantize_per_group(x, group_size, scale_dtype)


def dequantize(
    q: torch.Tensor,
    scale: torch.Tensor,
    group_size: int = 0,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """q (..., K) int8 times its scale -> (..., K) ``out_dtype``.

    ``group_size=0``: scale (...) holds one value per row (per-token / per-channel);
    otherwise scale (..., ceil(K / group_size)) holds one value per group.
    """
    return torch.ops.trainforge.dequantize(q, scale, group_size, out_dtype)


def to_q8_0_blocks(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Pack per-group (32, fp16) output into GGUF Q8_0 bytes: (..., K) -> (..., K / 32 * 34) uint8.

    Each 34-byte block is the fp16 scale ``d`` (little-endian, as on x86 and ARM hosts) followed by
    its 32 int8 values, as ggml's ``block_q8_0``. K must be a multiple of 32.
    """
    if q.dtype != torch.int8 or q.dim() < 1 or q.shape[-1] % 32 != 0 or q.shape[-1] == 0:
        raise ValueError(f"q must be int8 with a last dimension that is a multiple of 32, got "
                         f"{q.dtype} {tuple(q.shape)}")  # fmt: skip
    n_blocks = q.shape[-1] // 32
    if scale.dtype != torch.float16 or tuple(scale.shape) != (*q.shape[:-1], n_blocks):
        raise ValueError(
            f"scale must be float16 of shape {(*q.shape[:-1], n_blocks)}, "
            f"got {scale.dtype} {tuple(scale.shape)}"
        )
    d = scale.contiguous().view(torch.uint8).reshape(*q.shape[:-1], n_blocks, 2)
    qs = q.contiguous().view(torch.uint8).reshape(*q.shape[:-1], n_blocks, 32)
    return torch.cat([d, qs], dim=-1).reshape(*q.shape[:-1], n_blocks * Q8_0_BLOCK_BYTES)
