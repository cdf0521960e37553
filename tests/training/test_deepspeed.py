"""DeepSpeed ZeRO-2 on the CPU: two processes over gloo, started by the DeepSpeed launcher exactly as
the worker starts them (trainforge.core.jobs.launch). The first run pauses at step 2 (exit 3, a
checkpoint written by both ranks); the second resumes from it, continues the global step, and saves
a model that reloads and generates.

Timing on 2 CPU cores: ~10 s a run once DeepSpeed's shared-memory comm op is built; building it
(ninja, first run on a machine, cached under TORCH_EXTENSIONS_DIR) adds ~25 s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port
from tests.training.conftest import tiny_spec
from trainforge.core.training.checkpoint import find_checkpoint, read_state
from trainforge.core.training.config import to_dict, validate_config

ROOT = Path(__file__).resolve().parents[2]
EXTENSIONS = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "trainforge" / "torch_extensions")


def launch(job: Path, output: Path, *extra: str, pause_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(EXTENSIONS), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRAINFORGE_JOB_ID": "ds-test"}
    argv = [sys.executable, "-m", "deepspeed.launcher.runner", "--master_port", str(free_port()), "--num_gpus", "2",
            "--module", "trainforge.core.training.entrypoint", "--config", str(job), "--output", str(output), *extra]
    if pause_at is not None:
        env["PAUSE_AT"] = str(pause_at)
        argv += ["--reporter", "tests.training.reporters:PauseReporter"]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def events(proc: subprocess.CompletedProcess, kind: str) -> list[dict]:
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"event"')]
    return [e for e in lines if e["event"] == kind]


def _zero2_job(roots, tmp_path) -> tuple[dict, Path, Path]:
    """A 2-process ZeRO-2 spec of the tiny model, its resolved job file, and an output folder."""
    data_root, models_root = roots
    spec = tiny_spec(hyperparameters={"epochs": 2, "save_steps": 100},
                     distributed={"enabled": True, "strategy": "zero", "world_size": 2, "zero_stage": 2})
    job = tmp_path / "job.json"
    job.write_text(json.dumps(to_dict(validate_config(spec, data_root, models_root))))
    return spec, job, tmp_path / "out"


def test_two_process_zero2_over_gloo_pauses_resumes_and_saves(roots, tmp_path):
    pytest.importorskip("deepspeed")
    _, job, out = _zero2_job(roots, tmp_path)

    first = launch(job, out, pause_at=2)
    assert first.returncode == 3, first.stdout[-3000:] + first.stderr[-3000:]
    assert "2 process(es) on cpu" in events(first, "log")[0]["message"]
    folder = find_checkpoint(out)
    assert folder.name == "step-00000002"
    meta = read_state(folder)
    assert (meta["engine"], meta["world_size"], meta["zero_stage"]) == ("deepspeed", 2, 2)
    assert {p.name for p in folder.iterdir()} == {"trainer_state.json", "deepspeed", "rng-rank0.pt", "rng-rank1.pt"}
    assert len(list((folder / "deepspeed").rglob("*optim_states.pt"))) == 2  # one ZeRO shard per rank

    second = launch(job, out, "--resume", str(out))
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    # 18 rows / (4 x 2 ranks) -> 3 steps an epoch, 6 in all; the resumed run starts at step 3.
    assert [e["step"] for e in events(second, "progress")] == [3, 4, 5, 6]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "succeeded" and result["global_step"] == 6
    assert result["losses"][-1] < events(first, "progress")[0]["metrics"]["train_loss"]

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Where is Paris?"}], tokenize=False,
                                           add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    generated = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert generated.shape[1] > ids["input_ids"].shape[1]


@pytest.mark.slow
def test_a_zero2_checkpoint_resumes_on_another_number_of_processes(roots, tmp_path):
    """Two processes write the checkpoint; one resumes it through DeepSpeed's universal checkpoint
    (ds_to_universal re-partitions the ZeRO optimizer state). ~25 s: marked slow to keep the fast
    suite under a minute."""
    pytest.importorskip("deepspeed")
    data_root, models_root = roots
    spec, job, out = _zero2_job(roots, tmp_path)
    first = launch(job, out, pause_at=2)
    assert first.returncode == 3, first.stdout[-3000:] + first.stderr[-3000:]

    spec["distributed"]["world_size"] = 1
    job.write_text(json.dumps(to_dict(validate_config(spec, data_root, models_root))))
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(EXTENSIONS), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    second = subprocess.run([sys.executable, "-m", "trainforge.core.training.entrypoint", "--config", str(job),
                             "--output", str(out), "--resume", str(out)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "written by 2 process(es)" in " ".join(e["message"] for e in events(second, "log"))
    assert (find_checkpoint(out).parent / "step-00000002" / "universal" / ".complete").is_file()
    # 2 steps x 8 samples were consumed; at 4 samples a step on one process the run goes on with
    # step 3 (the last of the first epoch's 16/4 + 1) and, total steps being recomputed for one
    # process (5 a epoch x 2), ends at global step 10.
    steps = [e["step"] for e in events(second, "progress")]
    assert steps[0] == 3 and steps[-1] == 10
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "succeeded" and result["losses"][-1] < result["losses"][0]
