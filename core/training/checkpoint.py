"""Self-describing checkpoints: everything a resume needs, in one folder per optimiser step.

    checkpoints/step-00000040/
      trainer_state.json   format, step, epoch, samples consumed in the epoch, best metric, patience
                           left, tokens seen, world size, engine, metrics, and the job's config
      rng-rank{r}.pt       python, numpy, torch (and CUDA) generator states of each rank
      plain loop:          model.safetensors, optimizer.pt, scheduler.pt
      DeepSpeed:           deepspeed/state/...  (engine.save_checkpoint: ZeRO-partitioned model and
                           optimizer states, lr scheduler; every rank writes its shard)

A folder is written as `step-N.tmp` and renamed when complete, so a crash mid-write leaves no
folder that looks whole. What a resume supports is in docs/training.md. After each save the run
keeps only the newest `checkpointing.keep_last` folders, the best one and the one it resumed from
(`prunable`); the rest are deleted.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainforge.core.errors import FailedPrecondition
from trainforge.core.training.distributed import Runtime, barrier

FORMAT = "trainforge-checkpoint/1"
STATE_FILE = "trainer_state.json"
DS_TAG = "state"


@dataclass
class TrainingState:
    """The loop's position and memory; saved in trainer_state.json."""

    global_step: int = 0
    epoch: int = 0  # 0-based epoch in progress
    samples_in_epoch: int = 0  # global samples consumed in that epoch
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0  # evaluations since the best one
    tokens_seen: int = 0


def checkpoint_folder(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step-{step:08d}"


def find_checkpoint(path: Path) -> Path | None:
    """`path` itself when it is a checkpoint, else the newest complete one under path/checkpoints
    or path; None when there is none."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    for base in (path / "checkpoints", path):
        if base.is_dir():
            done = sorted(p for p in base.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")
                          and (p / STATE_FILE).is_file())
            if done:
                return done[-1]
    return None


def complete_checkpoints(output_dir: Path) -> dict[int, Path]:
    """Step -> folder of every complete checkpoint under output_dir/checkpoints."""
    base = Path(output_dir) / "checkpoints"
    found: dict[int, Path] = {}
    for p in base.glob("step-*") if base.is_dir() else ():
        step = p.name.removeprefix("step-")
        if p.is_dir() and step.isdigit() and (p / STATE_FILE).is_file():
            found[int(step)] = p
    return found


def prunable(steps: list[int] | set[int], keep_last: int, best_step: int | None,
             protected: set[int] = frozenset()) -> list[int]:
    """The checkpoint steps retention removes: all but the newest `keep_last` (0 keeps all), the
    best one (`best_step`, None when not kept) and the `protected` ones (the resume source)."""
    if keep_last <= 0:
        return []
    ordered = sorted(steps)
    keep = set(ordered[-keep_last:]) | set(protected)
    if best_step is not None:
        keep.add(best_step)
    return [s for s in ordered if s not in keep]


def read_state(folder: Path) -> dict[str, Any]:
    meta = json.loads((Path(folder) / STATE_FILE).read_text())
    if meta.get("format") != FORMAT:
        raise FailedPrecondition(f"{folder} is not a trainforge checkpoint ({meta.get('format')!r})")
    return meta


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(folder: Path, runtime: Runtime) -> None:
    import numpy as np
    import torch

    path = Path(folder) / f"rng-rank{runtime.rank}.pt"
    if not path.is_file():  # another world size: rank 0's states stand in
        path = Path(folder) / "rng-rank0.pt"
    state = torch.load(path, weights_only=False)  # our own file: python and numpy states are tuples
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir: Path, runtime: Runtime, state: TrainingState, *, model: Any, optimizer: Any,
                    scheduler: Any, engine: Any, config: dict[str, Any], metrics: dict[str, Any],
                    zero_stage: int) -> Path:
    """Writes checkpoints/step-N (all ranks call it together under DeepSpeed). Returns the folder."""
    import torch
    from safetensors.torch import save_model

    final = checkpoint_folder(output_dir, state.global_step)
    staging = final.with_name(final.name + ".tmp")
    if runtime.is_main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier(runtime)
    torch.save(_rng_state(), staging / f"rng-rank{runtime.rank}.pt")
    if engine is not None:
        engine.save_checkpoint(str(staging / "deepspeed"), tag=DS_TAG, save_latest=False,
                               client_state={"trainforge_step": state.global_step})
    elif runtime.is_main:
        save_model(model, str(staging / "model.safetensors"))  # handles tied embeddings
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
    barrier(runtime)
    if runtime.is_main:
        meta = {"format": FORMAT, **asdict(state), "world_size": runtime.world_size,
                "engine": "deepspeed" if engine is not None else "torch", "zero_stage": zero_stage,
                "metrics": metrics, "config": config, "time": time.time()}
        (staging / STATE_FILE).write_text(json.dumps(meta, indent=2, default=str))
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    barrier(runtime)
    return final


def needs_universal(meta: dict[str, Any] | None, runtime: Runtime) -> bool:
    """A DeepSpeed checkpoint resumed by another number of processes: ZeRO's partitions of the
    optimizer state no longer line up, so it goes through DeepSpeed's universal format."""
    return bool(meta) and meta["engine"] == "deepspeed" and runtime.deepspeed and meta["world_size"] != runtime.world_size


def convert_to_universal(folder: Path, runtime: Runtime) -> Path:
    """checkpoints/step-N/universal/<tag>: the ZeRO checkpoint re-cut per parameter by
    deepspeed.checkpoint.ds_to_universal (rank 0 converts, once; the others wait)."""
    target = Path(folder) / "universal"
    done = target / ".complete"
    if runtime.is_main and not done.is_file():
        from argparse import Namespace

        from deepspeed.checkpoint import ds_to_universal

        shutil.rmtree(target, ignore_errors=True)
        ds_to_universal.main(Namespace(
            input_folder=str(Path(folder) / "deepspeed" / DS_TAG), output_folder=str(target / DS_TAG),
            num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False, strict=True,
            # Our checkpoints carry no Megatron-style universal_checkpoint_info; DeepSpeed fills it.
            inject_missing_state=True))
        done.write_text("converted\n")
    barrier(runtime)
    return target


def load_checkpoint(folder: Path, runtime: Runtime, *, model: Any, optimizer: Any, scheduler: Any,
                    engine: Any) -> TrainingState:
    """Restores model, optimizer and scheduler (the caller restores RNG last, just before the loop)."""
    import torch
    from safetensors.torch import load_model

    meta = read_state(folder)
    wanted = "deepspeed" if engine is not None else "torch"
    if meta["engine"] != wanted:
        raise FailedPrecondition(
            f"checkpoint {folder} was written by the {meta['engine']} engine and this run uses {wanted}; "
            "resume with the same distributed.enabled setting", metadata={"checkpoint": str(folder)})
    if engine is not None:
        source = Path(folder) / ("universal" if needs_universal(meta, runtime) else "deepspeed")
        load_dir, _ = engine.load_checkpoint(str(source), tag=DS_TAG, load_optimizer_states=True,
                                             load_lr_scheduler_states=True)
        if load_dir is None:
            raise FailedPrecondition(f"DeepSpeed could not load the checkpoint in {folder}")
    else:
        load_model(model, str(Path(folder) / "model.safetensors"))
        optimizer.load_state_dict(torch.load(Path(folder) / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(Path(folder) / "scheduler.pt", weights_only=True))
    fields = TrainingState.__dataclass_fields__
    return TrainingState(**{k: meta[k] for k in fields if k in meta})
