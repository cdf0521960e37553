"""pytest-benchmark suite of trainforge's int8 kernels against torch eager, torch.compile,
torch._int_mm and bf16 cuBLAS: the cases of bench_kernels.py, one test per (case, implementation).

Cases, shapes, the correctness checks and the implementations come from bench_kernels.py (BUILDERS,
CANDIDATES, plan); nothing is redefined here. Each benchmark group is one case ("w8a8 8192x8192x8192"),
so ours and the baselines sit side by side in pytest-benchmark's table.

Timing. A host clock cannot see when a GPU kernel ends, so each round is `iterations` back-to-back
launches followed by one torch.cuda.synchronize(), and pytest-benchmark divides the round's host
time by `iterations`: launches are pipelined and the result is the GPU time per op wherever a launch
costs less host time than the kernel takes (at 0.02 ms, W8A16 at M = 1, it is the launch cost
instead). `iterations` is chosen from a first do_bench measurement so that a round lasts ~5 ms.
Each test also stores triton.testing.do_bench's p20/p50/p80 (CUDA events, L2 flushed) in
extra_info["do_bench"]: the numbers bench_kernels.py reports. conftest.py turns both into the
issue-5 ratios under the JSON's "trainforge" key.

    pytest benchmarks/gpu/test_kernels_benchmark.py --benchmark-only --benchmark-json=kernels.json \
        -o addopts="" --import-mode=importlib --confcutdir=benchmarks/gpu
    TRAINFORGE_BENCH_QUICK=1 ...        # bench_kernels.QUICK's shapes: a smoke run
    TRAINFORGE_BENCH_DRY_RUN=1 ...      # on a CPU: bench_kernels.DRY_RUN's shapes, Triton interpreter,
                                        # 2 rounds of 2; proves the code path, numbers mean nothing

Skipped (with the reason) without a CUDA device unless TRAINFORGE_BENCH_DRY_RUN=1. The project's
`pytest` never collects this folder (testpaths = tests) and its addopts carry --benchmark-skip.
"""

from __future__ import annotations

import math
import os

import bench_kernels as bk  # this folder is on sys.path: conftest.py
import pytest
import torch

DRY_RUN = bk.env_flag(bk.PYTEST_DRY_RUN_ENV)
QUICK = bk.env_flag(bk.PYTEST_QUICK_ENV)
CUDA = torch.cuda.is_available()
DEVICE = "cpu" if DRY_RUN else "cuda"
PLAN = bk.plan(dry_run=DRY_RUN, quick=QUICK)
ROUNDS = 2 if DRY_RUN else 10
ROUND_TARGET_MS = 5.0  # a round of back-to-back launches lasts about this long
MAX_ITERATIONS = 1000
DO_BENCH_WARMUP_MS, DO_BENCH_REP_MS = 25, 100  # bench_kernels.py's defaults

pytestmark = [
    pytest.mark.skipif(not DRY_RUN and not CUDA,
                       reason="no CUDA device (torch.cuda.is_available() is False); "
                              f"{bk.PYTEST_DRY_RUN_ENV}=1 runs the suite's code path on a CPU"),  # fmt: skip
    pytest.mark.skipif(not DRY_RUN and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"),
                       reason="TRITON_INTERPRET is set: the suite times compiled kernels"),  # fmt: skip
]

PARAMS = [
    pytest.param(section, shape, impl, id=f"{section}-{bk.shape_key(shape)}-{impl}")
    for section in bk.SECTIONS
    if section in PLAN
    for shape in bk.plan_shapes(PLAN, section)
    for impl in bk.CANDIDATES[section]
]

# One case at a time (tests run in PARAMS order, case by case): the 8192x28672 quantize and
# 2048x28672x8192 inputs are ~0.5 GB each, so a case is dropped when the next one is built.
_current: dict[tuple, bk.Case | BaseException] = {}
_bench: list[bk.Bench] = []


def _case(section: str, shape: tuple[int, ...]) -> bk.Case:
    key = (section, shape)
    if key not in _current:
        _current.clear()
        if CUDA:
            torch.cuda.empty_cache()
        try:
            _current[key] = bk.BUILDERS[section](shape, DEVICE)
        except Exception as exc:  # noqa: BLE001 - every test of the case reports the same failure
            _current[key] = exc
    case = _current[key]
    if isinstance(case, BaseException):
        raise RuntimeError(f"building case {section} {bk.shape_key(shape)} failed: {case!r}") from case
    return case


def _timer() -> bk.Bench:
    if not _bench:
        _bench.append(bk.Bench(DO_BENCH_WARMUP_MS, DO_BENCH_REP_MS, DEVICE))
    return _bench[0]


class Pipelined:
    """The target pytest-benchmark calls `iterations` times a round: launches the op, and
    synchronizes after every `every`-th launch, i.e. once at the end of each round."""

    def __init__(self, fn, every: int, sync) -> None:
        self.fn, self.every, self.sync = fn, every, sync
        self.calls = 0

    def __call__(self) -> None:
        self.fn()
        self.calls += 1
        if self.calls % self.every == 0:
            self.sync()


def iterations_for(p50_ms: float) -> int:
    if DRY_RUN:
        return 2
    return max(1, min(MAX_ITERATIONS, math.ceil(ROUND_TARGET_MS / max(p50_ms, 1e-4))))


def _kernel_path() -> str:
    from trainforge.kernels import dispatch

    if dispatch.backend() == "reference":
        return "reference (TRAINFORGE_KERNEL_BACKEND=reference)"
    if DEVICE == "cuda":
        return "triton (compiled)"
    return "triton (interpreter)" if dispatch.INTERPRETING else "reference (CPU, no interpreter)"


@pytest.mark.parametrize(("section", "shape", "impl"), PARAMS)
def test_kernel(benchmark, section: str, shape: tuple[int, ...], impl: str) -> None:
    benchmark.group = f"{section} {bk.shape_key(shape)}"
    case = _case(section, shape)
    if impl in case.unsupported:
        pytest.skip(f"{impl} at {case.key}: {case.unsupported[impl]}")
    fn = case.candidates[impl]
    timer = _timer()
    do_bench = timer.time(fn)  # p20/p50/p80 ms, as bench_kernels.py reports them
    every = iterations_for(do_bench["p50_ms"])
    timer.sync()
    benchmark.pedantic(Pipelined(fn, every, timer.sync), rounds=ROUNDS, iterations=every, warmup_rounds=1)
    timer.sync()  # pedantic calls the target once more after the rounds, for its result
    host_ms = benchmark.stats.stats.median * 1e3 if benchmark.stats is not None else None
    benchmark.extra_info.update({
        "suite": bk.PYTEST_SUITE,
        "section": section,
        "case": case.key,
        "shape": list(shape),
        "impl": impl,
        "card": bk.card(DRY_RUN),
        "dry_run": DRY_RUN,
        "kernel_path": _kernel_path(),
        "do_bench": do_bench,
        "host_median_ms_per_op": host_ms,
        "host_over_do_bench_p50": host_ms / do_bench["p50_ms"] if host_ms and do_bench["p50_ms"] else None,
        "case_info": case.info,
        "unsupported": case.unsupported,
        "correctness_failures": case.failures,
    })  # fmt: skip
    if impl.startswith("ours") and case.failures:
        pytest.fail("correctness: " + "; ".join(case.failures))
