"""The training-overhead benchmark (training_cpu.py) as pytest-benchmark tests, on a small
configuration (training_cpu.SMALL: Llama hidden 64, 2 layers, vocabulary 512, batch 4 x 64 tokens,
25 steps) and on the test suite's stack (benchmarks/conftest.py: its PostgreSQL cluster runs in
fast mode, fsync off, unlike training_cpu.py's durable one).

    .venv/bin/pytest benchmarks/test_training_benchmark.py --benchmark-only

Direct rounds run first, then job rounds (training_cpu.py alternates them; use it for figures to
keep). Each round is one whole run, timed from process start (direct) or CreateJob (job) to the end; the
steady-state tokens/s, start-to-first-step seconds and the job / direct ratio are in each test's
`extra_info` (`--benchmark-json FILE` keeps them). The project's addopts carry --benchmark-skip,
so without --benchmark-only these tests are collected and skipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # training_cpu, beside this file

import training_cpu as tc  # noqa: E402

pytestmark = pytest.mark.postgres

ROUNDS = 3
_runs: dict[str, list[tc.Run]] = {"direct": [], "job": []}


@pytest.fixture(scope="module")
def training_inputs(settings, tmp_path_factory) -> dict:
    """The small model and rows under the suite's roots, the spec prepared as CreateJob does."""
    return {"spec": tc.prepare_inputs(settings, tc.SMALL), "workdir": tmp_path_factory.mktemp("training-bench")}


def _one(mode: str, inputs: dict, settings, database_url: str) -> tc.Run:
    async def go() -> tc.Run:
        sampler = tc.CpuSampler().start()
        try:
            if mode == "direct":
                bench = tc.Bench(inputs["workdir"], tc.SMALL, inputs["spec"], sampler)
                return await bench.run_direct(len(_runs["direct"]))
            async with tc.job_stack(database_url, settings) as (jobs, jobs_dir):
                bench = tc.Bench(inputs["workdir"], tc.SMALL, inputs["spec"], sampler, jobs, jobs_dir)
                return await bench.run_job(len(_runs["job"]))
        finally:
            sampler.stop()

    run = asyncio.run(go())
    _runs[mode].append(run)
    return run


def _extra_info(benchmark, runs: list[tc.Run]) -> None:
    benchmark.extra_info.update({
        "tokens_per_s_p50": statistics.median(r.metrics["tokens_per_s"] for r in runs),
        "start_to_first_step_s_p50": statistics.median(r.start_to_first_step_s for r in runs),
        "outside_compute_ms_p50": statistics.median(r.metrics["outside_compute_ms_mean"] for r in runs),
        "other_cores_p50": statistics.median(r.other_cores for r in runs),
        "shape": dataclasses.asdict(tc.SMALL),
    })


def test_direct_run(benchmark, training_inputs, settings, database_url):
    run = benchmark.pedantic(_one, args=("direct", training_inputs, settings, database_url), rounds=ROUNDS,
                             iterations=1)
    assert run.metrics["tokens_per_s"] > 0
    _extra_info(benchmark, _runs["direct"])


def test_job_run(benchmark, training_inputs, settings, database_url):
    run = benchmark.pedantic(_one, args=("job", training_inputs, settings, database_url), rounds=ROUNDS,
                             iterations=1)
    assert run.metrics["tokens_per_s"] > 0 and run.job_id
    _extra_info(benchmark, _runs["job"])
    if _runs["direct"]:
        benchmark.extra_info["job_vs_direct_tokens_per_s_cpu"] = (
            benchmark.extra_info["tokens_per_s_p50"]
            / statistics.median(r.metrics["tokens_per_s"] for r in _runs["direct"]))
