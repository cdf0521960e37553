"""The reliability suite: what survives a crash, a database restart, load and a fuzzer.

    .venv/bin/python -m benchmarks.reliability            # everything, ~12-15 min on 2 cores
    .venv/bin/python -m benchmarks.reliability --only worker_kill --worker-trials 3

Writes `benchmarks/results/reliability-<YYYYMMDD>.json` (benchmark, card, versions, date, setup,
metrics, ratios, failures). Loopback only: its own PostgreSQL cluster, `trainforge worker` and
`trainforge serve` processes and their Envoy, a tiny random Llama (tests/training/conftest.py).

Scenarios (each can be run alone with --only):

worker_kill   N trials: a job (max_steps steps, a checkpoint every save_steps, lease lease_s) is
              claimed by one of two `trainforge worker` processes; at a random step (drawn in
              [2, max_steps - 2], the first time the job row's progress reaches it) that worker
              gets SIGKILL, a fresh worker replaces it, and the survivor claims the job once the
              lease expires.
serve_kill    N trials: the same with SIGKILL of `trainforge serve` (its in-process worker; the
              embedded PostgreSQL under its data dir) and a restart on the same data dir and ports.
              Also measured: seconds from the restart to a ready gateway, and whether the restart
              needed orphaned children killed by hand (then they are killed by their pids and the
              trial says so).
pg_restart    `trainforge serve` on this suite's cluster (DATABASE_URL) trains two jobs while a
              WatchJob stream (REST, NDJSON, through Envoy) is open on the first; `pg_ctl restart
              -m fast` of the cluster. Recovered = an API call succeeds again without restarting
              the service (seconds measured); the watcher reconnects with `after_sequence` = the
              last sequence it saw.
load          `clients` closed-loop HTTP clients for `seconds` through Envoy: GetModel, SearchModels,
              RegisterModel, ListJobs, GetJob, CreateJob + CancelJob (a PENDING job: nothing
              trains). Error = any non-2xx answer or a failed connection.
schemathesis  `schemathesis run` on /api/docs/openapi.json through Envoy with an admin key;
              every answer it got is read from its HAR report and counted by status.

What the crash trials check, per job (check_job below):
- finished: the job ends SUCCEEDED, with exactly one registered version (lineage.job_id) and it
  is the job's result_model_version_id; the job was claimed exactly twice (attempt = 2).
- continuous: the events are split into attempts at each claim (a STATE_CHANGED event into
  RUNNING). Let c be the newest checkpoint recorded before the second claim (job_checkpoints rows
  created before it). The first PROGRESS event after that claim is step c + 1 (the training
  process reports its first step always, later ones at most once a second): it resumed from the
  checkpoint, not from step 0 and not past it (c = 0 when the kill came before the first
  checkpoint; when c = max_steps nothing is left to train and no PROGRESS may follow). PROGRESS
  steps of each attempt increase and the last one is max_steps.
- nothing run twice: no step <= c is reported after the second claim, no event of the killed
  attempt is written after it (events are fenced by the attempt: the first attempt's PROGRESS
  steps all precede the claim's sequence number), and the work redone -- steps in (c, last step
  the killed attempt reported] -- is at most save_steps (what a checkpoint interval allows).
  CHECKPOINT steps increase over the whole log (no checkpoint written twice).
- events: sequence numbers are 1..N without a gap.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `tests` (the tiny model) and `benchmarks` import from the checkout
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

from benchmarks.registry_load import HttpConnection, collect_versions, cpu_card, percentile  # noqa: E402
from trainforge.core.db import migrate  # noqa: E402
from trainforge.core.db.embedded import EmbeddedPostgres  # noqa: E402

TRAINFORGE = str(Path(sys.executable).with_name("trainforge"))
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
RESULTS = ROOT / "benchmarks" / "results"
SCENARIOS = ("worker_kill", "serve_kill", "pg_restart", "load", "schemathesis")
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


@dataclass
class Options:
    worker_trials: int = 20
    serve_trials: int = 20
    max_steps: int = 60
    save_steps: int = 5
    lease_s: float = 2.5
    trial_timeout_s: float = 240.0
    pg_restart_jobs: int = 2
    pg_recovery_limit_s: float = 30.0
    load_clients: int = 64
    load_seconds: float = 60.0
    load_procs: int = 2
    schemathesis_examples: int = 20
    schemathesis_max_time_s: int = 240
    seed: int = 20261202
    only: tuple[str, ...] = SCENARIOS
    out: Path | None = None
    keep: bool = False


# -- small helpers ------------------------------------------------------------------------------

def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(dsn: str, sql: str, *params) -> list[dict]:
    with psycopg.connect(dsn, row_factory=dict_row, connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def wait_for(predicate, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (psycopg.OperationalError, OSError):
            value = None
        if value:
            return value
        time.sleep(interval)
    return None


def job_body(name: str, options: Options) -> dict:
    return {
        "name": name, "model": "tiny-llama",
        "trainingData": {"source": "file", "path": "qa.jsonl", "format": "jsonl", "validation_split": 0.2},
        "hyperparameters": {"learning_rate": 1e-2, "batch_size": 4, "epochs": 1000, "max_seq_length": 64, "seed": 3,
                            "max_steps": options.max_steps, "save_steps": options.save_steps,
                            "eval_steps": 100000, "warmup_steps": 0},
        "optimization": {"optimizer": "adamw", "scheduler": "constant"},
    }


def prepare_data_dir(folder: Path, tiny_model: Path) -> Path:
    from tests.training.conftest import qa_rows

    shutil.copytree(tiny_model, folder / "models" / "tiny-llama")
    (folder / "training-data").mkdir(parents=True)
    (folder / "training-data" / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_rows(repeat=6)))
    return folder


def create_admin_key(dsn: str) -> str:
    from trainforge.core.access.keys import KeyStore
    from trainforge.core.db.pool import open_pool

    async def make() -> str:
        pool = await open_pool(dsn, min_size=1, max_size=2)
        try:
            return (await KeyStore(pool).create(f"reliability-{uuid.uuid4().hex[:6]}", "admin")).token
        finally:
            await pool.close()

    return asyncio.run(make())


class Rest:
    """JSON over one HTTP connection per call (the stack may restart under it)."""

    def __init__(self, port: int, token: str = ""):
        self.port, self.token = port, token

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 10) -> tuple[int, dict | None]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"content-type": "application/json"}
            if self.token:
                headers["authorization"] = f"Bearer {self.token}"
            conn.request(method, path, json.dumps(body).encode() if body is not None else None, headers)
            response = conn.getresponse()
            raw = response.read()
            try:
                return response.status, json.loads(raw) if raw else None
            except ValueError:
                return response.status, None
        finally:
            conn.close()


# -- what a crash trial checks --------------------------------------------------------------------

def db_now(dsn: str):
    return query(dsn, "SELECT now() AS now")[0]["now"]


def check_job(dsn: str, job_id: str, options: Options, killed_at=None) -> dict:
    job = query(dsn, "SELECT * FROM jobs WHERE id = %s", job_id)[0]
    events = query(dsn, "SELECT seq, type, state, message, progress, create_time FROM job_events "
                        "WHERE job_id = %s ORDER BY seq", job_id)
    versions = query(dsn, "SELECT id FROM model_versions WHERE lineage->>'job_id' = %s", job_id)
    problems: list[str] = []
    if job["state"] != "SUCCEEDED":
        problems.append(f"state {job['state']}: {(job['error'] or {}).get('message', '')[:300]}")
    if len(versions) != 1:
        problems.append(f"{len(versions)} registered versions")
    elif str(versions[0]["id"]) != str(job["result_model_version_id"]):
        problems.append("the registered version is not the job's result")
    seqs = [e["seq"] for e in events]
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append("event sequence numbers have a gap")
    claims = [e for e in events if e["type"] == "STATE_CHANGED" and e["state"] == "RUNNING"]
    if job["attempt"] != 2 or len(claims) != 2:
        problems.append(f"attempt {job['attempt']}, {len(claims)} claims (expected 2)")
    result = {"job_id": job_id, "state": job["state"], "attempt": job["attempt"], "versions": len(versions)}
    checkpoint_steps = [int(e["message"].rsplit(" ", 1)[1]) for e in events if e["type"] == "CHECKPOINT"]
    if checkpoint_steps != sorted(set(checkpoint_steps)):
        problems.append(f"checkpoint steps not increasing: {checkpoint_steps}")
    if len(claims) >= 2:
        second = claims[1]
        resumed = query(dsn, "SELECT max(step) AS step FROM job_checkpoints WHERE job_id = %s AND create_time < %s",
                        job_id, second["create_time"])[0]["step"] or 0
        before = [e["progress"]["current_step"] for e in events
                  if e["type"] == "PROGRESS" and claims[0]["seq"] < e["seq"] < second["seq"]]
        after = [e["progress"]["current_step"] for e in events if e["type"] == "PROGRESS" and e["seq"] > second["seq"]]
        last_before = before[-1] if before else 0
        result.update(resumed_from_step=int(resumed), first_step_after=after[0] if after else None,
                      last_step_before=last_before, redone_steps=max(0, last_before - int(resumed)))
        if killed_at is not None:
            # kill -> claimed by another worker (lease expiry + its poll) -> first step trained again
            # (a new training process: Python, torch and the model loaded again).
            first_after = next(e for e in events if e["type"] == "PROGRESS" and e["seq"] > second["seq"]) \
                if after else None
            result["takeover_s"] = round((second["create_time"] - killed_at).total_seconds(), 2)
            result["recovery_s"] = round((first_after["create_time"] - killed_at).total_seconds(), 2) \
                if first_after else None
        if resumed >= options.max_steps:
            # Killed after the last step's checkpoint: the new attempt has nothing left to train
            # (no PROGRESS) and only registers the model.
            if after:
                problems.append(f"steps trained after the final checkpoint: {after}")
        elif not after or after[0] != resumed + 1:
            problems.append(f"not continuous: resumed checkpoint {resumed}, first step after {after[:1]}")
        if after and (after != sorted(after) or after[-1] != options.max_steps):
            problems.append(f"steps after the takeover not increasing to {options.max_steps}: {after}")
        if before != sorted(before):
            problems.append(f"steps before the takeover not increasing: {before}")
        if any(s <= resumed for s in after):
            problems.append("a step at or before the checkpoint was run again")
        if last_before - resumed > options.save_steps:
            problems.append(f"redid {last_before - resumed} steps (> save_steps {options.save_steps})")
    result["problems"] = problems
    result["ok"] = not problems
    return result


# -- scenario: kill -9 of a worker ----------------------------------------------------------------

def spawn_worker(env: dict, log_file: Path) -> subprocess.Popen:
    with open(log_file, "ab") as out:
        return subprocess.Popen([TRAINFORGE, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def create_job_db(dsn: str, data_dir: Path, name: str, options: Options) -> str:
    from trainforge.core.db.pool import open_pool
    from trainforge.core.jobs.spec import JobSpecPreparer
    from trainforge.core.jobs.store import JobStore

    async def create() -> str:
        pool = await open_pool(dsn, min_size=1, max_size=2)
        try:
            prepared = JobSpecPreparer(data_dir / "training-data", data_dir / "models").prepare(job_body(name, options))
            return (await JobStore(pool).create(name, prepared, "reliability", start=True)).job_id
        finally:
            await pool.close()

    return asyncio.run(create())


def kill_at_random_step(dsn: str, job_id: str, target: int, timeout: float) -> dict | None:
    """The job row once its progress reaches `target` (None if the job ended or never got there)."""
    def reached():
        row = query(dsn, "SELECT state, worker_id, progress FROM jobs WHERE id = %s", job_id)[0]
        if row["state"] in TERMINAL:
            return {"ended": True, **row}
        return row if row["state"] == "RUNNING" and row["progress"].get("current_step", 0) >= target else None

    return wait_for(reached, timeout, interval=0.05)


def worker_kill(cluster: EmbeddedPostgres, base: Path, tiny_model: Path, options: Options, rng: random.Random) -> dict:
    dsn = new_database(cluster, "reliability_worker")
    data_dir = prepare_data_dir(base / "worker", tiny_model)
    env = {**os.environ, "DATABASE_URL": dsn, "TRAINFORGE_DATA_DIR": str(data_dir),
           "TRAINFORGE_JOB_LEASE_SECONDS": str(options.lease_s), "TRAINFORGE_LOG_LEVEL": "WARNING"}
    logs = base / "worker-logs"
    logs.mkdir()
    workers = [spawn_worker(env, logs / f"worker-{i}.log") for i in range(2)]
    trials = []
    try:
        for i in range(options.worker_trials):
            started = time.monotonic()
            job_id = create_job_db(dsn, data_dir, f"kill-worker-{i}", options)
            target = rng.randint(2, options.max_steps - 2)
            row = kill_at_random_step(dsn, job_id, target, options.trial_timeout_s)
            trial = {"trial": i, "target_step": target}
            if row is None or row.get("ended"):
                trial.update(ok=False, problems=[f"never killed: {row and row['state']}"], job_id=job_id)
                trials.append(trial)
                log(f"worker_kill {i}: not killed ({row and row['state']})")
                continue
            pid = int(row["worker_id"].split(":")[-2])
            victim = next(w for w in workers if w.pid == pid)
            os.kill(pid, signal.SIGKILL)
            killed_at = db_now(dsn)
            victim.wait(10)
            workers.remove(victim)
            workers.append(spawn_worker(env, logs / f"worker-{i + 2}.log"))
            trial["killed_at_reported_step"] = row["progress"].get("current_step", 0)
            wait_for(lambda: query(dsn, "SELECT state FROM jobs WHERE id = %s", job_id)[0]["state"] in TERMINAL,
                     options.trial_timeout_s, interval=0.2)
            trial.update(check_job(dsn, job_id, options, killed_at), seconds=round(time.monotonic() - started, 1))
            trials.append(trial)
            log(f"worker_kill {i}: killed at ~{trial['killed_at_reported_step']}, resumed from "
                f"{trial.get('resumed_from_step')}, {'ok' if trial['ok'] else trial['problems']}")
    finally:
        for proc in workers:
            stop_process(proc)
    return summarize_trials(trials)


def summarize_trials(trials: list[dict]) -> dict:
    passed = sum(1 for t in trials if t.get("ok"))
    recovery = sorted(t["recovery_s"] for t in trials if t.get("recovery_s") is not None)
    return {"trials": len(trials), "passed": passed, "failed": len(trials) - passed,
            "recovery_s_p50": percentile(recovery, 0.5) if recovery else None,
            "recovery_s_max": recovery[-1] if recovery else None,
            "redone_steps_max": max((t.get("redone_steps", 0) for t in trials), default=0),
            "details": trials}


# -- scenario: kill -9 of serve -------------------------------------------------------------------

@dataclass
class ServeStack:
    data_dir: Path
    env: dict
    http_port: int
    log_dir: Path
    proc: subprocess.Popen | None = None
    starts: int = 0

    def start(self, timeout: float = 90) -> tuple[float | None, str]:
        """Starts serve; seconds until the gateway answers (None if it did not), and its log tail."""
        self.starts += 1
        log_file = self.log_dir / f"serve-{self.starts}.log"
        with open(log_file, "ab") as out:
            self.proc = subprocess.Popen([TRAINFORGE, "serve"], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        started = time.monotonic()

        # Ready = this process printed its ready panel (after its own Envoy is up) and the gateway
        # answers. The health call alone is not enough: an Envoy orphaned by a killed serve still
        # listens on the port and forwards to whichever server now holds the gRPC port.
        def ready() -> bool:
            if self.proc.poll() is not None:
                return True
            return "trainforge is running" in log_file.read_text(errors="replace") and \
                Rest(self.http_port).call("GET", "/api/training/health", timeout=2)[0] == 200

        wait_for(ready, timeout, interval=0.2)
        up = self.proc.poll() is None and "trainforge is running" in log_file.read_text(errors="replace")
        return (round(time.monotonic() - started, 2) if up else None), log_file.read_text(errors="replace")[-1500:]

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=60)

    def orphans(self) -> list[int]:
        """Pids of live processes whose command line names this stack's data dir (Envoy's config,
        job processes) and that are not PostgreSQL (which outlives serve by design)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(self.data_dir) in cmdline and "postgres" not in cmdline.split(" ", 1)[0]:
                found.append(int(entry.name))
        return found


