#!/usr/bin/env python
"""Time trainforge's int8 kernels against torch eager, torch.compile, torch._int_mm and bf16 cuBLAS.

One run, one card. Every case is checked for correctness before it is timed, and times are
GPU times from triton.testing.do_bench (CUDA events, L2 flushed between repetitions), reported
as p20/p50/p80 in ms. pytest-benchmark is not used here: it times with host clocks, which at
0.02 ms (W8A16 at M = 1) measure the launch overhead rather than the kernel.

Cases (issue 5):
  quantize  per-token int8 quantize of 8192x28672 bf16: ours, torch eager, torch.compile, and a
            device-to-device copy (the measured copy bandwidth is the limit)
  w8a8      (M, N, K) = 8192^3, 4096^3, 2048x28672x8192 and M in {1, 16, 32, 128} with
            N = K = 8192: ours (pre-quantized activations, and with dynamic quantization),
            torch._int_mm alone and with a compiled epilogue, bf16 cuBLAS (F.linear)
  w8a16     M in {1, 16}, N = K = 8192: ours, bf16 cuBLAS, torch.compile(dequant + matmul)

Writes a JSON with keys benchmark, card, versions, date, metrics, ratios (speedups and the
quantize fraction of copy bandwidth; > 1 means ours is faster) to --out, or $OUT/bench_kernels.json,
or ./bench_kernels.json. Exits 0 with a message when there is no CUDA device (3 with
--require-cuda), 1 when a correctness check fails, 2 on bad arguments.

    python benchmarks/gpu/bench_kernels.py [--out PATH] [--only quantize,w8a8,w8a16] [--quick]

--dry-run runs the script's own logic on a CPU (tiny shapes, Triton interpreter, host clock):
its numbers mean nothing; it exists so that the script can be checked where there is no GPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

SECTIONS = ("quantize", "w8a8", "w8a16")
QUANTIZE_SHAPE = (8192, 28672)
W8A8_SHAPES = [(8192, 8192, 8192), (4096, 4096, 4096), (2048, 28672, 8192)] + [
    (m, 8192, 8192) for m in (1, 16, 32, 128)
]  # (M, N, K)
W8A16_SHAPES = [(1, 8192, 8192), (16, 8192, 8192)]  # (M, N, K)
# --quick: a smoke run of every code path in well under a minute.
QUICK = {
    "quantize": (4096, 8192),
    "w8a8": [(4096, 4096, 4096), (16, 8192, 8192)],
    "w8a16": [(1, 8192, 8192)],
}
DRY_RUN = {
    "quantize": (64, 1000),
    "w8a8": [(64, 64, 128), (1, 64, 128), (17, 64, 128)],
    "w8a16": [(1, 64, 256), (16, 64, 256)],
}
GOALS = {  # from issue 5
    "quantize_fraction_of_copy_bw": 0.90,
    "w8a8_vs_bf16_cublas_8192": 1.6,
    "w8a16_vs_bf16_cublas_m1": 2.0,
    "w8a16_vs_bf16_cublas_m16": 1.5,
}
# Correctness bounds checked before timing: ||out - ref|| / ||ref|| against float64 on the
# same int8 operands (bf16 output: unit roundoff 2^-8), as in tests/kernels.
BF16_RTOL = 8e-3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file (or existing directory) to write; default $OUT/bench_kernels.json")  # fmt: skip
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections among {', '.join(SECTIONS)}")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small shapes: a smoke run")
    parser.add_argument("--list", action="store_true", help="print the cases and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the script on a CPU: tiny shapes, interpreter, meaningless times")  # fmt: skip
    parser.add_argument("--require-cuda", action="store_true",
                        help="exit 3 instead of 0 when there is no CUDA device")  # fmt: skip
    parser.add_argument("--warmup-ms", type=int, default=25)
    parser.add_argument("--rep-ms", type=int, default=100)
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        parser.error(f"--only: unknown section(s) {unknown}; choose among {', '.join(SECTIONS)}")
    args.sections = sections
    if args.warmup_ms <= 0 or args.rep_ms <= 0:
        parser.error("--warmup-ms and --rep-ms must be positive")
    return args


def output_path(arg: Path | None) -> Path:
    if arg is not None:
        return arg / "bench_kernels.json" if arg.is_dir() else arg
    out_dir = os.environ.get("OUT")
    return Path(out_dir) / "bench_kernels.json" if out_dir else Path("bench_kernels.json")


def cases(args: argparse.Namespace) -> dict:
    if args.dry_run:
        return {s: DRY_RUN[s] for s in args.sections}
    if args.quick:
        return {s: QUICK[s] for s in args.sections}
    full = {"quantize": QUANTIZE_SHAPE, "w8a8": W8A8_SHAPES, "w8a16": W8A16_SHAPES}
    return {s: full[s] for s in args.sections}


# ------------------------------------------------------------------------------------------
# GPU part (imports torch/triton/trainforge only once a CUDA device is known to exist)
# ------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, warmup_ms: int, rep_ms: int, device: str) -> None:
        from triton.testing import do_bench

        self._do_bench = do_bench
        self.warmup_ms, self.rep_ms = warmup_ms, rep_ms
        self.device = device

    def time(self, fn) -> dict:
        if self.device != "cuda":  # --dry-run: host clock, 3 calls
            import time

            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
            p20, p50, p80 = sorted(times)
        else:
            p20, p50, p80 = self._do_bench(
                fn, warmup=self.warmup_ms, rep=self.rep_ms, quantiles=[0.2, 0.5, 0.8]
            )
        return {"p20_ms": p20, "p50_ms": p50, "p80_ms": p80}


def _rel_err(out, ref) -> float:
    ref = ref.double()
    return ((out.double() - ref).norm() / ref.norm()).item()


def _best_config(kernel) -> str | None:
    cfg = getattr(kernel, "best_config", None)
    return None if cfg is None else str(cfg)


def bench_quantize(bench: Bench, shape, failures: list[str]) -> dict:
    import torch

    from trainforge.kernels import quantize_per_token, reference

    m, k = shape
    x = torch.randn(m, k, device=bench.device, dtype=torch.bfloat16)
    q, s = quantize_per_token(x)
    rq, rs = reference.quantize_rowwise(x)
    bit_exact = bool(torch.equal(q, rq) and torch.equal(s, rs))
    if not bit_exact:
        failures.append(f"quantize {m}x{k}: not bit-exact with the reference")
    compiled = torch.compile(reference.quantize_rowwise, dynamic=False)
    compiled(x)
    dst = torch.empty_like(x)
    quant_bytes = x.numel() * (2 + 1) + m * 4  # read bf16, write int8 + fp32 scales
    copy_bytes = 2 * x.numel() * x.element_size()  # read + write
    result = {
        "shape": [m, k],
        "dtype": "bfloat16",
        "bit_exact": bit_exact,
        "bytes_moved_quantize": quant_bytes,
        "ours": bench.time(lambda: quantize_per_token(x)),
        "torch_eager": bench.time(lambda: reference.quantize_rowwise(x)),
        "torch_compile": bench.time(lambda: compiled(x)),
        "copy_d2d": bench.time(lambda: dst.copy_(x)),
    }
    copy_bw = copy_bytes / (result["copy_d2d"]["p50_ms"] * 1e-3)
    ours_bw = quant_bytes / (result["ours"]["p50_ms"] * 1e-3)
    result["copy_bandwidth_GBps"] = copy_bw / 1e9
    result["ours_bandwidth_GBps"] = ours_bw / 1e9
    result["limit_ms_at_copy_bw"] = quant_bytes / copy_bw * 1e3
    result["fraction_of_copy_bw"] = ours_bw / copy_bw
    return result


def bench_w8a8(bench: Bench, shape, failures: list[str]) -> dict:
    import torch
    import torch.nn.functional as F

    from trainforge.kernels import quantize_per_channel, quantize_per_token, w8a8_dynamic_matmul, w8a8_matmul
    from trainforge.kernels.w8a8_matmul import _w8a8_matmul_kernel

    m, n, k = shape
    x = torch.randn(m, k, device=bench.device, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=bench.device, dtype=torch.bfloat16) * 0.05
    bias = torch.randn(n, device=bench.device, dtype=torch.bfloat16)
    a_q, a_s = quantize_per_token(x)
    w_q, w_s = quantize_per_channel(w)

    out = w8a8_matmul(a_q, a_s, w_q, w_s, bias, torch.bfloat16)
    rows = slice(0, min(m, 256))  # float64 check on up to 256 rows
    ref = (a_q[rows].double() @ w_q.double().T) * a_s[rows].double()[:, None] * w_s.double()[None, :]
    ref += bias.double()[None, :]
    err = _rel_err(out[rows], ref)
    if not err < BF16_RTOL:
        failures.append(f"w8a8 {shape}: relative error {err:.2e} >= {BF16_RTOL}")

    def int_mm_epilogue(a_q, a_s, w_q, w_s, bias):
        acc = torch._int_mm(a_q, w_q.T)  # (M, N) int32; cuBLASLt wants (K, N) column-major
        return (acc.float() * a_s[:, None] * w_s[None, :] + bias.float()).to(torch.bfloat16)

    flops = 2 * m * n * k
    result = {
        "shape_mnk": [m, n, k],
        "rel_err_vs_float64": err,
        "ours": bench.time(lambda: w8a8_matmul(a_q, a_s, w_q, w_s, bias, torch.bfloat16)),
        "ours_config": _best_config(_w8a8_matmul_kernel),
        "ours_dynamic_quant": bench.time(lambda: w8a8_dynamic_matmul(x, w_q, w_s, bias)),
        "bf16_cublas": bench.time(lambda: F.linear(x, w, bias)),
    }
    try:  # torch._int_mm needs M > 16 and K, N multiples of 8
        torch._int_mm(a_q, w_q.T)
        compiled = torch.compile(int_mm_epilogue, dynamic=False)
        compiled(a_q, a_s, w_q, w_s, bias)
        result["torch_int_mm"] = bench.time(lambda: torch._int_mm(a_q, w_q.T))
        result["torch_int_mm_compiled_epilogue"] = bench.time(lambda: compiled(a_q, a_s, w_q, w_s, bias))
    except RuntimeError as exc:
        result["torch_int_mm"] = f"unsupported: {str(exc).splitlines()[0]}"
    for name in ("ours", "ours_dynamic_quant", "bf16_cublas", "torch_int_mm"):
        if isinstance(result.get(name), dict):
            result[name]["TOPS"] = flops / (result[name]["p50_ms"] * 1e-3) / 1e12
    return result


def bench_w8a16(bench: Bench, shape, failures: list[str]) -> dict:
    import torch
    import torch.nn.functional as F

    from trainforge.kernels import quantize_per_channel, w8a16_matmul
    from trainforge.kernels.w8a16_matmul import _w8a16_matmul_kernel, choose_split_k

    m, n, k = shape
    x = torch.randn(m, k, device=bench.device, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=bench.device, dtype=torch.bfloat16) * 0.05
    w_q, w_s = quantize_per_channel(w)

    out = w8a16_matmul(x, w_q, w_s)
    ref = (x.double() @ w_q.double().T) * w_s.double()[None, :]
    err = _rel_err(out, ref)
    if not err < BF16_RTOL:
        failures.append(f"w8a16 {shape}: relative error {err:.2e} >= {BF16_RTOL}")

    def dequant_matmul(x, w_q, w_s):
        return F.linear(x, w_q.to(torch.bfloat16) * w_s[:, None].to(torch.bfloat16))

    compiled = torch.compile(dequant_matmul, dynamic=False)
    compiled(x, w_q, w_s)
    result = {
        "shape_mnk": [m, n, k],
        "rel_err_vs_float64": err,
        "split_k": choose_split_k(m, n, k, x.device),
        "ours": bench.time(lambda: w8a16_matmul(x, w_q, w_s)),
        "ours_config": _best_config(_w8a16_matmul_kernel),
        "bf16_cublas": bench.time(lambda: F.linear(x, w)),
        "torch_compile_dequant_matmul": bench.time(lambda: compiled(x, w_q, w_s)),
    }
    weight_bytes = n * k  # int8: the bytes that bound decode
    result["ours_weight_bandwidth_GBps"] = weight_bytes / (result["ours"]["p50_ms"] * 1e-3) / 1e9
    return result


def _speedup(metrics: dict, section: str, key: str) -> float | None:
    case = metrics.get(section, {}).get(key)
    if not case:
        return None
    return case["bf16_cublas"]["p50_ms"] / case["ours"]["p50_ms"]


def run(args: argparse.Namespace) -> int:
    import torch
    import triton

    if not args.dry_run and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("bench_kernels: unset TRITON_INTERPRET: the benchmark times compiled kernels", file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else "cuda"
    bench = Bench(args.warmup_ms, args.rep_ms, device)
    plan = cases(args)
    failures: list[str] = []
    metrics: dict = {}
    if "quantize" in plan:
        metrics["quantize"] = bench_quantize(bench, plan["quantize"], failures)
        torch.cuda.empty_cache()
    for section, fn in (("w8a8", bench_w8a8), ("w8a16", bench_w8a16)):
        if section in plan:
            metrics[section] = {}
            for shape in plan[section]:
                metrics[section]["x".join(map(str, shape))] = fn(bench, shape, failures)
                torch.cuda.empty_cache()

    ratios = {
        "quantize_fraction_of_copy_bw": metrics.get("quantize", {}).get("fraction_of_copy_bw"),
        "w8a8_vs_bf16_cublas_8192": _speedup(metrics, "w8a8", "8192x8192x8192"),
        "w8a16_vs_bf16_cublas_m1": _speedup(metrics, "w8a16", "1x8192x8192"),
        "w8a16_vs_bf16_cublas_m16": _speedup(metrics, "w8a16", "16x8192x8192"),
    }
    report = {
        "benchmark": "trainforge.kernels int8 (issue 5)",
        "card": "cpu (--dry-run, Triton interpreter)" if args.dry_run else torch.cuda.get_device_name(),
        "versions": {"torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "dry_run": args.dry_run,
        "timing": "host clock, 3 calls (dry run: meaningless)" if args.dry_run else
        f"triton.testing.do_bench, warmup {args.warmup_ms} ms, rep {args.rep_ms} ms, p20/p50/p80",
        "metrics": metrics,
        "ratios": ratios,
        "ratio_definitions": "w8a8/w8a16: bf16 cuBLAS p50 / ours p50 (>1: ours faster); "
        "quantize: ours effective bandwidth (3 bytes/element) / measured d2d copy bandwidth",
        "goals": GOALS,
        "goals_met": {k: (v is not None and v >= GOALS[k]) for k, v in ratios.items()},
        "correctness_failures": failures,
    }
    path = output_path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    _print_summary(report)
    print(f"bench_kernels: wrote {path}")
    if failures:
        print("bench_kernels: correctness FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


def _print_summary(report: dict) -> None:
    print(f"{report['card']}  torch {report['versions']['torch']}  triton {report['versions']['triton']}")
    for section, data in report["metrics"].items():
        items = [("", data)] if section == "quantize" else list(data.items())
        for shape, case in items:
            for name, t in case.items():
                if isinstance(t, dict) and "p50_ms" in t:
                    print(f"  {section:8s} {shape or 'x'.join(map(str, case['shape'])):16s} {name:32s} "
                          f"p20 {t['p20_ms']:.4f}  p50 {t['p50_ms']:.4f}  p80 {t['p80_ms']:.4f} ms")  # fmt: skip
    for k, v in report["ratios"].items():
        print(f"  ratio {k:32s} {'n/a' if v is None else f'{v:.3f}'}  (goal {GOALS[k]})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for section, shapes in cases(args).items():
            print(f"{section}: {shapes}")
        return 0
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before trainforge.kernels is imported
        return run(args)
    import torch

    if not torch.cuda.is_available():
        print("bench_kernels: SKIPPED: no CUDA device (torch.cuda.is_available() is False); "
              "nothing was measured", file=sys.stderr)  # fmt: skip
        return 3 if args.require_cuda else 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
