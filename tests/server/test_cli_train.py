"""`trainforge train` (the YAML template through CreateJob on the suite's server) and `trainforge
evaluate` (a tiny random model, in process)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.server.test_cli import app, invoke, runner

TEMPLATE = Path(__file__).parents[2] / "configs" / "fine_tune_template.yaml"


@pytest.fixture
def server(grpc_server) -> str:
    return f"127.0.0.1:{grpc_server.port}"


@pytest.fixture
def train(server: str, api_keys):
    def run(*args: str, expect: int = 0) -> str:
        return invoke("train", *args, "--server", server, expect=expect, api_key=api_keys["admin"]).output
    return run


@pytest.fixture
def cli_jobs(server: str, api_keys):
    def run(*args: str, expect: int = 0) -> str:
        return invoke("jobs", *args, "--server", server, expect=expect, api_key=api_keys["admin"]).output
    return run


@pytest.fixture
def template(settings, tmp_path: Path) -> Path:
    """The repository's template with its model and data pointed at a folder and a file under the
    suite server's roots (validation only needs them to exist there)."""
    (settings.models_dir / "cli-train-base").mkdir(parents=True, exist_ok=True)
    settings.data_dir_root.mkdir(parents=True, exist_ok=True)
    (settings.data_dir_root / "cli-train.jsonl").write_text('{"prompt": "1+1=", "completion": "2"}\n' * 8)
    body = yaml.safe_load(TEMPLATE.read_text())
    body["model"].update(name="cli-train-model", base_model="cli-train-base")
    body["training_data"]["path"] = "cli-train.jsonl"
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_train_submits_the_template(train, cli_jobs, template: Path):
    out = train("--config", str(template), "--no-start")
    job_id = re.search(r"created job (\S+) \(PENDING\)", out).group(1)
    assert f"trainforge jobs start {job_id}" in out
    spec = json.loads(cli_jobs("get", job_id, "--json"))["data"]["spec"]
    # Field for field from the YAML: model.base_model -> model, training -> distributed.
    assert (spec["name"], spec["model"], spec["model_type"]) == ("cli-train-model", "cli-train-base", "fine_tuned")
    assert spec["hyperparameters"]["learning_rate"] == 5e-5 and spec["hyperparameters"]["save_steps"] == 100
    assert spec["optimization"]["early_stopping"] == {"enabled": True, "patience": 2, "metric": "validation_loss"}
    assert spec["lora"]["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert f"job {job_id} is CANCELLED" in cli_jobs("cancel", job_id)

    queued = re.search(r"created job (\S+) \(QUEUED\)", train("--config", str(template))).group(1)
    assert f"job {queued} is CANCELLED" in cli_jobs("cancel", queued)


def test_train_reports_every_problem(train, tmp_path: Path):
    # As shipped, the template names a hub model (offline here) and a data path outside the data
    # root: the server lists both.
    out = train("--config", str(TEMPLATE), expect=1)
    assert "INVALID_ARGUMENT" in out and "training_data.path:" in out and "model:" in out
    # Malformed fields are caught before anything is sent, all of them at once.
    body = yaml.safe_load(TEMPLATE.read_text())
    body["hyperparameters"]["learning_rate"] = "fast"
    body["optimization"]["optimizer"] = "rmsprop"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(body))
    out = train("--config", str(bad), expect=2)
    assert "invalid training config" in out
    assert "hyperparameters.learning_rate" in out and "optimization.optimizer" in out


def test_evaluate_writes_results(tmp_path: Path):
    from tests.training.conftest import build_tiny_model, qa_rows

    model = build_tiny_model(tmp_path / "tiny")
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in qa_rows(1)))
    output = tmp_path / "out" / "results.json"
    result = runner.invoke(app, ["evaluate", "--model-path", str(model), "--data", str(data), "--output", str(output),
                                 "--max-new-tokens", "4", "--batch-size", "6"])
    assert result.exit_code == 0, result.output
    written = json.loads(output.read_text())
    assert written["samples"] == 6 and set(written["metrics"]) == {"accuracy", "f1_score", "perplexity", "bleu"}
    assert written["metrics"]["perplexity"] > 1
    assert "perplexity" in result.output and str(output) in result.output.replace("\n", "")

    out = invoke("evaluate", "--model-path", str(model), "--data", str(data), "--output", str(output),
                 "--metric", "rouge", expect=2).output
    assert "unknown metric" in out
