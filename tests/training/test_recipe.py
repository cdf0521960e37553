"""The recipe on a tiny random Llama (20k parameters, ~15 ms a step on 2 CPU cores): loss goes
down, checkpoint + resume reproduces an uninterrupted run bit for bit, early stopping, pause,
cancel, LoRA, and the entrypoint's exit codes and files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import tiny_spec
from trainforge.core.training import entrypoint
from trainforge.core.training.checkpoint import STATE_FILE, find_checkpoint, read_state
from trainforge.core.training.config import to_dict, validate_config
from trainforge.core.training.recipe import train


class RecordingReporter:
    """Keeps every call; asks to stop with `stop` once step `at` is reached."""

    def __init__(self, stop: str | None = None, at: int = 0):
        self.events: list[tuple] = []
        self.stop, self.at, self.step = stop, at, 0

    def progress(self, step, total_steps, epoch, total_epochs, metrics):
        self.step = step
        self.events.append(("progress", step, total_steps, epoch, total_epochs, dict(metrics)))

    def evaluation(self, step, metrics):
        self.events.append(("evaluation", step, dict(metrics)))

    def checkpoint(self, step, epoch, path, metrics, is_best):
        self.events.append(("checkpoint", step, epoch, path, is_best))

    def checkpoints_removed(self, steps):
        self.events.append(("checkpoints_removed", list(steps)))

    def log(self, message):
        self.events.append(("log", message))

    def should_stop(self):
        return self.stop if self.stop and self.step >= self.at else None

    def of(self, kind):
        return [e for e in self.events if e[0] == kind]


def run(roots, out: Path, reporter=None, resume=None, **overrides):
    data_root, models_root = roots
    resolved = validate_config(tiny_spec(**overrides), data_root, models_root)
    reporter = reporter or RecordingReporter()
    return train(resolved, out, reporter, resume), reporter


def test_a_few_steps_reduce_the_loss_and_save_a_model_that_reloads(roots, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, reporter = run(roots, tmp_path / "out", hyperparameters={"epochs": 4, "eval_steps": 5})
    assert result.status == "succeeded" and result.global_step == result.total_steps == 20  # 18 rows / 4 -> 5 steps
    assert sum(result.losses[-3:]) / 3 < sum(result.losses[:3]) / 3 - 1.0
    evals = [e[2]["eval_loss"] for e in reporter.of("evaluation")]
    assert [e[1] for e in reporter.of("evaluation")] == [0, 5, 10, 15, 20]
    assert evals[-1] < evals[0] - 1.0
    steps = [e[1] for e in reporter.of("progress")]
    assert steps == list(range(1, 21))
    last = reporter.of("progress")[-1]
    assert last[2:5] == (20, 4, 4) and {"train_loss", "learning_rate", "grad_norm", "tokens_per_sec"} <= set(last[5])
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    assert tokenizer.chat_template and (result.model_dir / "model.safetensors").is_file()
    assert model(torch.tensor([[5, 6, 7]])).logits.shape[-1] == tokenizer.vocab_size
    assert list((tmp_path / "out" / "tensorboard").glob("events.out.tfevents.*"))


def test_pause_checkpoints_and_resume_reproduces_the_uninterrupted_run(roots, tmp_path):
    settings = {"hyperparameters": {"epochs": 2, "save_steps": 4, "eval_steps": 3},
                "optimization": {"scheduler": "cosine"}}
    straight, _ = run(roots, tmp_path / "straight", **settings)
    assert straight.global_step == 10

    paused, reporter = run(roots, tmp_path / "job", RecordingReporter("pause", at=6), **settings)
    assert paused.status == "paused" and paused.global_step == 6
    assert [e[1] for e in reporter.of("checkpoint")] == [4, 6]  # save_steps, then the pause
    folder = find_checkpoint(tmp_path / "job")
    assert folder == paused.checkpoint_dir and folder.name == "step-00000006"
    assert {p.name for p in folder.iterdir()} == {STATE_FILE, "model.safetensors", "optimizer.pt", "scheduler.pt",
                                                  "rng-rank0.pt"}
    meta = read_state(folder)
    assert (meta["global_step"], meta["epoch"], meta["samples_in_epoch"]) == (6, 1, 4)
    assert meta["config"]["name"] == "tiny-job" and meta["best_step"] == 6 and meta["engine"] == "torch"
    assert not (tmp_path / "job" / "model").exists()

    resumed, reporter = run(roots, tmp_path / "job", resume=tmp_path / "job", **settings)
    assert resumed.status == "succeeded" and resumed.global_step == 10
    assert [e[1] for e in reporter.of("progress")] == [7, 8, 9, 10]  # the global step continues
    assert resumed.losses == straight.losses[6:]  # bit for bit on the CPU
    assert resumed.metrics["eval_loss"] == straight.metrics["eval_loss"]
    a, b = load_file(straight.model_dir / "model.safetensors"), load_file(resumed.model_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_release_checkpoints_at_the_step_reached_and_the_run_continues_from_it(roots, tmp_path):
    # A worker shutting down asks for "release": checkpoint now (save_steps is far), status released.
    settings = {"hyperparameters": {"epochs": 2, "save_steps": 100, "eval_steps": 100}}
    released, reporter = run(roots, tmp_path / "job", RecordingReporter("release", at=3), **settings)
    assert released.status == "released" and released.global_step == 3
    assert [e[1] for e in reporter.of("checkpoint")] == [3]
    assert released.checkpoint_dir == find_checkpoint(tmp_path / "job") and released.checkpoint_dir.name == "step-00000003"
    assert not (tmp_path / "job" / "model").exists()
    resumed, reporter = run(roots, tmp_path / "job", resume=tmp_path / "job", **settings)
    assert resumed.status == "succeeded" and [e[1] for e in reporter.of("progress")][0] == 4


def test_early_stopping_stops_when_the_validation_loss_stops_improving(roots, tmp_path):
    result, reporter = run(roots, tmp_path / "out", hyperparameters={"epochs": 10, "eval_steps": 1, "learning_rate": 1.0},
                           optimization={"early_stopping": {"enabled": True, "patience": 2}},
                           evaluation={"save_best_model": True})
    assert result.status == "early_stopped" and result.global_step == 2 < result.total_steps
    losses = [e[2]["eval_loss"] for e in reporter.of("evaluation")]
    assert losses[1] > losses[0] and losses[2] > losses[0] and result.best_step == 0
    # save_best_model: the registered model is the best one, here the base model at step 0.
    base = load_file(Path(roots[1]) / "tiny" / "model.safetensors")
    saved = load_file(result.model_dir / "model.safetensors")
    assert all(torch.equal(base[k], saved[k]) for k in base)


def test_cancel_stops_without_a_model(roots, tmp_path):
    result, reporter = run(roots, tmp_path / "out", RecordingReporter("cancel", at=2),
                           hyperparameters={"epochs": 3})
    assert result.status == "cancelled" and result.global_step == 2
    assert not (tmp_path / "out" / "model").exists() and not reporter.of("checkpoint")


@pytest.mark.parametrize("optimizer", ["sgd", "adafactor"])
def test_other_optimizers_train(roots, tmp_path, optimizer):
    result, _ = run(roots, tmp_path / "out", hyperparameters={"epochs": 3, "learning_rate": 0.05},
                    optimization={"optimizer": optimizer, "scheduler": "linear"}, training_data={"validation_split": 0})
    assert result.status == "succeeded" and result.losses[-1] < result.losses[0]


def test_lora_trains_adapters_and_saves_a_merged_model(roots, tmp_path):
    from transformers import AutoModelForCausalLM

    result, _ = run(roots, tmp_path / "out", method="lora", lora={"r": 4, "alpha": 8, "dropout": 0.0},
                    hyperparameters={"epochs": 3, "learning_rate": 0.05})
    assert result.trainable_parameters < result.parameter_count / 4
    assert result.losses[-1] < result.losses[0]
    saved = load_file(result.model_dir / "model.safetensors")
    assert not [k for k in saved if "lora" in k]
    base = load_file(Path(roots[1]) / "tiny" / "model.safetensors")
    changed = [k for k in base if not torch.equal(base[k], saved[k])]
    assert changed and all("self_attn" in k for k in changed)  # only the adapted projections moved
    AutoModelForCausalLM.from_pretrained(result.model_dir)


def test_entrypoint_writes_result_and_maps_outcomes_to_exit_codes(roots, tmp_path, capsys, monkeypatch):
    data_root, models_root = roots
    job = tmp_path / "job.json"
    job.write_text(json.dumps(to_dict(validate_config(tiny_spec(), data_root, models_root))))
    assert entrypoint.main(["--config", str(job), "--output", str(tmp_path / "ok")]) == entrypoint.EXIT_OK
    result = json.loads((tmp_path / "ok" / "result.json").read_text())
    assert result["status"] == "succeeded" and len(result["dataset_sha256"]) == 64 and result["parameter_count"]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert {line["event"] for line in lines} >= {"log", "progress", "evaluation"}

    monkeypatch.setenv("PAUSE_AT", "2")
    code = entrypoint.main(["--config", str(job), "--output", str(tmp_path / "p"),
                            "--reporter", "tests.training.reporters:PauseReporter"])
    assert code == entrypoint.EXIT_PAUSED
    assert find_checkpoint(tmp_path / "p").name == "step-00000002"

    spec = json.loads(job.read_text())
    spec["hyperparameters"]["learning_rate"] = -1
    job.write_text(json.dumps(spec))
    capsys.readouterr()
    assert entrypoint.main(["--config", str(job), "--output", str(tmp_path / "bad")]) == entrypoint.EXIT_FAILED
    error = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert error["reason"] == "INVALID_ARGUMENT" and error["violations"][0]["field"] == "hyperparameters.learning_rate"
    assert json.loads((tmp_path / "bad" / "error.json").read_text())["reason"] == "INVALID_ARGUMENT"



@pytest.mark.slow  # inductor compiles forward and backward on the CPU: ~1 min on 2 cores
def test_torch_compile_on_trains_like_eager_and_saves_plain_weights(roots, tmp_path):
    eager, _ = run(roots, tmp_path / "eager", hyperparameters={"epochs": 2}, optimization={"torch_compile": "off"})
    from torch._dynamo.utils import counters

    counters.clear()
    compiled, reporter = run(roots, tmp_path / "compiled", hyperparameters={"epochs": 2},
                             optimization={"torch_compile": "on"})
    assert any("torch.compile" in e[1] for e in reporter.of("log"))
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"], dict(counters)
    assert compiled.status == "succeeded" and compiled.global_step == eager.global_step
    # Same seed, same data: the compiled graph computes the same losses up to fusion rounding.
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-3)
    keys = load_file(tmp_path / "compiled" / "model" / "model.safetensors").keys()
    assert not [k for k in keys if "_orig_mod" in k]


def test_torch_compile_auto_stays_eager_on_the_cpu(roots, tmp_path):
    result, reporter = run(roots, tmp_path / "out", hyperparameters={"max_steps": 1})
    assert result.status == "succeeded"
    assert not any("torch.compile" in e[1] for e in reporter.of("log"))


def test_checkpoint_retention_keeps_the_last_k_and_the_best(roots, tmp_path):
    # Evaluated every step at lr 1e-2 (constant): eval loss 3.86 3.61 3.38 3.24 3.06 2.92 3.53 for
    # steps 0-6 on the CPU, so the best checkpoint (step 5) is older than the newest one.
    settings = {"hyperparameters": {"epochs": 4, "max_steps": 6, "save_steps": 1, "eval_steps": 1},
                "checkpointing": {"keep_last": 1, "keep_best": True}}
    result, reporter = run(roots, tmp_path / "out", **settings)
    assert result.global_step == 6
    assert result.best_step not in (None, 0, 6), result.eval_history  # else keep_best is not exercised
    saved = [e[1] for e in reporter.of("checkpoint")]
    assert saved == [1, 2, 3, 4, 5, 6]
    removed = [s for e in reporter.of("checkpoints_removed") for s in e[1]]
    on_disk = sorted(int(p.name.removeprefix("step-")) for p in (tmp_path / "out" / "checkpoints").iterdir())
    assert on_disk == sorted({result.best_step, 6})
    assert sorted(removed) == sorted(set(saved) - {result.best_step, 6}) and len(set(removed)) == len(removed)
    # Each removal is reported before its folder goes (the job's rows are dropped first).
    assert reporter.events.index(("checkpoints_removed", [1])) < reporter.events.index(
        next(e for e in reporter.of("checkpoint") if e[1] == 3))

    short = {"hyperparameters": {"epochs": 1, "max_steps": 3, "save_steps": 1}, "training_data": {"validation_split": 0}}
    _, reporter = run(roots, tmp_path / "nobest", **short, checkpointing={"keep_last": 2, "keep_best": False})
    assert sorted(p.name for p in (tmp_path / "nobest" / "checkpoints").iterdir()) == ["step-00000002",
                                                                                      "step-00000003"]
    _, reporter = run(roots, tmp_path / "all", **short, checkpointing={"keep_last": 0})
    assert len(list((tmp_path / "all" / "checkpoints").iterdir())) == 3 and not reporter.of("checkpoints_removed")


def test_checkpoint_retention_never_removes_the_resume_source(roots, tmp_path):
    settings = {"hyperparameters": {"epochs": 2, "save_steps": 2},
                "training_data": {"validation_split": 0},
                "checkpointing": {"keep_last": 1, "keep_best": False}}
    paused, _ = run(roots, tmp_path / "job", RecordingReporter("pause", at=2), **settings)
    assert paused.global_step == 2
    resumed, reporter = run(roots, tmp_path / "job", resume=tmp_path / "job", **settings)
    assert resumed.status == "succeeded" and resumed.global_step > 4
    names = sorted(p.name for p in (tmp_path / "job" / "checkpoints").iterdir())
    last = f"step-{(resumed.global_step // 2) * 2:08d}"
    assert names == sorted({"step-00000002", last}), names  # the resume source and the newest one
    assert reporter.of("checkpoints_removed")


def test_checkpointing_policy_is_validated(roots):
    from trainforge.core.errors import InvalidArgument

    data_root, models_root = roots
    with pytest.raises(InvalidArgument) as caught:
        validate_config(tiny_spec(checkpointing={"keep_last": -1, "keep_best": "sometimes", "keep_all": True}),
                        data_root, models_root)
    fields = {v.field for v in caught.value.violations}
    assert {"checkpointing.keep_last", "checkpointing.keep_best", "checkpointing.keep_all"} <= fields, fields
    assert validate_config(tiny_spec(), data_root, models_root).config.checkpointing.keep_last == 3
