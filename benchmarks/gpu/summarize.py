#!/usr/bin/env python
"""Collect what one run of run_all.sh left in a folder into one self-contained summary JSON.

    python benchmarks/gpu/summarize.py [--in DIR] [--out FILE] [--status NAME=STATUS ...]

Reads, where present, from DIR (default $OUT, else ./gpu-out):
    bench_kernels.json    bench_kernels.py: do_bench timings and the issue-5 ratios
    pytest_kernels.json   test_kernels_benchmark.py through pytest-benchmark (its "trainforge" object)
    bench_decode.json     bench_decode.py: decode tokens/s, int8 vs bf16
    bench_training.json   bench_training.py: trainforge vs HF Trainer + compile
    kernels-tests.xml     the parity tests' JUnit report (counts only)
and writes FILE (default DIR/summary.json) with: benchmark, card, versions, date, dry_run, steps
(run_all.sh's status of each step, passed as --status), ratios (one flat object: the four kernel
ratios of issue 5 from bench_kernels.json -- from the pytest suite's do_bench numbers where
bench_kernels.json lacks one, as ratio_sources says -- plus every decode and training ratio),
goals and goals_met for the kernel ratios, ratios_by_source (every source's own ratios, the
pytest suite's host-clock ones included), tests (parity test counts) and documents (the
bench_kernels, bench_decode and bench_training JSONs whole, and the pytest suite's "trainforge"
object): the file to commit under benchmarks/results/. Standard library only; never fails on a
missing or broken input, it records it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

KERNEL_RATIOS = ("quantize_fraction_of_copy_bw", "w8a8_vs_bf16_cublas_8192", "w8a16_vs_bf16_cublas_m1",
                 "w8a16_vs_bf16_cublas_m16")  # fmt: skip
FILES = {"bench_kernels": "bench_kernels.json", "pytest_kernels": "pytest_kernels.json",
         "bench_decode": "bench_decode.json", "bench_training": "bench_training.json"}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_in = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path("gpu-out")
    parser.add_argument("--in", dest="folder", type=Path, default=default_in, help="folder with the run's JSONs")
    parser.add_argument("--out", type=Path, default=None, help="summary file (default: <in>/summary.json)")
    parser.add_argument("--junit", type=Path, default=None, help="the parity tests' JUnit XML (default <in>/kernels-tests.xml)")
    parser.add_argument("--status", nargs="*", default=[], metavar="NAME=STATUS",
                        help="run_all.sh's outcome of each step, e.g. parity_tests=passed")  # fmt: skip
    return parser.parse_args(argv)


def load(path: Path) -> tuple[dict | None, str | None]:
    if not path.is_file():
        return None, "missing"
    try:
        return json.loads(path.read_text()), None
    except (OSError, ValueError) as exc:
        return None, f"unreadable: {exc}"


def junit_counts(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"report": "missing"}
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return {"report": f"unreadable: {exc}"}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    counts["time_s"] = sum(float(s.get("time", 0)) for s in suites)
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in root.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]  # fmt: skip
    counts["failed_tests"] = failed[:50]
    return counts


def pytest_digest(doc: dict) -> dict[str, Any]:
    """The pytest-benchmark JSON without its bulk: the "trainforge" object and one row per test."""
    rows = []
    for b in doc.get("benchmarks", []):
        extra, stats = b.get("extra_info") or {}, b.get("stats") or {}
        rows.append({"group": b.get("group"), "name": b.get("name"),
                     "host_median_ms_per_op": stats.get("median", 0) * 1e3 if stats else None,
                     "host_iqr_ms": stats.get("iqr", 0) * 1e3 if stats else None,
                     "iterations": stats.get("iterations"), "rounds": stats.get("rounds"),
                     "do_bench": extra.get("do_bench")})  # fmt: skip
    return {"trainforge": doc.get("trainforge"), "machine_info": doc.get("machine_info"), "benchmarks": rows}


def summarize(folder: Path, statuses: dict[str, str], junit: Path | None = None) -> dict[str, Any]:
    docs: dict[str, dict] = {}
    inputs: dict[str, str] = {}
    for name, filename in FILES.items():
        doc, problem = load(folder / filename)
        inputs[name] = problem or str(folder / filename)
        if doc is not None:
            docs[name] = doc
    kernels = docs.get("bench_kernels", {})
    pytest_tf = (docs.get("pytest_kernels") or {}).get("trainforge") or {}
    by_source = {
        "bench_kernels": kernels.get("ratios"),
        "pytest_kernels_do_bench": pytest_tf.get("ratios"),
        "pytest_kernels_host_clock": pytest_tf.get("ratios_host_clock"),
        "bench_decode": (docs.get("bench_decode") or {}).get("ratios"),
        "bench_training": (docs.get("bench_training") or {}).get("ratios"),
    }
    ratios: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in KERNEL_RATIOS:
        for source in ("bench_kernels", "pytest_kernels_do_bench"):
            value = (by_source.get(source) or {}).get(key)
            if value is not None:
                ratios[key], sources[key] = value, source
                break
        else:
            ratios[key], sources[key] = None, "not measured"
    for source in ("bench_decode", "bench_training"):
        for key, value in (by_source.get(source) or {}).items():
            ratios[key], sources[key] = value, source
    goals = kernels.get("goals") or pytest_tf.get("goals") or {}
    first = next((d for d in (kernels, docs.get("bench_decode"), pytest_tf, docs.get("bench_training")) if d), {})
    dry_run = any(bool(d.get("dry_run")) for d in (kernels, pytest_tf, docs.get("bench_decode") or {}))
    return {
        "benchmark": "trainforge GPU benchmarks (benchmarks/gpu/run_all.sh): int8 kernels, decode, training"
                     + (" -- DRY RUN on a CPU, numbers meaningless" if dry_run else ""),
        "card": first.get("card"),
        "versions": first.get("versions"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dry_run": dry_run,
        "steps": statuses,
        "ratios": ratios,
        "ratio_sources": sources,
        "goals": goals,
        "goals_met": {k: (ratios.get(k) is not None and ratios[k] >= v) for k, v in goals.items()},
        "ratios_by_source": by_source,
        "tests": junit_counts(junit or folder / "kernels-tests.xml"),
        "inputs": inputs,
        "documents": {
            "bench_kernels": docs.get("bench_kernels"),
            "pytest_kernels": pytest_digest(docs["pytest_kernels"]) if "pytest_kernels" in docs else None,
            "bench_decode": docs.get("bench_decode"),
            "bench_training": docs.get("bench_training"),
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    statuses = {}
    for item in args.status:
        name, _, value = item.partition("=")
        statuses[name] = value
    summary = summarize(args.folder, statuses, args.junit)
    out = args.out or args.folder / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary: {summary['card']}")
    for name, status in statuses.items():
        print(f"  step {name:16s} {status}")
    for key, value in summary["ratios"].items():
        goal = summary["goals"].get(key)
        shown = "n/a" if value is None else f"{value:.3f}"
        print(f"  ratio {key:52s} {shown}" + (f"  (goal {goal})" if goal is not None else "")
              + f"  [{summary['ratio_sources'][key]}]")  # fmt: skip
    print(f"summarize: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
