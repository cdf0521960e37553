"""The serving benchmark (serving.py) as pytest-benchmark tests, small: one streamed chat
completion of 16 tokens at one client, from the llama.cpp engine's server on the packaged Q4_1 GGUF
and from the plain transformers generate loop on the packaged SmolLM2 folder (not the same weights:
serving.py compares an F16 export of the folder; use it for figures to keep).

    .venv/bin/pytest benchmarks/test_serving_benchmark.py --benchmark-only

Each round is one request; the cell's summary (tokens/s, TTFT, outside load) is in `extra_info`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # serving, training_cpu: beside this file

import serving as sv  # noqa: E402
from training_cpu import CpuSampler  # noqa: E402

from tests.serving.server_process import ServerProcess  # noqa: E402

MAX_TOKENS = 16
ROUNDS = 5


@pytest.fixture(scope="module")
def sampler():
    sampler = CpuSampler().start()
    yield sampler
    sampler.stop()


@pytest.fixture(scope="module")
def llama_server():
    pytest.importorskip("llama_cpp")
    from trainforge.core.training.model_loading import packaged_gguf_path

    server = ServerProcess("llama_cpp", packaged_gguf_path(), "bench").start()
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def test_llama_cpp_server_one_streamed_chat(benchmark, llama_server, sampler):
    cells = []

    def one() -> None:
        cells.append(asyncio.run(sv.llama_cell(llama_server.port, 1, 1, MAX_TOKENS, sampler)))

    benchmark.pedantic(one, rounds=ROUNDS, warmup_rounds=1)
    samples = [s for cell in cells[1:] for s in cell.samples]
    assert all(not s.error for s in samples), samples
    benchmark.extra_info.update(sv.Cell("llama_cpp", 1, sum(c.wall_s for c in cells[1:]), cells[-1].other_cores,
                                        cells[-1].loadavg, samples).summary())


def test_transformers_generate_loop_one_chat(benchmark, sampler):
    from trainforge.core.training.model_loading import default_cache_dir, packaged_smollm2

    loop = sv.GenerateLoop(packaged_smollm2(default_cache_dir()), os.cpu_count() or 1)
    cells = []
    try:
        benchmark.pedantic(lambda: cells.append(loop.cell(1, 1, MAX_TOKENS, sampler)), rounds=ROUNDS, warmup_rounds=1)
    finally:
        loop.close()
    samples = [s for cell in cells[1:] for s in cell.samples]
    assert all(not s.error for s in samples), samples
    benchmark.extra_info.update(sv.Cell("transformers", 1, sum(c.wall_s for c in cells[1:]), cells[-1].other_cores,
                                        cells[-1].loadavg, samples).summary())
