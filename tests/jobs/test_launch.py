"""How a job's processes are started (core.jobs.launch.build) and the contract the worker and the
training process share (core.training.process_contract): world size, exit codes, result document.
Pure: nothing is started here; tests/jobs/test_distributed_job.py runs two ranks through a worker."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.jobs.conftest import tiny_job
from tests.support import violations
from trainforge.core.errors import InvalidArgument
from trainforge.core.jobs import launch
from trainforge.core.jobs.spec import JobSpecPreparer
from trainforge.core.training import entrypoint, process_contract
from trainforge.core.training.config import from_dict
from trainforge.core.training.process_contract import TrainResult, world_size


def _build(spec: dict, tmp_path: Path, **kw) -> launch.Launch:
    return launch.build(spec, config_path=tmp_path / "config.json", output_dir=tmp_path / "out", resume_from=None,
                        job_id="job-1", attempt=1, dsn="postgresql://x", extensions_dir=tmp_path / "ext",
                        master_port=29555, **kw)


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_a_single_process_job_runs_the_entrypoint_directly(tmp_path):
    plan = _build({"distributed": {"enabled": False, "devices": [0, 1]}}, tmp_path)
    assert plan.processes == 1
    assert plan.argv[:3] == [sys.executable, "-m", launch.ENTRYPOINT]
    assert "deepspeed.launcher.runner" not in plan.argv
    assert plan.env["TRAINFORGE_JOB_ID"] == "job-1"
    # Without an allocator the environment's CUDA_VISIBLE_DEVICES is left as it is.
    assert plan.env.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")


def test_world_size_n_starts_n_ranks_through_deepspeed(tmp_path):
    plan = _build({"distributed": {"enabled": True, "world_size": 3}}, tmp_path)
    assert plan.processes == 3
    assert plan.argv[1:3] == ["-m", "deepspeed.launcher.runner"]
    assert _option(plan.argv, "--num_gpus") == "3" and _option(plan.argv, "--master_port") == "29555"
    assert _option(plan.argv, "--module") == launch.ENTRYPOINT


def test_devices_alone_start_one_rank_per_device(tmp_path):
    """`devices: [0, 1]` validates as world size 2 and now starts 2 processes (it started one)."""
    spec = {"distributed": {"enabled": True, "devices": [0, 1]}}
    assert from_dict({**tiny_job("d"), **spec}).world_size == 2
    plan = _build(spec, tmp_path)
    assert plan.processes == 2
    assert _option(plan.argv, "--include") == "localhost:0,1"
    assert "--num_gpus" not in plan.argv


def test_allocated_gpus_replace_the_spec_devices(tmp_path):
    """The worker's allocator decides which GPUs: ranks go on those; one process sees only its own."""
    plan = _build({"distributed": {"enabled": True, "devices": [0, 1]}}, tmp_path, gpus=["2", "3"])
    assert _option(plan.argv, "--include") == "localhost:2,3" and plan.processes == 2
    single = _build({"distributed": {"enabled": False}}, tmp_path, gpus=["1"])
    assert single.env["CUDA_VISIBLE_DEVICES"] == "1" and single.processes == 1
    # A CPU host: no GPU for anyone; the ranks run on DeepSpeed's CPU accelerator over gloo.
    cpu = _build({"distributed": {"enabled": True, "devices": [0, 1]}}, tmp_path, gpus=[])
    assert cpu.env["CUDA_VISIBLE_DEVICES"] == "" and _option(cpu.argv, "--num_gpus") == "2"
    assert "--include" not in cpu.argv
    with pytest.raises(Exception, match="2 processes but has 1 GPU"):
        _build({"distributed": {"enabled": True, "world_size": 2}}, tmp_path, gpus=["0"])


