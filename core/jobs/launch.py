"""How a job's processes are started: through the DeepSpeed launcher when the job asks for more
than one process (N GPUs on a node, or several nodes from a hostfile), else one Python process.
Either way the job runs in a process group of its own, so cancel and crash handling can stop
all of it at once, and it dies with its worker (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Re-exported: jobs start their processes through it (the one definition is in core.child_processes).
from trainforge.core.child_processes import with_parent_death_signal  # noqa: F401

ENTRYPOINT = "trainforge.core.training.entrypoint"

# Exit codes of the training entrypoint.
EXIT_OK, EXIT_FAILED, EXIT_PAUSED, EXIT_CANCELLED = 0, 1, 3, 4
# Checkpointed at a step boundary because its worker is shutting down; the job goes back to the
# queue and the next claim resumes from that checkpoint (core.training.entrypoint defines the same).
EXIT_RELEASED = 5


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    processes: int


def build(spec: dict[str, Any], *, config_path: Path, output_dir: Path, resume_from: Path | None,
          job_id: str, attempt: int, dsn: str, extensions_dir: Path, master_port: int) -> Launch:
    distributed = spec.get("distributed") or {}
    world_size = int(distributed.get("world_size") or 0) if distributed.get("enabled") else 1
    devices = [int(d) for d in distributed.get("devices") or []]
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
    if world_size <= 1:
        return Launch([sys.executable, "-m", ENTRYPOINT, *entry_args], env, 1)
    launcher = [sys.executable, "-m", "deepspeed.launcher.runner", "--master_port", str(master_port)]
    hostfile = distributed.get("hostfile")
    if hostfile:
        launcher += ["--hostfile", str(hostfile)]
    elif devices:
        launcher += ["--include", "localhost:" + ",".join(map(str, devices))]
    else:
        launcher += ["--num_gpus", str(world_size)]
    return Launch([*launcher, "--module", ENTRYPOINT, *entry_args], env, world_size)
