"""pytest set-up for the GPU benchmark suite in this folder (test_kernels_benchmark.py).

- Puts this folder on sys.path: with --import-mode=importlib pytest adds none, and the suite
  imports its cases from bench_kernels.py.
- TRAINFORGE_BENCH_DRY_RUN=1 turns Triton's interpreter on before trainforge.kernels is imported
  (triton.jit picks interpreter or compiler when it decorates a kernel), so the suite's code path
  runs on a CPU with bench_kernels.DRY_RUN's tiny shapes.
- Adds a "trainforge" object to pytest-benchmark's JSON (--benchmark-json): card, versions, the
  metrics in bench_kernels.py's layout and the issue-5 ratios, from the do_bench quantiles each
  test stores in extra_info ("ratios") and from pytest-benchmark's own host-clock medians
  ("ratios_host_clock").

run_all.sh runs the suite with --confcutdir=benchmarks/gpu, so that benchmarks/conftest.py (the
registry suite's PostgreSQL and Envoy fixtures) is not loaded on a GPU box that lacks their stack;
under `make bench` both are loaded and this file only adds to them.
"""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import bench_kernels as bk  # noqa: E402  (standard library only at import: trainforge is not loaded)

if bk.env_flag(bk.PYTEST_DRY_RUN_ENV):
    os.environ["TRITON_INTERPRET"] = "1"  # before anything imports trainforge.kernels


def kernel_report(entries: list[dict]) -> dict:
    """The "trainforge" object of the JSON from pytest-benchmark's entries of this suite."""
    cases: dict[tuple[str, str], dict] = {}
    for entry in entries:
        extra = entry["extra_info"]
        case = cases.setdefault((extra["section"], extra["case"]), {
            "info": extra["case_info"], "unsupported": extra.get("unsupported", {}), "do_bench": {}, "host": {}})
        if "do_bench" in extra:
            case["do_bench"][extra["impl"]] = extra["do_bench"]
        stats = entry.get("stats") or {}
        if stats.get("median") is not None:
            case["host"][extra["impl"]] = {"p50_ms": stats["median"] * 1e3, "min_ms": stats["min"] * 1e3,
                                           "iqr_ms": stats["iqr"] * 1e3, "rounds": stats["rounds"],
                                           "iterations": stats.get("iterations")}  # fmt: skip
    metrics: dict[str, dict] = {"do_bench": {}, "host_clock_pipelined": {}}
    for (section, key), case in cases.items():
        for kind, times in (("do_bench", case["do_bench"]), ("host_clock_pipelined", case["host"])):
            result = bk.derive(section, case["info"], times, case["unsupported"])
            if section == "quantize":
                metrics[kind]["quantize"] = result
            else:
                metrics[kind].setdefault(section, {})[key] = result
    ratios = bk.compute_ratios(metrics["do_bench"])
    dry_run = any(e["extra_info"].get("dry_run") for e in entries)
    return {
        "benchmark": "trainforge.kernels int8 (issue 5), pytest-benchmark suite",
        "card": bk.card(dry_run),
        "versions": bk.versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dry_run": dry_run,
        "timing": "do_bench: triton.testing.do_bench p20/p50/p80 per op (GPU time, L2 flushed); "
        "host_clock_pipelined: pytest-benchmark rounds of N back-to-back launches and one synchronize, "
        "median host time / N (launch overhead included where it exceeds the kernel's time)",
        "metrics": metrics,
        "ratios": ratios,
        "ratios_host_clock": bk.compute_ratios(metrics["host_clock_pipelined"]),
        "goals": bk.GOALS,
        "goals_met": bk.goals_met(ratios),
    }


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config, benchmarks, output_json):
    entries = [b for b in output_json.get("benchmarks", []) if (b.get("extra_info") or {}).get("suite") == bk.PYTEST_SUITE]
    if entries:
        output_json["trainforge"] = kernel_report(entries)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config, machine_info):
    import torch

    if torch.cuda.is_available():
        machine_info["gpu"] = torch.cuda.get_device_name()
        machine_info["torch"] = torch.__version__
        machine_info["cuda"] = torch.version.cuda
