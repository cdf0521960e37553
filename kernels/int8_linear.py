"""Int8Linear: an inference-only drop-in for nn.Linear with int8 weights.

Modes:
- "w8a8_dynamic": activations are quantized per token at each call, the GEMM runs int8 x int8
  on tensor cores (trainforge::w8a8_dynamic_matmul). For prefill and large batches.
- "w8a16": activations stay in floating point, int8 weights are converted in registers
  (trainforge::w8a16_matmul). For decode (M <= 16), where reading the weight is the cost.

State (buffers, so they follow .to(device) and land in state_dict):
    weight        (N, K) int8, symmetric per output channel
    weight_scale  (N,)   fp32
    bias          (N,)   the source layer's dtype, or absent
The output has the input's dtype. There is no backward: the ops have no autograd formula.
"""

from __future__ import annotations

import torch
from torch import nn

from .quantize import quantize_per_channel
from .w8a8_matmul import w8a8_dynamic_matmul
from .w8a16_matmul import w8a16_matmul

MODES = ("w8a8_dynamic", "w8a16")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


class Int8Linear(nn.Module):
    """y = x @ (weight * weight_scale[:, None]).T + bias, with weight stored in int8."""

    weight: torch.Tensor
    weight_scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        mode: str = "w8a8_dynamic",
        device: torch.device | str | None = None,
        bias_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        _check_mode(mode)
        if in_features <= 0 or out_features <= 0:
            raise ValueError(
                f"in_features and out_features must be positive, got {in_features}, {out_features}"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.mode = mode
        self.register_buffer(
            "weight", torch.zeros((out_features, in_features), dtype=torch.int8, device=device)
        )
        self.register_buffer(
            "weight_scale", torch.ones((out_features,), dtype=torch.float32, device=device)
        )
        if bias:
            self.register_buffer("bias", torch.zeros((out_features,), dtype=bias_dtype, device=device))
        else:
            self.bias = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, mode: str = "w8a8_dynamic") -> Int8Linear:
        """Quantize an nn.Linear's weight per output channel; the bias is kept as it is."""
        _check_mode(mode)
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
        weight = linear.weight.detach()
        if weight.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"the Linear's weight must be fp32/fp16/bf16, got {weight.dtype}")
        has_bias = linear.bias is not None
        module = cls(
            linear.in_features,
            linear.out_features,
            bias=has_bias,
            mode=mode,
            device=weight.device,
            bias_dtype=linear.bias.dtype if has_bias else torch.float32,
        )
        with torch.no_grad():
            q, scale = quantize_per_channel(weight)  # (N, K) int8, (N,) fp32
            module.weight.copy_(q)
            module.weight_scale.copy_(scale)
            if has_bias:
                module.bias.copy_(linear.bias.detach())
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"expected input with last dimension {self.in_features}, got shape {tuple(x.shape)}"
            )
        x2 = x.reshape(-1, self.in_features)  # (..., K) -> (M, K)
        if self.mode == "w8a16":
            out = w8a16_matmul(x2, self.weight, self.weight_scale, self.bias)
        else:
            out = w8a8_dynamic_matmul(x2, self.weight, self.weight_scale, self.bias, x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)  # (..., N)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, mode={self.mode}"
        )
