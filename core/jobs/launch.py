"""How a job's processes are started: through the DeepSpeed launcher when the job asks for more
than one process (N GPUs on a node, or several nodes from a hostfile), else one Python process.
Either way the job runs in a process group of its own, so cancel and crash handling can stop
all of it at once, and it dies with its worker (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Re-exported: jobs start their processes through it (the one definition is in core.child_processes).
from trainforge.core.child_processes import with_parent_death_signal  # noqa: F401
from trainforge.core.errors import FailedPrecondition
from trainforge.core.training.process_contract import (  # noqa: F401 - EXIT_* re-exported for the worker
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PAUSED,
    EXIT_RELEASED,
    uses_hostfile,
    world_size,
)

ENTRYPOINT = "trainforge.core.training.entrypoint"


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    processes: int


def build(spec: dict[str, Any], *, config_path: Path, output_dir: Path, resume_from: Path | None,
          job_id: str, attempt: int, dsn: str, extensions_dir: Path, master_port: int,
          gpus: Sequence[str] | None = None) -> Launch:
    """The command and environment of a job's processes.

    `gpus`: the GPUs the worker's allocator (core.jobs.devices) gave this job, as CUDA names them
    on this machine; the job's processes see only these (CUDA_VISIBLE_DEVICES), and a distributed
    job runs one rank on each (`--include localhost:<gpus>`, which DeepSpeed's launcher turns into
    each rank's CUDA_VISIBLE_DEVICES). An empty list: a CPU host, ranks over gloo. None: no
    allocator; the spec's `distributed.devices` are used as given.
    A hostfile job (`--hostfile`, the path validated under the configs root) places its ranks on
    the hosts and slots the hostfile lists; `gpus` is not used for it."""
    distributed = spec.get("distributed") or {}
    processes = world_size(distributed)
    devices = [str(d) for d in (distributed.get("devices") or [])] if gpus is None else [str(g) for g in gpus]
    entry_args = ["--config", str(config_path), "--output", str(output_dir),
                  "--reporter", "trainforge.core.jobs.reporter:PostgresReporter"]
    if resume_from is not None:
        entry_args += ["--resume", str(resume_from)]
    env = dict(os.environ)
    env.update({
        "TRAINFORGE_JOB_ID": job_id, "TRAINFORGE_JOB_ATTEMPT": str(attempt), "TRAINFORGE_DATABASE_URL": dsn,
        # DeepSpeed compiles a small op on first start; keep the build cache across jobs.
        "TORCH_EXTENSIONS_DIR": str(extensions_dir), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    })
    hostfile = uses_hostfile(distributed)
    if gpus is not None and not hostfile and not (processes > 1 and devices):
        # One process on its GPU, or no GPU at all (an empty value hides every one: the job runs on
        # the CPU, as the worker was told). Ranks placed by `--include` get theirs from DeepSpeed's
        # launcher, which drops an inherited CUDA_VISIBLE_DEVICES when --include is given.
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices[:processes])
    if processes <= 1 and not hostfile:
        return Launch([sys.executable, "-m", ENTRYPOINT, *entry_args], env, 1)
    launcher = [sys.executable, "-m", "deepspeed.launcher.runner", "--master_port", str(master_port)]
    if hostfile:
        path = (spec.get("resolved") or {}).get("hostfile_path")
        if not path:
            raise FailedPrecondition("distributed.hostfile was not validated under the configs root; "
                                     "create the job through the API or JobSpecPreparer")
        launcher += ["--hostfile", str(path)]
    elif devices:
        if len(devices) < processes:
            raise FailedPrecondition(f"the job runs {processes} processes but has {len(devices)} GPU(s): "
                                     f"{','.join(devices)}")
        launcher += ["--include", "localhost:" + ",".join(devices[:processes])]
    else:
        # No GPU (a CPU host): DeepSpeed starts this many ranks on the CPU accelerator, over gloo.
        launcher += ["--num_gpus", str(processes)]
    return Launch([*launcher, "--module", ENTRYPOINT, *entry_args], env, processes)