def embedded_dsn(data_dir: Path) -> str:
    from trainforge.core.settings import load_settings
    from trainforge.server.service import embedded_postgres_dir

    pid_file = embedded_postgres_dir(load_settings(env={}, data_dir=str(data_dir))) / "postmaster.pid"
    port = int(pid_file.read_text().splitlines()[3])
    return f"postgresql://postgres@127.0.0.1:{port}/trainforge"


def serve_env(data_dir: Path, options: Options, database_url: str = "", workers: int = 1) -> tuple[dict, int]:
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(TRAINFORGE_DATA_DIR=str(data_dir), TRAINFORGE_HTTP_PORT=str(http_port),
               TRAINFORGE_GRPC_PORT=str(free_port()), TRAINFORGE_ENVOY_ADMIN_PORT=str(free_port()),
               TRAINFORGE_METRICS_PORT=str(free_port()), TRAINFORGE_JOB_LEASE_SECONDS=str(options.lease_s),
               TRAINFORGE_WORKERS=str(workers), TRAINFORGE_LOG_LEVEL="WARNING")
    if database_url:
        env["DATABASE_URL"] = database_url
    return env, http_port


def serve_kill(base: Path, tiny_model: Path, options: Options, rng: random.Random) -> dict:
    data_dir = prepare_data_dir(base / "serve", tiny_model)
    env, http_port = serve_env(data_dir, options)
    (base / "serve-logs").mkdir()
    stack = ServeStack(data_dir, env, http_port, base / "serve-logs")
    first_ready, tail = stack.start()
    if first_ready is None:
        stack.stop()
        return {"trials": 0, "passed": 0, "failed": 0, "error": f"serve did not start: {tail}"}
    dsn = embedded_dsn(data_dir)
    rest = Rest(http_port, create_admin_key(dsn))
    trials = []
    try:
        for i in range(options.serve_trials):
            started = time.monotonic()
            status, body = rest.call("POST", "/api/training/jobs?start=true", job_body(f"kill-serve-{i}", options))
            if status != 200:
                trials.append({"trial": i, "ok": False, "problems": [f"CreateJob answered {status}: {body}"]})
                continue
            job_id = body["data"]["job_id"]
            target = rng.randint(2, options.max_steps - 2)
            row = kill_at_random_step(dsn, job_id, target, options.trial_timeout_s)
            trial = {"trial": i, "target_step": target, "job_id": job_id}
            if row is None or row.get("ended"):
                trial.update(ok=False, problems=[f"never killed: {row and row['state']}"])
                trials.append(trial)
                continue
            stack.kill9()
            killed_at = db_now(dsn)
            trial["killed_at_reported_step"] = row["progress"].get("current_step", 0)
            time.sleep(0.5)
            orphans = stack.orphans()
            trial["orphans_after_kill"] = len(orphans)
            ready_s, tail = stack.start()
            trial["restart_ready_s"] = ready_s
            if ready_s is None:
                # What an operator would do by hand: kill what the dead serve left behind, start again.
                trial["restart_failed_log"] = tail[-600:]
                for pid in stack.orphans():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                stack.stop()
                ready_s, tail = stack.start()
                trial["restart_ready_after_manual_cleanup_s"] = ready_s
                if ready_s is None:
                    trial.update(ok=False, problems=[f"serve did not restart: {tail[-600:]}"])
                    trials.append(trial)
                    break
            dsn = embedded_dsn(data_dir)
            wait_for(lambda: query(dsn, "SELECT state FROM jobs WHERE id = %s", job_id)[0]["state"] in TERMINAL,
                     options.trial_timeout_s, interval=0.3)
            trial.update(check_job(dsn, job_id, options, killed_at), seconds=round(time.monotonic() - started, 1))
            if trial["restart_ready_s"] is None:
                trial["ok"] = False
                trial["problems"].append("restart needed orphaned children killed by hand")
            trials.append(trial)
            log(f"serve_kill {i}: orphans {len(orphans)}, ready in {trial['restart_ready_s']} s, resumed from "
                f"{trial.get('resumed_from_step')}, {'ok' if trial['ok'] else trial['problems']}")
    finally:
        stack.stop()
        for pid in stack.orphans():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stop_embedded(data_dir)
    summary = summarize_trials(trials)
    summary["first_start_s"] = first_ready
    ready = [t["restart_ready_s"] for t in trials if t.get("restart_ready_s") is not None]
    after_cleanup = [t["restart_ready_after_manual_cleanup_s"] for t in trials
                     if t.get("restart_ready_after_manual_cleanup_s") is not None]
    summary["restart_ready_s_max"] = max(ready, default=None)
    summary["restart_ready_after_manual_cleanup_s_max"] = max(after_cleanup, default=None)
    summary["restarts_needing_manual_cleanup"] = sum(1 for t in trials if t.get("restart_ready_s", 0) is None)
    return summary


