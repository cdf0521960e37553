"""Int8Linear: both modes, 2-D and 3-D inputs, each dtype, state_dict round trip, CPU fallback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from trainforge.kernels import MODES, Int8Linear, dispatch, reference

FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Against float64 of the same int8 weight (and, for w8a8, the same int8 activations).
RTOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}
QUANT_RTOL = 3e-2  # against the unquantized float layer (~0.8% measured on Gaussian data)


def _expected(module: Int8Linear, x: torch.Tensor) -> torch.Tensor:
    """float64 result of what the module must compute, (..., N)."""
    x2 = x.reshape(-1, module.in_features)
    w = module.weight.double() * module.weight_scale.double()[:, None]  # (N, K)
    if module.mode == "w8a16":
        a = x2.double()
    else:
        a_q, a_scale = reference.quantize_rowwise(x2)
        a = a_q.double() * a_scale.double()[:, None]
    out = a @ w.T
    if module.bias is not None:
        out = out + module.bias.double()
    return out.reshape(*x.shape[:-1], module.out_features)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("mode", MODES)
def test_matches_float64_on_3d_input(mode, dtype, device, rel_err):
    linear = nn.Linear(300, 129, device=device).to(dtype)
    module = Int8Linear.from_linear(linear, mode)
    assert module.weight.dtype == torch.int8 and module.weight.shape == (129, 300)
    assert module.weight_scale.dtype == torch.float32 and module.weight_scale.shape == (129,)
    assert module.bias.dtype == dtype

    x = torch.randn(2, 7, 300, device=device).to(dtype)
    y = module(x)
    assert y.shape == (2, 7, 129) and y.dtype == dtype
    assert rel_err(y, _expected(module, x)) < RTOL[dtype]
    float_ref = x.double() @ linear.weight.detach().double().T + linear.bias.detach().double()
    assert rel_err(y, float_ref) < QUANT_RTOL


@pytest.mark.parametrize("mode", MODES)
def test_2d_input_without_bias(mode, device, rel_err):
    linear = nn.Linear(257, 64, bias=False, device=device)
    module = Int8Linear.from_linear(linear, mode)
    assert module.bias is None
    x = torch.randn(16, 257, device=device)
    y = module(x)
    assert y.shape == (16, 64)
    assert rel_err(y, _expected(module, x)) < RTOL[torch.float32]


@pytest.mark.parametrize("mode", MODES)
def test_reference_backend_gives_the_same_result(mode, device, monkeypatch, rel_err):
    # What a CPU user without the interpreter gets: the pure-torch path.
    linear = nn.Linear(200, 96, device=device)
    module = Int8Linear.from_linear(linear, mode)
    x = torch.randn(3, 5, 200, device=device)
    y_kernel = module(x)
    monkeypatch.setenv(dispatch.BACKEND_ENV, "reference")
    assert not dispatch.use_triton(x)
    y_ref = module(x)
    assert rel_err(y_ref, y_kernel) < 1e-5
    # Weights quantized through the reference are bit-identical to the kernel's.
    assert torch.equal(Int8Linear.from_linear(linear, mode).weight, module.weight)


def test_state_dict_round_trip(device):
    module = Int8Linear.from_linear(nn.Linear(128, 32, device=device), "w8a16")
    state = module.state_dict()
    assert set(state) == {"weight", "weight_scale", "bias"}
    assert state["weight"].dtype == torch.int8
    fresh = Int8Linear(128, 32, mode="w8a16", device=device)
    fresh.load_state_dict(state)
    x = torch.randn(4, 128, device=device)
    assert torch.equal(fresh(x), module(x))
    assert "mode=w8a16" in repr(fresh)


def test_bad_arguments_raise_value_error(device):
    with pytest.raises(ValueError, match="mode must be one of"):
        Int8Linear.from_linear(nn.Linear(8, 8), "w4a16")
    with pytest.raises(ValueError, match="needs an nn.Linear"):
        Int8Linear.from_linear(nn.Conv1d(8, 8, 1), "w8a16")
    with pytest.raises(ValueError, match="positive"):
        Int8Linear(0, 8)
    module = Int8Linear(64, 16, device=device)
    with pytest.raises(ValueError, match="last dimension 64"):
        module(torch.randn(2, 63, device=device))


_PLAIN_CPU_USER = textwrap.dedent(
    """
    import torch
    from torch import nn
    from trainforge.kernels import Int8Linear, dispatch

    assert not dispatch.INTERPRETING
    torch.manual_seed(0)
    linear = nn.Linear(96, 40)
    x = torch.randn(2, 3, 96)
    ref = x.double() @ linear.weight.detach().double().T + linear.bias.detach().double()
    for mode in ("w8a8_dynamic", "w8a16"):
        y = Int8Linear.from_linear(linear, mode)(x)
        err = ((y.double() - ref).norm() / ref.norm()).item()
        assert y.shape == (2, 3, 40) and err < 3e-2, (mode, err)
    print("ok")
    """
)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only user path")
def test_plain_cpu_user_without_interpreter_gets_the_reference():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _PLAIN_CPU_USER], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