def test_a_hostfile_under_the_configs_root_is_accepted_and_passed_to_the_launcher(settings, job_inputs, tmp_path):
    configs = settings.configs_dir
    configs.mkdir(parents=True, exist_ok=True)
    (configs / "hosts").write_text("localhost slots=2\n")
    preparer = JobSpecPreparer(settings.data_dir_root, settings.models_dir, config_root=configs)
    spec = tiny_job("hostfile-job", distributed={"enabled": True, "world_size": 2, "hostfile": "hosts"})
    prepared = preparer.prepare(spec)
    assert prepared["resolved"]["hostfile_path"] == str((configs / "hosts").resolve())
    assert prepared["resolved"]["world_size"] == 2
    plan = _build(prepared, tmp_path, gpus=["0"])  # a hostfile job takes no GPU from the allocator
    assert _option(plan.argv, "--hostfile") == str((configs / "hosts").resolve())
    assert "--include" not in plan.argv and "--num_gpus" not in plan.argv and plan.processes == 2

    outside = settings.data_dir / "hosts-outside"
    outside.write_text("localhost slots=2\n")
    for bad in ("../hosts-outside", str(outside), "missing-hosts"):
        with pytest.raises(InvalidArgument) as err:
            preparer.prepare({**spec, "distributed": {**spec["distributed"], "hostfile": bad}})
        assert [v.field for v in err.value.violations] == ["distributed.hostfile"], bad
    # Without a configs root every hostfile is refused (the old behaviour for every API job).
    with pytest.raises(InvalidArgument, match="distributed.hostfile"):
        JobSpecPreparer(settings.data_dir_root, settings.models_dir).prepare(spec)


def test_the_api_accepts_a_hostfile_from_the_servers_configs_root(rest, settings, job_inputs):
    (settings.configs_dir / "two-ranks").write_text("localhost slots=2\n")
    body = tiny_job("api-hostfile", distributed={"enabled": True, "world_size": 2, "hostfile": "two-ranks"})
    created = rest.post("/api/training/jobs", body)
    assert created.status == 200, created
    assert created.body["data"]["spec"]["distributed"]["hostfile"] == "two-ranks"
    refused = rest.post("/api/training/jobs", {**body, "distributed": {**body["distributed"], "hostfile": "../x"}})
    assert refused.status == 400 and "distributed.hostfile" in violations(refused)


@pytest.mark.parametrize(("distributed", "expected"), [
    ({}, 1), ({"enabled": False, "world_size": 4}, 1), ({"enabled": True, "world_size": 4}, 4),
    ({"enabled": True, "devices": [0, 1, 2]}, 3), ({"enabled": True, "world_size": 2, "devices": [5, 6]}, 2),
    ({"enabled": True}, 1),
])
def test_world_size_has_one_definition(distributed, expected):
    assert world_size(distributed) == expected
    assert from_dict({**tiny_job("w"), "distributed": distributed}).world_size == expected


def test_both_sides_of_the_process_boundary_use_the_same_exit_codes():
    for name in ("EXIT_OK", "EXIT_FAILED", "EXIT_PAUSED", "EXIT_CANCELLED", "EXIT_RELEASED"):
        assert getattr(launch, name) == getattr(entrypoint, name) == getattr(process_contract, name)
    codes = [process_contract.EXIT_OK, process_contract.EXIT_FAILED, process_contract.EXIT_PAUSED,
             process_contract.EXIT_CANCELLED, process_contract.EXIT_RELEASED]
    assert len(set(codes)) == 5 and process_contract.EXIT_RELEASED == 5
    assert [process_contract.exit_code(s) for s in ("succeeded", "early_stopped", "paused", "cancelled", "released")] \
        == [0, 0, 3, 4, 5]


def test_the_result_document_round_trips(tmp_path):
    result = TrainResult(status="succeeded", global_step=6, epoch=2, total_steps=6, metrics={"eval_loss": 1.5},
                         model_dir=tmp_path / "model", dataset_sha256="ab" * 32, parameter_count=20_000,
                         world_size=2, losses=[2.0, 1.0])
    result.write(tmp_path)
    on_disk = json.loads((tmp_path / process_contract.RESULT_FILE).read_text())
    assert on_disk["world_size"] == 2 and on_disk["model_dir"] == str(tmp_path / "model")
    assert TrainResult.read(tmp_path) == result
    # A newer process may add keys; an older worker reads what it knows.
    assert TrainResult.from_json({**on_disk, "added_later": 1}) == result