def stop_embedded(data_dir: Path) -> None:
    from trainforge.core.settings import load_settings
    from trainforge.server.service import embedded_postgres_dir

    folder = embedded_postgres_dir(load_settings(env={}, data_dir=str(data_dir)))
    if (folder / "postmaster.pid").exists():
        cluster = EmbeddedPostgres(folder)
        cluster._bin, cluster._user = cluster._find_bin(), cluster._prepare_data_dir()
        cluster._pg_ctl_stop("fast", 60)


# -- scenario: PostgreSQL restarted under a running service ---------------------------------------

class Watcher(threading.Thread):
    """WatchJob over REST (NDJSON); reconnects with after_sequence = the last sequence seen."""

    def __init__(self, port: int, token: str, job_id: str):
        super().__init__(daemon=True)
        self.port, self.token, self.job_id = port, token, job_id
        self.seen: list[int] = []
        self.reconnects = 0
        self.errors: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not self.done.is_set():
            after = self.seen[-1] if self.seen else 0
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                conn.request("GET", f"/api/training/jobs/{self.job_id}/events?after_sequence={after}",
                             headers={"authorization": f"Bearer {self.token}"})
                response = conn.getresponse()
                if response.status != 200:
                    self.errors.append(f"{response.status} {response.read()[:200]!r}")
                else:
                    last_status, broken = "", False
                    for line in response:
                        if not line.strip():
                            continue
                        item = json.loads(line)
                        if "data" not in item:  # an error object ends a broken stream
                            self.errors.append(json.dumps(item)[:300])
                            broken = True
                            break
                        self.seen.append(int(item["data"]["sequence"]))
                        last_status = item["data"].get("status", "").removeprefix("JOB_STATE_")
                    if not broken and last_status in TERMINAL:  # the server ends the stream when the job ends
                        self.done.set()
                        return
                conn.close()
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            self.reconnects += 1
            time.sleep(0.5)


