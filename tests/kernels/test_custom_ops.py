"""The torch.library registrations: opcheck, fake (Meta) shapes, torch.compile, dispatch rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from trainforge.kernels import Int8Linear, dispatch, reference

ops = torch.ops.trainforge


def _samples(device):
    x = torch.randn(5, 300, device=device)
    w = torch.randn(129, 300, device=device)
    a_q, a_scale = reference.quantize_rowwise(x)
    w_q, w_scale = reference.quantize_rowwise(w)
    g_q, g_scale = reference.quantize_per_group(x, 32, torch.float16)
    bias = torch.randn(129, device=device)
    return {
        "quantize_per_token": [(x,), (x.to(torch.bfloat16).reshape(3, 5, 100),)],
        "quantize_per_group": [(x, 32, torch.float16), (x.half(), 128, torch.float32)],
        "dequantize": [(a_q, a_scale, 0, torch.bfloat16), (g_q, g_scale, 32, torch.float32)],
        "w8a8_matmul": [
            (a_q, a_scale, w_q, w_scale, bias, torch.bfloat16),
            (a_q, a_scale, w_q, w_scale, None, torch.float32),
        ],
        "w8a8_dynamic_matmul": [(x.half(), w_q, w_scale, bias, torch.float16)],
        "w8a16_matmul": [(x, w_q, w_scale, bias), (x.to(torch.bfloat16), w_q, w_scale, None)],
    }


@pytest.mark.parametrize(
    "name",
    ["quantize_per_token", "quantize_per_group", "dequantize", "w8a8_matmul",
     "w8a8_dynamic_matmul", "w8a16_matmul"],
)  # fmt: skip
def test_opcheck(name, device):
    for args in _samples(device)[name]:
        torch.library.opcheck(getattr(ops, name).default, args)


def test_fake_implementations_give_shapes_and_dtypes():
    with FakeTensorMode():
        x = torch.empty(2, 7, 300, dtype=torch.bfloat16)
        q, s = ops.quantize_per_token(x)
        assert (q.shape, q.dtype, s.shape, s.dtype) == ((2, 7, 300), torch.int8, (2, 7), torch.float32)
        q, s = ops.quantize_per_group(x, 64, torch.float16)
        assert (q.shape, s.shape, s.dtype) == ((2, 7, 300), (2, 7, 5), torch.float16)
        assert ops.dequantize(q, s, 64, torch.float32).shape == (2, 7, 300)
        w_q = torch.empty(129, 300, dtype=torch.int8)
        w_s = torch.empty(129, dtype=torch.float32)
        x2 = x.reshape(14, 300)
        out = ops.w8a8_dynamic_matmul(x2, w_q, w_s, None, torch.float16)
        assert (out.shape, out.dtype) == ((14, 129), torch.float16)
        a_q = torch.empty(14, 300, dtype=torch.int8)
        out = ops.w8a8_matmul(a_q, torch.empty(14), w_q, w_s, None, torch.bfloat16)
        assert (out.shape, out.dtype) == ((14, 129), torch.bfloat16)
        out = ops.w8a16_matmul(x2, w_q, w_s, None)
        assert (out.shape, out.dtype) == ((14, 129), torch.bfloat16)
        with pytest.raises(ValueError, match="inner dimensions differ"):
            ops.w8a16_matmul(x2[:, :299], w_q, w_s, None)


@pytest.mark.parametrize("mode", ["w8a8_dynamic", "w8a16"])
def test_int8_linear_under_torch_compile(mode, device):
    # aot_eager traces through the fake implementations (fullgraph: no graph break at the ops)
    # without Inductor's code generation, which would add seconds on a CPU.
    module = Int8Linear.from_linear(nn.Linear(128, 64, device=device), mode)
    x = torch.randn(2, 3, 128, device=device)
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(x), module(x))


def test_dispatch_rule(monkeypatch, device):
    t = torch.zeros(1, device=device)
    monkeypatch.delenv(dispatch.BACKEND_ENV, raising=False)
    assert dispatch.use_triton(t) == (device == "cuda" or dispatch.INTERPRETING)
    monkeypatch.setenv(dispatch.BACKEND_ENV, "reference")
    assert not dispatch.use_triton(t)
    monkeypatch.setenv(dispatch.BACKEND_ENV, "cuda-please")
    with pytest.raises(ValueError, match="TRAINFORGE_KERNEL_BACKEND"):
        dispatch.use_triton(t)
