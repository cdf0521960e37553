"""Where each trainforge.kernels op runs: the one dispatch rule, in one place.

Rule (evaluated per call, on the first tensor argument of the op):

1. ``TRAINFORGE_KERNEL_BACKEND=reference`` in the environment -> the pure-torch reference, always.
2. the tensor is on a CUDA device                             -> the Triton kernel.
3. the tensor is on the CPU and Triton runs in interpreter
   mode (``TRITON_INTERPRET=1`` when trainforge.kernels was imported) -> the Triton kernel,
   interpreted by numpy (slow: for tests).
4. anything else (plain CPU, mps, xpu, ...)                     -> the pure-torch reference.

So a CPU user of ``Int8Linear`` gets correct results with no GPU and no interpreter, and the tests
exercise the very kernel code on a CPU. The interpreter flag is read once, at import, because
``triton.jit`` picks the interpreter or the compiler when it decorates a kernel, i.e. at import
of the kernel modules: setting ``TRITON_INTERPRET`` later changes nothing for these kernels.
"""

from __future__ import annotations

import os

import torch
import triton

BACKEND_ENV = "TRAINFORGE_KERNEL_BACKEND"
_BACKENDS = ("auto", "reference")

# Snapshot of the interpreter switch at import (see the module docstring for why).
INTERPRETING: bool = bool(triton.knobs.runtime.interpret)


def backend() -> str:
    """The backend requested through ``TRAINFORGE_KERNEL_BACKEND`` ("auto" when unset)."""
    value = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if value not in _BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={value!r} is not one of {', '.join(_BACKENDS)}")
    return value


def use_triton(tensor: torch.Tensor) -> bool:
    """True when the op on ``tensor`` runs the Triton kernel, False for the torch reference."""
    if backend() == "reference":
        return False
    if tensor.device.type == "cuda":
        return True
    return tensor.device.type == "cpu" and INTERPRETING