def pg_restart(cluster: EmbeddedPostgres, base: Path, tiny_model: Path, options: Options) -> dict:
    dsn = new_database(cluster, "reliability_pg")
    data_dir = prepare_data_dir(base / "pg", tiny_model)
    slow = Options(**{**asdict(options), "max_steps": max(options.max_steps, 120), "save_steps": 10})
    env, http_port = serve_env(data_dir, slow, database_url=dsn)
    env["TRAINFORGE_JOB_LEASE_SECONDS"] = "10"
    (base / "pg-logs").mkdir()
    stack = ServeStack(data_dir, env, http_port, base / "pg-logs")
    ready, tail = stack.start()
    if ready is None:
        stack.stop()
        return {"recovered": False, "error": f"serve did not start: {tail}"}
    rest = Rest(http_port, create_admin_key(dsn))
    result: dict = {}
    try:
        jobs = []
        for i in range(options.pg_restart_jobs):
            status, body = rest.call("POST", "/api/training/jobs?start=true", job_body(f"pg-restart-{i}", slow))
            assert status == 200, (status, body)
            jobs.append(body["data"]["job_id"])
        watcher = Watcher(http_port, rest.token, jobs[0])
        watcher.start()
        wait_for(lambda: query(dsn, "SELECT progress FROM jobs WHERE id = %s", jobs[0])[0]["progress"]
                 .get("current_step", 0) >= 10, options.trial_timeout_s)
        restarted = time.monotonic()
        out = cluster._run([str(cluster._bin / "pg_ctl"), "restart", "-w", "-m", "fast", "-D", str(cluster.data_dir),
                            "-l", str(cluster.log_file)],
                           timeout=120, new_session=True)
        pg_back = time.monotonic() - restarted
        failures = 0

        def api_ok() -> bool:
            nonlocal failures
            try:
                ok = rest.call("GET", "/api/training/models?page_size=1", timeout=5)[0] == 200 and \
                    rest.call("GET", f"/api/training/jobs/{jobs[0]}", timeout=5)[0] == 200
            except OSError:
                ok = False
            failures += not ok
            return ok

        recovered = wait_for(api_ok, options.pg_recovery_limit_s, interval=0.2)
        api_back = time.monotonic() - restarted
        wait_for(lambda: all(r["state"] in TERMINAL for r in query(dsn, "SELECT state FROM jobs WHERE id = ANY(%s)",
                                                                      jobs)), options.trial_timeout_s * 2, 0.5)
        watcher.done.wait(30)
        states, gaps = {}, {}
        for job_id in jobs:
            seqs = [r["seq"] for r in query(dsn, "SELECT seq FROM job_events WHERE job_id = %s ORDER BY seq", job_id)]
            gaps[job_id] = seqs != list(range(1, len(seqs) + 1))
            job = query(dsn, "SELECT state, error FROM jobs WHERE id = %s", job_id)[0]
            states[job_id] = job["state"] if job["state"] == "SUCCEEDED" else \
                f"{job['state']}: {(job['error'] or {}).get('message', '')[:300]}"
        db_seqs = [r["seq"] for r in query(dsn, "SELECT seq FROM job_events WHERE job_id = %s ORDER BY seq", jobs[0])]
        duplicates = len(watcher.seen) - len(set(watcher.seen))
        result = {
            "pg_ctl_restart_s": round(pg_back, 2), "pg_ctl_output": out.stdout.strip()[-300:],
            "recovered": bool(recovered), "api_recovered_s": round(api_back, 2) if recovered else None,
            "recovery_limit_s": options.pg_recovery_limit_s, "failed_probes": failures,
            "jobs": states, "jobs_succeeded": sum(s == "SUCCEEDED" for s in states.values()),
            "event_sequence_gaps": sum(gaps.values()),
            "watcher": {"events_seen": len(watcher.seen), "events_in_db": len(db_seqs), "duplicates": duplicates,
                        "missing": len(set(db_seqs) - set(watcher.seen)), "in_order": watcher.seen == sorted(watcher.seen),
                        "reconnects": watcher.reconnects, "errors": watcher.errors[:5],
                        "finished": watcher.done.is_set()},
        }
        result["ok"] = (result["recovered"] and result["jobs_succeeded"] == len(jobs) and not result["event_sequence_gaps"]
                        and duplicates == 0 and result["watcher"]["missing"] == 0 and result["watcher"]["in_order"])
        log(f"pg_restart: {json.dumps(result)[:900]}")
    finally:
        stack.stop()
    return result


