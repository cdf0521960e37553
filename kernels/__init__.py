"""trainforge.kernels: int8 Triton kernels, their torch.library ops and pure-torch references.

Ops (namespace ``torch.ops.trainforge``; each has a fake/Meta implementation for torch.compile):
    quantize_per_token(x) -> (q, scale)                     per row; also per output channel
    quantize_per_group(x, group_size, scale_dtype) -> (q, scale)
    dequantize(q, scale, group_size, out_dtype) -> x
    w8a8_matmul(a_q, a_scale, w_q, w_scale, bias, out_dtype) -> out
    w8a8_dynamic_matmul(x, w_q, w_scale, bias, out_dtype) -> out
    w8a16_matmul(x, w_q, w_scale, bias) -> out

Where they run (Triton kernel or torch reference) is decided in ``trainforge.kernels.dispatch``.
Layouts, numerics and error bounds: docs/kernels.md.
"""

from . import dispatch, reference
from .int8_linear import MODES, Int8Linear
from .quantize import (
    dequantize,
    quantize_per_channel,
    quantize_per_group,
    quantize_per_token,
    to_q8_0_blocks,
)
from .w8a8_matmul import w8a8_dynamic_matmul, w8a8_matmul
from .w8a16_matmul import w8a16_matmul

__all__ = [
    "MODES",
    "Int8Linear",
    "dequantize",
    "dispatch",
    "quantize_per_channel",
    "quantize_per_group",
    "quantize_per_token",
    "reference",
    "to_q8_0_blocks",
    "w8a16_matmul",
    "w8a8_dynamic_matmul",
    "w8a8_matmul",
]
