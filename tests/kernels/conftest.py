"""Kernel test setup: Triton's interpreter on CPU-only machines, the device, seeds, tolerances.

Without a CUDA device the kernels run under the Triton interpreter (TRITON_INTERPRET=1), which
must be set before trainforge.kernels is imported: triton.jit picks interpreter or compiler when
it decorates a kernel. With a CUDA device the same tests run the compiled kernels natively.
"""

from __future__ import annotations

import os
import zlib

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from trainforge.kernels import dispatch  # noqa: E402  (after TRITON_INTERPRET is set)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

if DEVICE == "cpu" and not dispatch.INTERPRETING:
    raise pytest.UsageError(
        "trainforge.kernels was imported before tests/kernels/conftest.py could set "
        "TRITON_INTERPRET=1, so its kernels are compiled for a GPU this machine does not have. "
        "Run with TRITON_INTERPRET=1 in the environment."
    )


@pytest.fixture
def device() -> str:
    return DEVICE


@pytest.fixture(autouse=True)
def _fresh_seed(request) -> None:
    """Fresh random inputs per test, reproducible from the test id."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def rel_err():
    def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
        ref = ref.double()
        return ((out.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()

    return _rel_err


@pytest.fixture
def bf16_store_is_exact() -> bool:
    """False under the interpreter: it truncates fp32 -> bf16 stores (1 ulp off)."""
    return not dispatch.INTERPRETING