# -- scenario: mixed load through Envoy -----------------------------------------------------------

OPS = (("get_model", 25), ("search", 15), ("register", 15), ("list_jobs", 15), ("get_job", 15), ("create_cancel", 15))


async def _client(port: int, token: str, deadline: float, seed: int, models: list[str], jobs: list[str],
                  spec: dict, out: dict) -> None:
    rng = random.Random(seed)
    conn = HttpConnection("127.0.0.1", port, token)
    names, weights = zip(*OPS, strict=True)

    async def call(op: str, method: str, path: str, body: dict | None = None) -> dict | None:
        started = time.perf_counter()
        try:
            status, payload = await conn.request(method, path, json.dumps(body).encode() if body is not None else b"")
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            conn.close()
            status, payload = 0, str(exc).encode()
        out.setdefault(op, []).append((time.perf_counter() - started) * 1000)
        if not 200 <= status < 300:
            out.setdefault("errors", []).append(f"{op} {method} {path}: {status} {payload[:200]!r}")
            return None
        return json.loads(payload) if payload else {}

    counter = 0
    while time.monotonic() < deadline:
        op = rng.choices(names, weights)[0]
        counter += 1
        if op == "get_model":
            await call(op, "GET", f"/api/training/models/{rng.choice(models)}")
        elif op == "search":
            await call(op, "POST", "/api/training/models/search",
                       {"filter": 'metrics.accuracy > 0.5 AND model_type = "fine_tuned"', "page_size": 20})
        elif op == "register":
            await call(op, "POST", "/api/training/models",
                       {"name": rng.choice(models), "version": f"load-{seed}-{counter}", "model_type": "fine_tuned",
                        "performance_metrics": {"accuracy": rng.random()}})
        elif op == "list_jobs":
            await call(op, "GET", "/api/training/jobs?page_size=20")
        elif op == "get_job":
            await call(op, "GET", f"/api/training/jobs/{rng.choice(jobs)}")
        else:
            created = await call(op, "POST", "/api/training/jobs", {**spec, "name": f"load-{seed}-{counter}"})
            if created is not None:
                await call("cancel", "POST", f"/api/training/jobs/{created['data']['job_id']}/cancel", {})
    conn.close()


