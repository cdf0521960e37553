"""The `trainforge` command: the registry client against the suite's gRPC server, `db upgrade`
against a fresh database, and `serve` and `demo` as real processes (they start their own embedded
cluster and Envoy, which takes about 3 s each on a 2-core VM)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from tests.support import free_port
from trainforge.core.db import migrate
from trainforge.server.cli import app
from trainforge.server.service import mask_password

runner = CliRunner()
TRAINFORGE = str(Path(sys.executable).with_name("trainforge"))

SEED = {
    "name": "cli_roundtrip_model", "version": "1.0.0", "description": "Fine-tuned conversational model",
    "model_type": "fine_tuned", "size_mb": 2048, "parameter_count": 355000000,
    "architecture": {"model_family": "GPT", "layers": 24, "hidden_size": 1024, "attention_heads": 16,
                     "vocab_size": 50257, "max_sequence_length": 1024},
    "performance_metrics": {"accuracy": 0.87, "f1_score": 0.84, "inference_latency_ms": 150},
}


def invoke(*args: str, expect: int = 0, api_key: str = ""):
    # The models commands read the key from TRAINFORGE_API_KEY, as a user would set it.
    result = runner.invoke(app, list(args), env={"TRAINFORGE_API_KEY": api_key})
    assert result.exit_code == expect, f"exit {result.exit_code}: {result.output}{result.exception!r}"
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def server(grpc_server) -> str:
    return f"127.0.0.1:{grpc_server.port}"


@pytest.fixture
def cli(api_keys):
    """Runs `trainforge ...` in-process with the admin key; returns the output."""
    def run(*args: str, expect: int = 0, api_key: str | None = None) -> str:
        return invoke(*args, expect=expect, api_key=api_keys["admin"] if api_key is None else api_key).output
    return run


@pytest.fixture
def cli_json(api_keys):
    """Runs `trainforge ... --json` in-process with the admin key; returns the parsed output."""
    def run(*args: str) -> dict:
        return json.loads(invoke(*args, "--json", api_key=api_keys["admin"]).stdout)
    return run


def test_models_commands_round_trip(server: str, cli, cli_json, tmp_path: Path):
    name = SEED["name"]
    body = tmp_path / "seed.json"
    body.write_text(json.dumps(SEED))

    first = cli_json("models", "register", "--file", str(body), "--server", server)["data"]
    assert (first["name"], first["version"], first["architecture"]["layers"]) == (name, "1.0.0", 24)
    assert first["parameter_count"] == "355000000"  # int64 is a string in proto JSON

    second = cli_json("models", "register", "--name", name, "--version", "2.0.0", "--model-type", "fine_tuned",
                      "--description", "more dialogue data", "--metric", "accuracy=0.93", "--metric", "f1_score=0.9",
                      "--metric", "inference_latency_ms=120", "--tag", "chat", "--tag", "cli",
                      "--server", server)["data"]
    assert second["performance_metrics"] == {"accuracy": 0.93, "f1_score": 0.9, "inference_latency_ms": 120}
    assert second["tags"] == ["chat", "cli"]

    model = cli_json("models", "get", name, "--server", server)["data"]
    assert (model["version_count"], model["latest_version"]) == (2, "2.0.0")
    version = cli_json("models", "get", name, "--version", "1.0.0", "--server", server)["data"]
    assert version["model_version_id"] == first["model_version_id"]

    assert name in [m["name"] for m in cli_json("models", "list", "--server", server)["data"]]

    found = cli_json("models", "search", "--filter", f'name = "{name}" AND metrics.accuracy > 0.9',
                     "--server", server)
    assert [v["version"] for v in found["data"]] == ["2.0.0"]
    by_text = cli_json("models", "search", "--query", "roundtrip", "--order-by", "version", "--page-size", "1",
                       "--server", server)
    assert [v["version"] for v in by_text["data"]] == ["1.0.0"] and by_text["next_page_token"]

    comparison = cli_json("models", "compare", f"{name}:1.0.0", f"{name}:2.0.0", "--server", server)["data"]
    assert [v["version"] for v in comparison["versions"]] == ["1.0.0", "2.0.0"]
    accuracy = next(m for m in comparison["metrics"] if m["metric"] == "accuracy")
    assert accuracy["deltas"][1] == pytest.approx(0.06)
    assert accuracy["best_model_version_id"] == second["model_version_id"]

    deleted = cli_json("models", "delete", name, "--version", "1.0.0", "--server", server)["data"]
    assert deleted["version"] == "1.0.0"
    out = cli("models", "get", name, "--version", "1.0.0", "--server", server, expect=1)
    assert "NOT_FOUND" in out

    assert "deleted model cli_roundtrip_model with 1 version(s)" in cli("models", "delete", name, "--server", server)
    assert "NOT_FOUND" in cli("models", "get", name, "--server", server, expect=1)


def test_models_tables(server: str, cli):
    name = "cli_table_model"
    cli("models", "register", "--name", name, "--version", "1.0.0", "--model-type", "pretrained",
        "--metric", "accuracy=0.5", "--server", server)
    cli("models", "register", "--name", name, "--version", "1.1.0", "--model-type", "pretrained",
        "--metric", "accuracy=0.75", "--server", server)
    try:
        shown = cli("models", "get", name, "--server", server)
        assert name in shown and "1.1.0" in shown and "accuracy=0.75" in shown
        compared = cli("models", "compare", f"{name}:1.0.0", f"{name}:1.1.0", "--server", server)
        assert "0.75 (+0.25) ★" in compared
        assert "1.1.0" in cli("models", "search", "--filter", f'name = "{name}"', "--server", server)
    finally:
        cli("models", "delete", name, "--force", "--server", server)


def test_bad_register_lists_every_violation(server: str, cli):
    out = cli("models", "register", "--name", "cli_bad_model", "--version", "not a version",
              "--model-type", "gigantic", "--server", server, expect=1)
    assert "INVALID_ARGUMENT" in out
    assert re.search(r"version: must be 1-64 characters", out)
    assert re.search(r"model_type: must be one of pretrained, fine_tuned, compressed, custom", out)


def test_bad_command_line_values_are_usage_errors(server: str, cli, tmp_path: Path):
    assert "NAME=NUMBER" in cli("models", "register", "--name", "x", "--metric", "accuracy", "--server", server,
                                expect=2)
    body = tmp_path / "bad.json"
    body.write_text('{"name": "x", "no_such_field": 1}')
    assert "no_such_field" in cli("models", "register", "--file", str(body), "--server", server, expect=2)


def test_missing_or_weak_api_key(server: str, cli, api_keys):
    out = cli("models", "list", "--server", server, "--api-key", "", expect=1)
    assert "UNAUTHENTICATED" in out and "--api-key" in out
    out = cli("models", "delete", "cli_never_registered", "--server", server, api_key=api_keys["viewer"], expect=1)
    assert "PERMISSION_DENIED" in out


def test_unreachable_server_is_one_line_not_a_traceback():
    out = invoke("models", "list", "--server", f"127.0.0.1:{free_port()}", expect=1).output
    assert "UNAVAILABLE" in out and "is `trainforge serve` running" in out


def test_bad_settings_report_every_violation(tmp_path: Path):
    config = tmp_path / "server.yaml"
    config.write_text("grpc_port: 70000\nlog_level: LOUD\n")
    out = invoke("serve", "--config", str(config), expect=2).output
    assert "grpc_port" in out and "log_level" in out


def test_db_upgrade_migrates_a_fresh_database(postgres_cluster):
    dsn = postgres_cluster.new_database("cli_upgrade")
    out = invoke("db", "upgrade", "--database-url", dsn).output
    assert migrate.head_revision() in out
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(migrate.head_revision(),)]


def test_mask_password():
    assert mask_password("postgresql://app:s3cret@db:5432/tf") == "postgresql://app:***@db:5432/tf"
    assert mask_password("postgresql://db/tf?user=app&password=s3cret") == "postgresql://db/tf?user=app&password=***"
    assert mask_password("host=db user=app password=s3cret dbname=tf") == "host=db user=app password=*** dbname=tf"
    assert "p@ss/w" not in mask_password("postgresql://app:p@ss/w@db/tf")
    assert mask_password("postgresql://app@db/tf") == "postgresql://app@db/tf"


def _wide_env() -> dict[str, str]:
    # rich wraps at COLUMNS (80 when not on a terminal), which would fold the strings asserted on.
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["COLUMNS"] = "200"
    return env


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


@pytest.fixture
def traversable_dir() -> Path:
    # As root the embedded cluster runs as `postgres`, which must traverse to its data directory;
    # pytest's tmp_path is 0700 root.
    path = Path(tempfile.mkdtemp(prefix="trainforge-cli-test-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def test_serve_runs_until_sigterm(traversable_dir: Path):
    data_dir = traversable_dir / "data"
    http_port = free_port()
    env = {**_wide_env(), "TRAINFORGE_METRICS_PORT": "0", "TRAINFORGE_ENVOY_ADMIN_PORT": "0"}
    process = subprocess.Popen([TRAINFORGE, "serve", "--data-dir", str(data_dir), "--grpc-port", "0",
                                "--http-port", str(http_port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        banner = ""
        deadline = time.monotonic() + 60
        while "Ctrl-C stops it" not in banner and time.monotonic() < deadline and process.poll() is None:
            banner += process.stdout.readline()
        assert "Ctrl-C stops it" in banner, banner + process.stderr.read()
        assert f"http://127.0.0.1:{http_port}/api/docs" in banner
        assert f"embedded PostgreSQL at {data_dir / 'postgres'}" in banner
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/docs", timeout=10) as reply:
            assert reply.status == 200
        # Through Envoy to the gRPC server and back: without a key the registry answers 401.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/training/models", timeout=10)
        assert refused.value.code == 401
        # A second process must not take over the running server's embedded cluster.
        out = invoke("db", "upgrade", "--data-dir", str(data_dir), expect=1).output
        assert "another trainforge process is using the embedded database" in out
    finally:
        # SIGTERM on failure too: a SIGKILL would orphan Envoy and PostgreSQL (own sessions).
        process.send_signal(signal.SIGTERM)
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, err
    assert "trainforge stopped" in out
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
    assert _processes_mentioning(str(data_dir)) == []


def test_demo_runs_end_to_end_and_cleans_up():
    env = _wide_env()
    started = time.monotonic()
    result = subprocess.run([TRAINFORGE, "demo"], capture_output=True, text=True, timeout=120, env=env)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = result.stdout
    for text in ("custom_conversational_model:1.0.0", "custom_conversational_model@production",
                 "custom_conversational_model:1.1.0", "(@production)"):
        assert text in out, text
    assert re.search(r"all \d+ steps returned what they should", out)
    data_dir = re.search(r"data directory: (\S+)", out).group(1)
    assert not Path(data_dir).exists()
    assert _processes_mentioning(data_dir) == []
    assert took < 60, f"demo took {took:.1f} s"
