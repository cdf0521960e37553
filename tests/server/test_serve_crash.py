"""`kill -9` of `trainforge serve`, then `serve` again on the same data directory: nothing the dead
server started may block the new one (Envoy held its ports before), the new one is ready within
10 s, and a job that was training resumes at once from its checkpoint (not after its lease) and
finishes with exactly one registered version."""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.jobs.conftest import tiny_job, wait_for
from tests.server.test_cli import TOKEN_RE, TRAINFORGE, _processes_mentioning, wide_env
from tests.support import Rest, free_port
from tests.training.conftest import build_tiny_model, qa_rows
from trainforge.core.settings import load_settings
from trainforge.server.service import open_database

READY_LINE = "Ctrl-C stops it"


class Serve:
    """One `trainforge serve` process on fixed ports, read up to its ready panel."""

    def __init__(self, data_dir: Path, env: dict[str, str], http_port: int):
        self.url = f"http://127.0.0.1:{http_port}"
        self.started = time.monotonic()
        self.process = subprocess.Popen([TRAINFORGE, "serve", "--data-dir", str(data_dir), "--grpc-port", "0",
                                         "--http-port", str(http_port)], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env)
        self.banner = ""
        deadline = time.monotonic() + 90
        while READY_LINE not in self.banner and time.monotonic() < deadline and self.process.poll() is None:
            self.banner += self.process.stdout.readline()
        if READY_LINE not in self.banner:
            self.stop()
            raise AssertionError(f"serve did not start: {self.banner}\n{self.process.stderr.read()}")
        self.ready_seconds = time.monotonic() - self.started

    def health_seconds(self) -> float:
        """Seconds from the start until GET /api/training/health answered 200 through Envoy."""
        with urllib.request.urlopen(f"{self.url}/api/training/health", timeout=10) as reply:
            assert reply.status == 200
        return time.monotonic() - self.started

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.communicate()


def _query(data_dir: Path, sql: str, *params) -> list[dict]:
    with open_database(load_settings(env={}, data_dir=str(data_dir)), share_running=True) as database:
        with psycopg.connect(database.dsn, row_factory=dict_row) as conn:
            return conn.execute(sql, params).fetchall()


@pytest.fixture
def crash_dir() -> Iterator[Path]:
    # As root the embedded cluster runs as `postgres`, which must traverse to its data directory.
    root = Path(tempfile.mkdtemp(prefix="trainforge-crash-serve-", dir="/tmp"))
    root.chmod(0o711)
    data_dir = root / "data"
    build_tiny_model(data_dir / "models" / "tiny-llama")
    (data_dir / "training-data").mkdir(parents=True)
    (data_dir / "training-data" / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_rows(repeat=6)))
    yield data_dir
    subprocess.run(["rm", "-rf", str(root)], check=False)


def _env(**more: str) -> dict[str, str]:
    # Fixed ports, as in production: an orphaned Envoy keeps them, which is what broke restarts.
    return {**wide_env(), "TRAINFORGE_ENVOY_ADMIN_PORT": str(free_port()), "TRAINFORGE_METRICS_PORT": "0", **more}


def _kill_9(serve: Serve) -> None:
    serve.process.send_signal(signal.SIGKILL)
    serve.process.communicate(timeout=30)


def test_serve_starts_again_at_once_after_kill_9(crash_dir: Path):
    """The fast variant: no job, only the children (Envoy, an API process) of a SIGKILLed serve."""
    env, http_port = _env(TRAINFORGE_API_PROCESSES="2", TRAINFORGE_WORKERS="0"), free_port()
    first = Serve(crash_dir, env, http_port)
    second = None
    try:
        _kill_9(first)
        second = Serve(crash_dir, env, http_port)
        health = second.health_seconds()
        print(f"serve after kill -9: ready panel {second.ready_seconds:.1f} s, health 200 {health:.1f} s")
        assert health < 10, f"ready after {health:.1f} s"
    finally:
        for serve in (first, second):
            if serve is not None:
                serve.stop()
    # Nothing of either server is left: the second one's children stopped with it, the first one's
    # were gone before it started.
    assert _processes_mentioning(str(crash_dir)) == []


@pytest.mark.slow
def test_a_job_resumes_from_its_checkpoint_after_serve_is_killed(crash_dir: Path):
    # A lease far longer than the test: only the dead-worker check can resume the job in time.
    env, http_port = _env(TRAINFORGE_JOB_LEASE_SECONDS="600"), free_port()
    first = Serve(crash_dir, env, http_port)
    second = None
    try:
        [token] = TOKEN_RE.findall(first.banner)
        rest = Rest(first.url, token)
        created = rest.post("/api/training/jobs?start=true", tiny_job(
            "crash-serve", hyperparameters={"max_steps": 60, "epochs": 100, "save_steps": 5, "eval_steps": 100000}))
        assert created.status == 200, created
        job_id = created.body["data"]["job_id"]
        wait_for(lambda: _query(crash_dir, "SELECT 1 FROM job_checkpoints WHERE job_id = %s", job_id), timeout=240)

        _kill_9(first)
        killed_at = _query(crash_dir, "SELECT max(step) AS step FROM job_checkpoints WHERE job_id = %s",
                           job_id)[0]["step"]
        second = Serve(crash_dir, env, http_port)
        health = second.health_seconds()
        print(f"serve after kill -9: ready panel {second.ready_seconds:.1f} s, health 200 {health:.1f} s")
        assert health < 10, f"ready after {health:.1f} s"
        wait_for(lambda: _query(crash_dir, "SELECT state FROM jobs WHERE id = %s", job_id)[0]["state"]
                 in ("SUCCEEDED", "FAILED", "CANCELLED"), timeout=300)
        job = _query(crash_dir, "SELECT * FROM jobs WHERE id = %s", job_id)[0]
        events = _query(crash_dir, "SELECT * FROM job_events WHERE job_id = %s ORDER BY seq", job_id)
        versions = _query(crash_dir, "SELECT id FROM model_versions WHERE lineage->>'job_id' = %s", job_id)
    finally:
        for serve in (first, second):
            if serve is not None:
                serve.stop()

    assert job["state"] == "SUCCEEDED", (job["error"], [e["message"] for e in events][-10:])
    assert job["attempt"] == 2
    takeover = next(e["seq"] for e in events if "lease of the previous worker expired" in e["message"])
    assert any("is gone" in e["message"] for e in events if e["seq"] < takeover)
    after = [e["progress"]["current_step"] for e in events if e["seq"] > takeover and e["type"] == "PROGRESS"]
    # Resumed from its checkpoint: the first step after the takeover is the one after a
    # checkpoint at or after the one seen before the kill, never step 1.
    assert after and after[0] > killed_at and after[0] - 1 in {
        r["step"] for r in _checkpoints_seen(events)}, (killed_at, after[:3])
    assert after == sorted(after) and after[-1] == 60
    assert len(versions) == 1 and str(versions[0]["id"]) == str(job["result_model_version_id"])


def _checkpoints_seen(events: list[dict]) -> list[dict]:
    return [{"step": int(e["message"].rsplit(" ", 1)[1])} for e in events if e["type"] == "CHECKPOINT"]