def _load_process(port: int, token: str, clients: range, start_at: float, seconds: float, models: list[str],
                  jobs: list[str], spec: dict) -> dict:
    time.sleep(max(0.0, start_at - time.time()))
    deadline = time.monotonic() + seconds
    outs = [{} for _ in clients]

    async def main() -> None:
        await asyncio.gather(*(_client(port, token, deadline, c, models, jobs, spec, out)
                               for c, out in zip(clients, outs, strict=True)))

    asyncio.run(main())
    merged: dict = {}
    for out in outs:
        for key, values in out.items():
            merged.setdefault(key, []).extend(values)
    return merged


def load(cluster: EmbeddedPostgres, base: Path, tiny_model: Path, options: Options) -> dict:
    dsn = new_database(cluster, "reliability_load")
    data_dir = prepare_data_dir(base / "load", tiny_model)
    env, http_port = serve_env(data_dir, options, database_url=dsn, workers=0)
    env["TRAINFORGE_DB_POOL_MAX"] = "32"
    (base / "load-logs").mkdir()
    stack = ServeStack(data_dir, env, http_port, base / "load-logs")
    ready, tail = stack.start()
    if ready is None:
        stack.stop()
        return {"error": f"serve did not start: {tail}"}
    token = create_admin_key(dsn)
    rest = Rest(http_port, token)
    try:
        models = []
        for i in range(50):
            name = f"load-model-{i}"
            status, body = rest.call("POST", "/api/training/models", {
                "name": name, "version": "1.0.0", "model_type": "fine_tuned" if i % 2 else "pretrained",
                "performance_metrics": {"accuracy": i / 50}})
            assert status == 200, (status, body)
            models.append(name)
        spec = job_body("x", options)
        jobs = []
        for i in range(20):
            status, body = rest.call("POST", "/api/training/jobs", {**spec, "name": f"load-seed-{i}"})
            assert status == 200, (status, body)
            jobs.append(body["data"]["job_id"])
        per = [range(p, options.load_clients, options.load_procs) for p in range(options.load_procs)]
        start_at = time.time() + 3
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(options.load_procs) as pool:
            parts = pool.starmap(_load_process, [(http_port, token, clients, start_at, options.load_seconds, models,
                                                  jobs, spec) for clients in per])
        merged: dict = {}
        for part in parts:
            for key, values in part.items():
                merged.setdefault(key, []).extend(values)
        errors = merged.pop("errors", [])
        every = sorted(v for values in merged.values() for v in values)
        by_op = {op: {"count": len(v), "p50_ms": round(percentile(sorted(v), 0.5), 2),
                      "p99_ms": round(percentile(sorted(v), 0.99), 2)} for op, v in sorted(merged.items())}
        result = {"clients": options.load_clients, "seconds": options.load_seconds, "calls": len(every),
                  "calls_per_s": round(len(every) / options.load_seconds, 1), "errors": len(errors),
                  "first_errors": errors[:10], "p50_ms": round(percentile(every, 0.5), 2),
                  "p99_ms": round(percentile(every, 0.99), 2), "by_op": by_op}
        log(f"load: {json.dumps({k: v for k, v in result.items() if k != 'by_op'})[:600]}")
        return result
    finally:
        stack.stop()


