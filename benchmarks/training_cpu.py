"""Training overhead of a trainforge job on the CPU: the same recipe, the same config and the same
data run directly and as a job, alternated (direct, job, direct, job, ...) on one machine.

    .venv/bin/python benchmarks/training_cpu.py       # ~5 min quiet; writes benchmarks/results/training-cpu-<date>.json

direct  `python -m trainforge.core.training.entrypoint --config C --output O --reporter print`, the
        training process the worker starts, with the JSON-lines reporter on stdout (a file).
job     a private PostgreSQL cluster (EmbeddedPostgres, durable: fsync and synchronous commit on,
        as `trainforge serve` runs it) with the migrations, a `Worker` configured as `serve`
        configures it (server.service.worker_config: 1 s claim poll, 5 s heartbeat), and a job
        created with `JobStore.create(..., start=True)` from a spec that `JobSpecPreparer` prepared.
        The worker claims it and starts the same entrypoint with the Postgres reporter (one UPDATE
        of the job row per step, a PROGRESS event + NOTIFY at most once a second, a flag read at
        most once a second), supervises it with heartbeats and registers the model at the end.

Model and data: a random Llama from a config (hidden 256, 4 layers, 4 heads, 2 KV heads, MLP 512,
vocabulary 4,096 word-level tokens, tied embeddings: 3.4 M parameters), float32, batch 4 x 256
tokens. Every row is longer than 256 tokens after the chat template, so every example is cut to
exactly 256 tokens and every step trains on batch x 256 tokens (checked before the runs).

What is measured, per run, from the TensorBoard scalars the recipe writes after every step (wall
clock at the write, the same instrument in both modes, after the reporter's call):
- steady-state tokens/s over steps W+1..N (the first W steps hold the allocation of AdamW's state
  and the allocator's warm-up): `tokens_per_s` = batch x seq / the median step time, and
  `tokens_per_s_window` = batch x seq x (N - W) / (t_N - t_W). On this shared VM a neighbour's
  burst stalls a few steps for seconds; that moved the window's mean up to 10x (645 to 6,433
  tokens/s across runs of one config) where the median moved little, so the ratio uses the
  median. Load that lasts a whole run moves both (steps at 6x their quiet time were seen): hence
  --wait-quiet and --max-other-cores. The PROGRESS event, once a second (every ~6th step here),
  costs 1.4 ms inside training and is in the window figure; the per-step UPDATE is in both;
- step time p20/p50/p80, and "outside compute": wall step time minus the compute time the recipe
  itself measures (tokens / its tokens_per_sec metric) -- the reporter, TensorBoard and the
  stop-flag check, the part of a step where a job can differ from a direct run;
- start to first step: direct, from process start (just before exec) to the reporter's first
  progress line; job, from just before `JobStore.create` to the first PROGRESS event's
  create_time, with the claim, model-loaded and data-ready marks in between.
Plus the Postgres reporter's round trips on their own (p20/p50/p80 ms of the per-step UPDATE,
the PROGRESS event transaction with its NOTIFY, and the flag read), after the runs.

Ratios are job / direct; `job_vs_direct_tokens_per_s_cpu` is the median over the adjacent pairs
(direct_i, job_i). The VM is shared: each run records the load average and `other_cores`, the
cores taken by processes outside the benchmark during the run (from /proc, sampled every second).

Flags: --pairs N (default 5), --warmup-pairs 1 (run and dropped), --wait-quiet 30 (seconds to wait
before each run for outside load under 0.25 cores), --max-other-cores 0.35 --pair-attempts 3 (a pair
that saw more outside load is measured again, the quietest attempt kept), --steps 60, --warmup-steps 5,
--batch 4, --seq 256, --hidden 256, --layers 4, --vocab 4096, --out FILE, --keep (keep the temp dir).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.metadata
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GOAL_RATIO = 0.97  # issue 4: a job keeps at least 97 % of the direct run's steady-state tokens/s
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MODEL_NAME = "bench-llama"
DATA_NAME = "bench-rows.jsonl"
CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
QUIET_CORES = 0.25  # --wait-quiet: other processes' cores below which the machine counts as quiet
STEP_TAG = "train/train_loss"  # the first scalar the recipe writes after each step
TPS_TAG = "train/tokens_per_sec"


@dataclass(frozen=True)
class Shape:
    hidden: int = 256
    layers: int = 4
    vocab: int = 4096
    batch: int = 4
    seq: int = 256
    steps: int = 60
    warmup_steps: int = 5

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq


# A configuration for the pytest-benchmark wrapper: ~20 ms steps, a run in a few seconds.
SMALL = Shape(hidden=64, layers=2, vocab=512, batch=4, seq=64, steps=25, warmup_steps=3)


# -- inputs ---------------------------------------------------------------------------------------

SPECIALS = ("<pad>", "<unk>", "<|im_start|>", "<|im_end|>")
ROLE_WORDS = ("system", "user", "assistant")


def build_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer of exactly `vocab_size` tokens: the specials, the ChatML role words
    and `w0`, `w1`, ...; ChatML chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = list(ROLE_WORDS) + [f"w{i}" for i in range(vocab_size - len(SPECIALS) - len(ROLE_WORDS))]
    vocab = {tok: i for i, tok in enumerate(list(SPECIALS) + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>"])
    tokenizer.chat_template = CHATML
    return tokenizer


def build_model(folder: Path, shape: Shape, seed: int = 0) -> Path:
    """A random LlamaForCausalLM and build_tokenizer's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(shape.vocab)
    config = LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=2 * shape.hidden,
                         num_hidden_layers=shape.layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max(256, shape.seq), tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def write_rows(path: Path, shape: Shape, seed: int = 0) -> Path:
    """batch x steps prompt/completion rows of random words, each longer than `seq` tokens."""
    rng = random.Random(seed)
    n_words = shape.vocab - len(SPECIALS) - len(ROLE_WORDS)
    prompt_words = max(4, shape.seq // 4)
    rows = []
    for _ in range(shape.batch * shape.steps):
        prompt = " ".join(f"w{rng.randrange(n_words)}" for _ in range(prompt_words))
        completion = " ".join(f"w{rng.randrange(n_words)}" for _ in range(shape.seq))
        rows.append({"prompt": prompt, "completion": completion})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def check_fixed_length(model_dir: Path, data_path: Path, shape: Shape) -> list[Any]:
    """Every row tokenises to exactly `seq` tokens with completion tokens in it, as the recipe
    tokenises it: then every step trains on batch x seq tokens. Returns the examples."""
    from transformers import AutoTokenizer

    from trainforge.core.training.data import IGNORE_INDEX, tokenize_row

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    examples = []
    for number, line in enumerate(data_path.read_text().splitlines(), start=1):
        example = tokenize_row(json.loads(line), tokenizer, shape.seq)
        if len(example.input_ids) != shape.seq or all(t == IGNORE_INDEX for t in example.labels):
            raise AssertionError(f"row {number}: {len(example.input_ids)} tokens, expected {shape.seq} with "
                                 "completion tokens")
        examples.append(example)
    return examples


def job_spec(shape: Shape) -> dict[str, Any]:
    """No validation split (no evaluation), no checkpoint inside the run: steps and nothing else."""
    return {
        "name": "bench-train", "model": MODEL_NAME,
        "training_data": {"source": "file", "path": DATA_NAME, "format": "jsonl", "validation_split": 0.0},
        "hyperparameters": {"learning_rate": 1e-4, "batch_size": shape.batch, "epochs": 1,
                            "max_steps": shape.steps, "max_seq_length": shape.seq, "seed": 0,
                            "save_steps": 1_000_000, "warmup_steps": 0, "weight_decay": 0.0},
        "optimization": {"optimizer": "adamw", "scheduler": "constant"},
    }


# -- what a run leaves behind -------------------------------------------------------------------

def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p20": float("nan"), "p50": float("nan"), "p80": float("nan")}
    ordered = sorted(values)

    def at(q: float) -> float:  # linear interpolation between closest ranks
        pos = q * (len(ordered) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return {"p20": at(0.2), "p50": at(0.5), "p80": at(0.8)}


def read_scalars(tb_dir: Path, tag: str) -> list[tuple[int, float, float]]:
    """(step, wall_time, value) of one TensorBoard scalar, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return sorted((e.step, e.wall_time, e.value) for e in acc.Scalars(tag))


def step_metrics(tb_dir: Path, shape: Shape) -> dict[str, Any]:
    marks = read_scalars(tb_dir, STEP_TAG)
    tps = {step: value for step, _, value in read_scalars(tb_dir, TPS_TAG)}
    steps = [s for s, _, _ in marks]
    if steps != list(range(1, shape.steps + 1)):
        raise AssertionError(f"{tb_dir}: expected steps 1..{shape.steps}, found {steps[:3]}...{steps[-3:]}")
    wall = {s: t for s, t, _ in marks}
    window = range(shape.warmup_steps + 1, shape.steps + 1)
    step_ms = [(wall[s] - wall[s - 1]) * 1e3 for s in window]
    compute_ms = [shape.tokens_per_step / tps[s] * 1e3 for s in window]
    outside_ms = [w - c for w, c in zip(step_ms, compute_ms, strict=True)]
    seconds = wall[shape.steps] - wall[shape.warmup_steps]
    return {
        # Per the median step: a neighbour's burst that stalls a few steps for seconds (this VM
        # is shared) moves the window's mean by 10x and the median by nothing.
        "tokens_per_s": shape.tokens_per_step / statistics.median(step_ms) * 1e3,
        "tokens_per_s_window": shape.tokens_per_step * len(window) / seconds,
        # What the recipe reports as tokens_per_sec: compute only, the reporter's time excluded.
        "compute_tokens_per_s_p50": statistics.median(tps[s] for s in window),
        "step_ms": percentiles(step_ms),
        "step_ms_mean": statistics.fmean(step_ms),
        "outside_compute_ms_mean": statistics.fmean(outside_ms),
        "outside_compute_ms": percentiles(outside_ms),
        "first_step_wall_time": wall[1],
        "window_s": seconds,
    }


# -- the machine ------------------------------------------------------------------------------------

class CpuSampler:
    """Cores taken by processes that are not ours (this process, its descendants, PostgreSQL),
    from /proc, sampled once a second in a thread; `mark()` starts a window, `other_cores()` reads it."""

    def __init__(self, postmaster_pid: int | None = None, interval: float = 1.0):
        self.roots = {os.getpid()} | ({postmaster_pid} if postmaster_pid else set())
        self.interval = interval
        self._last: dict[int, int] = {}
        self._lock = threading.Lock()
        self._ours = 0
        self._machine = 0
        self._last_machine = _machine_busy_ticks()
        self._mark: tuple[int, int, float] = (0, 0, time.monotonic())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="cpu-sampler")

    def start(self) -> CpuSampler:
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        table = _proc_table()
        ours: set[int] = set()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        todo = [p for p in self.roots if p in table]
        while todo:
            pid = todo.pop()
            if pid not in ours:
                ours.add(pid)
                todo += children.get(pid, [])
        machine = _machine_busy_ticks()
        with self._lock:
            for pid in ours:
                ticks = table[pid][1]
                self._ours += max(0, ticks - self._last.get(pid, 0))  # a new pid: all of its ticks
                self._last[pid] = ticks
            self._machine += machine - self._last_machine
            self._last_machine = machine

    def mark(self) -> None:
        self._sample()
        with self._lock:
            self._mark = (self._ours, self._machine, time.monotonic())

    def other_cores(self) -> float:
        self._sample()
        with self._lock:
            ours0, machine0, t0 = self._mark
            seconds = time.monotonic() - t0
            other = (self._machine - machine0) - (self._ours - ours0)
        return round(max(0.0, other / CLOCK_TICKS / seconds), 3) if seconds > 0 else 0.0


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime + stime ticks) of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                raw = handle.read().decode(errors="replace")
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()  # after "pid (comm) "
        out[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return out


def _machine_busy_ticks() -> int:
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest and guest_nice are inside user and nice):
    # everything but idle and iowait; steal counts as taken by others.
    return sum(values[:8]) - values[3] - values[4]


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_card() -> str:
    name = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {name}, {os.cpu_count()} cores"


def collect_versions(dsn: str | None = None) -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    import torch  # the build string (+cpu / +cu128) is not in the distribution's metadata

    out = {"python": platform.python_version(), "torch": torch.__version__,
           **{d: version(d) for d in ("transformers", "deepspeed", "trainforge", "psycopg", "tensorboard")}}
    if dsn:
        import psycopg

        with psycopg.connect(dsn) as conn:
            out["postgres"] = conn.execute("SHOW server_version").fetchone()[0]
    return out


# -- one run of each kind ---------------------------------------------------------------------------

@dataclass
class Run:
    mode: str  # "direct" | "job"
    index: int
    start_to_first_step_s: float
    marks_s: dict[str, float]  # from the start to: claimed (job), model_loaded, data_ready, first_step
    total_s: float  # start to process exit (direct) or to SUCCEEDED (job, after registering the model)
    metrics: dict[str, Any]
    other_cores: float
    loadavg_before: list[float]
    loadavg_after: list[float]
    job_id: str = ""
    quiet_wait_s: float = 0.0  # waited before the run for the machine to go quiet (--wait-quiet)
    quiet_probe_cores: float = 0.0  # other_cores in the last probe before the run
    attempt: int = 1  # which attempt at its pair was kept (--pair-attempts)


@dataclass
class Bench:
    """What the runs share: the work folder, the shape, the prepared spec and, for jobs, the store."""

    workdir: Path
    shape: Shape
    spec: dict[str, Any]
    sampler: CpuSampler
    jobs: Any = None  # JobStore
    jobs_dir: Path | None = None
    runs: list[Run] = field(default_factory=list)

    async def run_direct(self, index: int) -> Run:
        (self.workdir / "direct").mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix=f"run-{index}-", dir=self.workdir / "direct"))  # one per attempt
        config = out.parent / "config.json"
        config.write_text(json.dumps(self.spec, indent=2))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # as launch.build sets it for jobs
        before = loadavg()
        self.sampler.mark()
        with open(out / "stdout.jsonl", "wb") as stdout, open(out / "stderr.log", "wb") as stderr:
            started = time.time()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "trainforge.core.training.entrypoint", "--config", str(config),
                "--output", str(out / "output"), "--reporter", "print", env=env, stdout=stdout, stderr=stderr)
            rc = await proc.wait()
        total = time.time() - started
        other, after = self.sampler.other_cores(), loadavg()
        if rc != 0:
            raise RuntimeError(f"direct run {index} exited {rc}: {(out / 'stderr.log').read_text()[-2000:]}")
        records = [json.loads(line) for line in (out / "stdout.jsonl").read_text().splitlines() if line.startswith("{")]
        marks = {}
        for r in records:
            if r["event"] == "log" and r["message"].startswith("loaded "):
                marks.setdefault("model_loaded", r["time"] - started)
            elif r["event"] == "log" and r["message"].startswith("data "):
                marks.setdefault("data_ready", r["time"] - started)
            elif r["event"] == "progress":
                marks.setdefault("first_step", r["time"] - started)
        return Run("direct", index, marks["first_step"], _rounded(marks), round(total, 3),
                   step_metrics(out / "output" / "tensorboard", self.shape), other, before, after)

    async def run_job(self, index: int) -> Run:
        from trainforge.core.jobs import models as m

        before = loadavg()
        self.sampler.mark()
        started = time.time()
        job = await self.jobs.create(self.spec["name"], self.spec, "", start=True)
        while not job.terminal:
            await asyncio.sleep(0.5)
            job = await self.jobs.get(job.job_id)
        total = time.time() - started
        other, after = self.sampler.other_cores(), loadavg()
        events = await self.jobs.events(job.job_id, 0, 100_000)
        if job.state != m.SUCCEEDED:
            raise RuntimeError(f"job run {index} ended {job.state}: {job.error} {[e.message for e in events][-5:]}")
        marks = {}
        for e in events:
            t = e.create_time.timestamp() - started
            if e.type == m.STATE_CHANGED and e.message.startswith("claimed by"):
                marks.setdefault("claimed", t)
            elif e.type == m.LOG and e.message.startswith("loaded "):
                marks.setdefault("model_loaded", t)
            elif e.type == m.LOG and e.message.startswith("data "):
                marks.setdefault("data_ready", t)
            elif e.type == m.PROGRESS:
                marks.setdefault("first_step", t)
        tb = self.jobs_dir / job.job_id / "output" / "tensorboard"
        return Run("job", index, marks["first_step"], _rounded(marks), round(total, 3),
                   step_metrics(tb, self.shape), other, before, after, job_id=job.job_id)


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in d.items()}


@asynccontextmanager
async def job_stack(dsn: str, settings: Any):
    """A JobStore on a pool, and a Worker as `serve` configures it, running until the block ends."""
    from trainforge.core.db.pool import open_pool
    from trainforge.core.jobs.store import JobStore
    from trainforge.core.jobs.worker import Worker
    from trainforge.core.registry.artifacts import ArtifactStore
    from trainforge.core.registry.store import RegistryStore
    from trainforge.server.service import worker_config

    pool = await open_pool(dsn, min_size=1, max_size=4)
    stop = asyncio.Event()
    config = worker_config(settings, dsn)
    registry = RegistryStore(pool, ArtifactStore(settings.artifacts_dir), settings.models_dir)
    task = asyncio.ensure_future(Worker(JobStore(pool), registry, config, worker_id="bench-worker").run(stop))
    try:
        yield JobStore(pool), config.jobs_dir
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await pool.close()


def prepare_inputs(settings: Any, shape: Shape) -> dict[str, Any]:
    """Model under the models root, rows under the data root, the spec prepared as CreateJob does."""
    from trainforge.core.jobs.spec import JobSpecPreparer

    settings.ensure_dirs()
    model_dir = build_model(settings.models_dir / MODEL_NAME, shape)
    data_path = write_rows(settings.data_dir_root / DATA_NAME, shape)
    check_fixed_length(model_dir, data_path, shape)
    return JobSpecPreparer(settings.data_dir_root, settings.models_dir).prepare(job_spec(shape))


# -- the reporter's round trips on their own --------------------------------------------------------

def reporter_costs(dsn: str, job_id: str, repeats: int = 200) -> dict[str, dict[str, float]]:
    """p20/p50/p80 ms of what PostgresReporter does per step (the job row UPDATE), once a second
    (the PROGRESS event: UPDATE event_seq + INSERT in one transaction, then NOTIFY) and the flag
    read, against a job row of its own (attempt 0, PENDING)."""
    from psycopg.types.json import Jsonb

    from trainforge.core.jobs import models as m
    from trainforge.core.jobs.reporter import PostgresReporter

    reporter = PostgresReporter(job_id=job_id, dsn=dsn, attempt=0)
    progress = {"current_epoch": 1, "total_epochs": 1, "current_step": 1, "total_steps": 100, "percent": 1.0,
                "estimated_remaining": 1000.0}
    metrics = {"train_loss": 8.3, "learning_rate": 1e-4, "grad_norm": 1.5, "tokens_per_sec": 6000.0, "epoch": 1.0}
    out: dict[str, list[float]] = {"update_ms": [], "event_ms": [], "flags_ms": []}
    try:
        for _ in range(repeats):
            t = time.perf_counter()
            reporter._update("progress = %s, metrics = metrics || %s", (Jsonb(progress), Jsonb(metrics)))
            out["update_ms"].append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            reporter._event(m.PROGRESS, "step 1/100", progress, metrics)
            out["event_ms"].append((time.perf_counter() - t) * 1e3)
            reporter._last_flags = 0.0
            t = time.perf_counter()
            reporter.should_stop()
            out["flags_ms"].append((time.perf_counter() - t) * 1e3)
    finally:
        reporter.close()
    return {k: {q: round(v, 3) for q, v in percentiles(values).items()} for k, values in out.items()}


# -- the benchmark --------------------------------------------------------------------------------------

@contextmanager
def private_postgres(base: Path) -> Iterator[Any]:
    """A durable private cluster under `base` (0711: the cluster runs as `postgres` when we are root)."""
    from trainforge.core.db import migrate
    from trainforge.core.db.embedded import EmbeddedPostgres

    base.chmod(0o711)
    pg = EmbeddedPostgres(base / "pg", database="trainforge_bench", fast=False)
    pg.start()
    try:
        migrate.upgrade(pg.dsn)
        yield pg
    finally:
        pg.stop()


def summarize(runs: list[Run], shape: Shape) -> tuple[dict[str, Any], dict[str, float]]:
    by_mode = {mode: [r for r in runs if r.mode == mode] for mode in ("direct", "job")}
    metrics: dict[str, Any] = {"tokens_per_step": shape.tokens_per_step}
    for mode, rs in by_mode.items():
        metrics[mode] = {
            "tokens_per_s": percentiles([r.metrics["tokens_per_s"] for r in rs]),
            "tokens_per_s_window": percentiles([r.metrics["tokens_per_s_window"] for r in rs]),
            "compute_tokens_per_s": percentiles([r.metrics["compute_tokens_per_s_p50"] for r in rs]),
            "step_ms_p50": percentiles([r.metrics["step_ms"]["p50"] for r in rs]),
            "outside_compute_ms_mean": percentiles([r.metrics["outside_compute_ms_mean"] for r in rs]),
            "start_to_first_step_s": percentiles([r.start_to_first_step_s for r in rs]),
            "marks_s_p50": {k: round(statistics.median(r.marks_s[k] for r in rs), 3) for k in rs[0].marks_s},
            "total_s": percentiles([r.total_s for r in rs]),
            "other_cores": percentiles([r.other_cores for r in rs]),
        }
    pairs = list(zip(by_mode["direct"], by_mode["job"], strict=True))
    paired = [j.metrics["tokens_per_s"] / d.metrics["tokens_per_s"] for d, j in pairs]
    paired_window = [j.metrics["tokens_per_s_window"] / d.metrics["tokens_per_s_window"] for d, j in pairs]
    paired_compute = [j.metrics["compute_tokens_per_s_p50"] / d.metrics["compute_tokens_per_s_p50"] for d, j in pairs]
    metrics["paired_ratios"] = [round(x, 4) for x in paired]
    metrics["paired_window_ratios"] = [round(x, 4) for x in paired_window]
    metrics["paired_compute_ratios"] = [round(x, 4) for x in paired_compute]
    metrics["job_extra_outside_compute_ms"] = round(
        statistics.median(j.metrics["outside_compute_ms_mean"] - d.metrics["outside_compute_ms_mean"]
                          for d, j in pairs), 3)
    ratios = {
        "job_vs_direct_tokens_per_s_cpu": round(statistics.median(paired), 4),
        # Total tokens / wall time of steps W+1..N: the same with every stall a neighbour caused.
        "job_vs_direct_tokens_per_s_window_cpu": round(statistics.median(paired_window), 4),
        # The same, on the recipe's own compute-only tokens_per_sec (the reporter's time excluded):
        # what is left is the CPU the worker, PostgreSQL and the driver take from training.
        "job_vs_direct_compute_tokens_per_s_cpu": round(statistics.median(paired_compute), 4),
        "job_vs_direct_start_to_first_step_s": round(
            statistics.median(j.start_to_first_step_s for j in by_mode["job"])
            / statistics.median(d.start_to_first_step_s for d in by_mode["direct"]), 4),
    }
    return metrics, ratios


async def wait_quiet(sampler: CpuSampler, budget_s: float, probe_s: float = 3.0) -> tuple[float, float]:
    """Waits, at most `budget_s`, for a probe of `probe_s` in which processes outside the benchmark
    took under QUIET_CORES; returns (seconds waited, cores they took in the last probe)."""
    started = time.monotonic()
    while True:
        sampler.mark()
        await asyncio.sleep(probe_s)
        other = sampler.other_cores()
        waited = time.monotonic() - started
        if other < QUIET_CORES or waited >= budget_s:
            return round(waited, 1), other


async def measure(bench: Bench, pairs: int, warmup_pairs: int, quiet_budget_s: float = 0.0,
                  max_other_cores: float = float("inf"), pair_attempts: int = 1, log=print) -> list[Run]:
    """direct, job, direct, job, ...: contention from outside hits both alike. A pair during which
    outside processes took more than `max_other_cores` in either run is run again (at most
    `pair_attempts` times); the attempt whose worse run saw the least outside load is kept."""
    runs = []
    for i in range(warmup_pairs + pairs):
        kept = i >= warmup_pairs
        best: list[Run] = []
        for attempt in range(1, pair_attempts + 1):
            pair = []
            for mode in ("direct", "job"):
                waited, probe = await wait_quiet(bench.sampler, quiet_budget_s) if quiet_budget_s > 0 else (0.0, 0.0)
                run = await (bench.run_direct(i) if mode == "direct" else bench.run_job(i))
                run.quiet_wait_s, run.quiet_probe_cores, run.attempt = waited, probe, attempt
                pair.append(run)
                log(f"{'' if kept else '(warm-up) '}{mode:6s} #{i}.{attempt}: {run.metrics['tokens_per_s']:8.0f} "
                    f"tokens/s, step p50 {run.metrics['step_ms']['p50']:6.1f} ms, outside compute "
                    f"{run.metrics['outside_compute_ms_mean']:5.2f} ms, first step {run.start_to_first_step_s:5.2f} s "
                    f"{run.marks_s}, other cores {run.other_cores:.2f} (waited {waited:.0f} s), "
                    f"load {run.loadavg_before}", flush=True)
            worst = max(r.other_cores for r in pair)
            if not best or worst < max(r.other_cores for r in best):
                best = pair
            if worst <= max_other_cores or not kept:
                break
            log(f"pair #{i}: outside load {worst:.2f} cores > {max_other_cores}; measuring it again", flush=True)
        if kept:
            runs += best
    return runs


async def run(options: argparse.Namespace) -> dict[str, Any]:
    from trainforge.core.settings import load_settings

    shape = Shape(hidden=options.hidden, layers=options.layers, vocab=options.vocab, batch=options.batch,
                  seq=options.seq, steps=options.steps, warmup_steps=options.warmup_steps)
    base = Path(tempfile.mkdtemp(prefix="trainforge-bench-train-", dir="/tmp"))
    try:
        with private_postgres(base) as pg:
            settings = load_settings(env={}, data_dir=str(base / "data"), database_url=pg.dsn)
            spec = prepare_inputs(settings, shape)
            params = _parameter_count(settings.models_dir / MODEL_NAME)
            postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
            sampler = CpuSampler(postmaster).start()
            versions = collect_versions(pg.dsn)
            load_start = loadavg()
            try:
                async with job_stack(pg.dsn, settings) as (jobs, jobs_dir):
                    bench = Bench(base / "work", shape, spec, sampler, jobs, jobs_dir)
                    runs = await measure(bench, options.pairs, options.warmup_pairs, options.wait_quiet,
                                         options.max_other_cores, options.pair_attempts)
                    idle = await jobs.create("bench-reporter-costs", spec, "", start=False)
                    costs = await asyncio.to_thread(reporter_costs, pg.dsn, idle.job_id)
            finally:
                sampler.stop()
            metrics, ratios = summarize(runs, shape)
            metrics["reporter_round_trips_ms"] = costs
            metrics["loadavg_start_end"] = [load_start, loadavg()]
            return {
                "benchmark": "training-cpu: the recipe run directly vs as a trainforge job",
                "card": cpu_card(),
                "versions": versions,
                "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "config": {"model": f"random Llama from config: hidden {shape.hidden}, {shape.layers} layers, "
                                    f"4 heads, 2 KV heads, MLP {2 * shape.hidden}, vocab {shape.vocab}, "
                                    f"tied embeddings, float32",
                           "parameters": params, **asdict(shape), "pairs": options.pairs,
                           "warmup_pairs": options.warmup_pairs, "wait_quiet_s": options.wait_quiet,
                           "max_other_cores": options.max_other_cores, "pair_attempts": options.pair_attempts,
                           "torch_threads": _torch_threads(),
                           "tokens_per_s": "batch x seq / median step time of steps W+1..N (TensorBoard wall "
                                           "times); tokens_per_s_window: total tokens / wall time of those steps",
                           "postgres": "EmbeddedPostgres durable (fsync, synchronous_commit on)",
                           "worker": "server.service.worker_config defaults (1 s poll, 5 s heartbeat, 30 s lease)",
                           "direct": "python -m trainforge.core.training.entrypoint --reporter print"},
                "metrics": metrics,
                "ratios": ratios,
                "goals": {"job_vs_direct_tokens_per_s_cpu": {
                    "goal": GOAL_RATIO, "met": ratios["job_vs_direct_tokens_per_s_cpu"] >= GOAL_RATIO}},
                "runs": [asdict(r) for r in runs],
            }
    finally:
        if options.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def _parameter_count(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        for key in f.keys():
            n = 1
            for d in f.get_slice(key).get_shape():
                n *= d
            total += n
    return total


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = Shape()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5, help="measured (direct, job) pairs")
    parser.add_argument("--warmup-pairs", type=int, default=1, help="pairs run first and dropped")
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="steps left out of the steady state")
    parser.add_argument("--batch", type=int, default=d.batch)
    parser.add_argument("--seq", type=int, default=d.seq)
    parser.add_argument("--hidden", type=int, default=d.hidden)
    parser.add_argument("--layers", type=int, default=d.layers)
    parser.add_argument("--vocab", type=int, default=d.vocab)
    parser.add_argument("--wait-quiet", type=float, default=30.0,
                        help=f"before each run, wait up to this many seconds for other processes to take "
                             f"under {QUIET_CORES} cores (0: don't)")
    parser.add_argument("--max-other-cores", type=float, default=0.35,
                        help="a pair whose runs saw more outside load than this is measured again")
    parser.add_argument("--pair-attempts", type=int, default=3, help="attempts per pair at most")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON to write (default benchmarks/results/training-cpu-<YYYYMMDD>.json)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (cluster, runs)")
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.warmup_pairs < 0 or not 1 <= args.warmup_steps < args.steps - 1:
        parser.error("need --pairs >= 1, --warmup-pairs >= 0 and 1 <= --warmup-steps < --steps - 1")
    return args


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    document = asyncio.run(run(options))
    out = options.out or ROOT / "benchmarks" / "results" / f"training-cpu-{dt.date.today():%Y%m%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    m, r = document["metrics"], document["ratios"]
    print(json.dumps({"ratios": r, "direct_tokens_per_s": m["direct"]["tokens_per_s"],
                      "job_tokens_per_s": m["job"]["tokens_per_s"],
                      "start_to_first_step_s": {k: m[k]["start_to_first_step_s"] for k in ("direct", "job")},
                      "reporter_round_trips_ms": m["reporter_round_trips_ms"]}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