# -- scenario: schemathesis -----------------------------------------------------------------------

UNIMPLEMENTED_OPERATIONS = ("GenerateSyntheticData",)


def run_schemathesis(cluster: EmbeddedPostgres, base: Path, tiny_model: Path, options: Options) -> dict:
    dsn = new_database(cluster, "reliability_schemathesis")
    data_dir = prepare_data_dir(base / "schemathesis", tiny_model)
    env, http_port = serve_env(data_dir, options, database_url=dsn, workers=0)
    (base / "schemathesis-logs").mkdir()
    stack = ServeStack(data_dir, env, http_port, base / "schemathesis-logs")
    ready, tail = stack.start()
    if ready is None:
        stack.stop()
        return {"error": f"serve did not start: {tail}"}
    token = create_admin_key(dsn)
    har = base / "schemathesis.har"
    try:
        started = time.monotonic()
        proc = subprocess.run(
            [SCHEMATHESIS, "run", f"http://127.0.0.1:{http_port}/api/docs/openapi.json",
             "-H", f"Authorization: Bearer {token}", "--max-examples", str(options.schemathesis_examples),
             "--seed", str(options.seed), "--max-time", str(options.schemathesis_max_time_s),
             "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                         "response_schema_conformance",
             "--phases", "examples,coverage,fuzzing", "--request-timeout", "30", "--no-color",
             "--report", "har", "--report-har-path", str(har)],
            capture_output=True, text=True, timeout=options.schemathesis_max_time_s + 120)
        seconds = time.monotonic() - started
        statuses: dict[str, int] = {}
        server_errors = []
        unimplemented = 0
        paths = {}
        for path, ops in json.loads(Path(ROOT / "gateway" / "openapi.json").read_text())["paths"].items():
            for op in ops.values():
                paths[op["operationId"]] = path
        unimplemented_prefixes = tuple(paths[o].split("{")[0] for o in UNIMPLEMENTED_OPERATIONS)
        for entry in json.loads(har.read_text())["log"]["entries"] if har.exists() else []:
            status = entry["response"]["status"]
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status >= 500:
                url = entry["request"]["url"].split(str(http_port), 1)[-1]
                text = entry["response"].get("content", {}).get("text", "")
                if status == 501 and '"code":12' in text and url.startswith(unimplemented_prefixes):
                    unimplemented += 1
                else:
                    server_errors.append(f"{entry['request']['method']} {url}: {status} {text[:200]}")
        summary_lines = [line for line in proc.stdout.splitlines() if line.strip()][-25:]
        result = {"requests": sum(statuses.values()), "statuses": statuses, "server_errors_5xx": len(server_errors),
                  "unimplemented_501": unimplemented, "first_server_errors": server_errors[:10],
                  "exit_code": proc.returncode, "seconds": round(seconds, 1), "max_examples": options.schemathesis_examples,
                  "summary": summary_lines}
        (base / "schemathesis.out").write_text(proc.stdout + proc.stderr)
        log(f"schemathesis: {json.dumps({k: v for k, v in result.items() if k != 'summary'})[:800]}")
        return result
    finally:
        stack.stop()


# -- the run --------------------------------------------------------------------------------------

def new_database(cluster: EmbeddedPostgres, name: str) -> str:
    with psycopg.connect(cluster.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = cluster.dsn_for(name)
    migrate.upgrade(dsn)
    return dsn


@contextmanager
def private_cluster(base: Path):
    folder = base / "pg"
    folder.mkdir(mode=0o711)
    cluster = EmbeddedPostgres(folder / "data", database="postgres")  # durable, as serve runs it
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop(mode="immediate")


def run(options: Options) -> dict:
    from tests.training.conftest import build_tiny_model

    rng = random.Random(options.seed)
    base = Path(tempfile.mkdtemp(prefix="trainforge-reliability-", dir="/tmp"))
    base.chmod(0o711)
    started = time.monotonic()
    metrics: dict = {}
    timings: dict = {}
    try:
        tiny_model = build_tiny_model(base / "tiny-llama")
        with private_cluster(base) as cluster:
            versions = collect_versions(cluster.dsn, mlflow=False)
            versions["schemathesis"] = _version_of("schemathesis")
            for name in options.only:
                log(f"--- {name}")
                t0 = time.monotonic()
                try:
                    if name == "worker_kill":
                        metrics[name] = worker_kill(cluster, base, tiny_model, options, rng)
                    elif name == "serve_kill":
                        metrics[name] = serve_kill(base, tiny_model, options, rng)
                    elif name == "pg_restart":
                        metrics[name] = pg_restart(cluster, base, tiny_model, options)
                    elif name == "load":
                        metrics[name] = load(cluster, base, tiny_model, options)
                    elif name == "schemathesis":
                        metrics[name] = run_schemathesis(cluster, base, tiny_model, options)
                except Exception as exc:  # noqa: BLE001 - one scenario's crash is its result; the others still run
                    metrics[name] = {"error": f"{type(exc).__name__}: {exc}",
                                     "traceback": traceback.format_exc()[-1500:]}
                    log(f"{name} crashed: {traceback.format_exc()}")
                timings[name] = round(time.monotonic() - t0, 1)
    finally:
        if not options.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            log(f"kept {base}")
    document = {
        "benchmark": "reliability",
        "card": cpu_card(),
        "versions": versions,
        "date": date.today().isoformat(),
        "setup": {**{k: v for k, v in asdict(options).items() if k not in ("out",)},
                  "scenario_seconds": timings, "total_seconds": round(time.monotonic() - started, 1),
                  "python": platform.python_version()},
        "metrics": metrics,
    }
    document["ratios"] = ratios(metrics)
    return document


def _version_of(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def ratios(metrics: dict) -> dict:
    """The figures the issue asks for, each as a number (1.0 = all good for the pass fractions)."""
    out: dict = {}
    for name in ("worker_kill", "serve_kill"):
        m = metrics.get(name) or {}
        if m.get("trials"):
            out[f"{name}_passed_fraction"] = round(m["passed"] / m["trials"], 3)
    pg = metrics.get("pg_restart") or {}
    if "recovered" in pg:
        out["pg_restart_recovered"] = 1.0 if pg.get("ok") else 0.0
    ld = metrics.get("load") or {}
    if "calls" in ld:
        out["load_error_fraction"] = round(ld["errors"] / max(1, ld["calls"]), 6)
    st = metrics.get("schemathesis") or {}
    if "server_errors_5xx" in st:
        out["schemathesis_5xx"] = st["server_errors_5xx"]
    return out


def parse_args(argv: list[str] | None = None) -> Options:
    d = Options()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {', '.join(SCENARIOS)}")
    p.add_argument("--worker-trials", type=int, default=d.worker_trials)
    p.add_argument("--serve-trials", type=int, default=d.serve_trials)
    p.add_argument("--max-steps", type=int, default=d.max_steps)
    p.add_argument("--save-steps", type=int, default=d.save_steps)
    p.add_argument("--lease", type=float, default=d.lease_s, help="job lease seconds")
    p.add_argument("--load-clients", type=int, default=d.load_clients)
    p.add_argument("--load-seconds", type=float, default=d.load_seconds)
    p.add_argument("--load-procs", type=int, default=d.load_procs)
    p.add_argument("--schemathesis-examples", type=int, default=d.schemathesis_examples)
    p.add_argument("--schemathesis-max-time", type=int, default=d.schemathesis_max_time_s)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--keep", action="store_true", help="keep the temp folder (logs) for a post-mortem")
    p.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/reliability-<date>.json")
    a = p.parse_args(argv)
    only = tuple(s.strip() for s in a.only.split(",") if s.strip())
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return Options(worker_trials=a.worker_trials, serve_trials=a.serve_trials, max_steps=a.max_steps,
                   save_steps=a.save_steps, lease_s=a.lease, load_clients=a.load_clients, load_seconds=a.load_seconds,
                   load_procs=a.load_procs, schemathesis_examples=a.schemathesis_examples,
                   schemathesis_max_time_s=a.schemathesis_max_time, seed=a.seed, only=only, out=a.out, keep=a.keep)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    document = run(options)
    out = options.out or RESULTS / f"reliability-{date.today().strftime('%Y%m%d')}.json"
    out.write_text(json.dumps(document, indent=2, default=str) + "\n")
    log(f"wrote {out}: {json.dumps(document['ratios'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

