"""Where a training process runs: its rank, world size and device, the process group (DeepSpeed's
`init_distributed`: NCCL on GPUs, gloo on CPUs) and the DeepSpeed config filled from
`configs/deepspeed/zero{0,1,2,3}.json`.

On a CPU, DeepSpeed picks its CPU accelerator by itself when torch sees no CUDA device
(DS_ACCELERATOR=cpu forces it) and talks over gloo (oneCCL is used only when oneccl_bindings is
installed, which trainforge does not install)."""

from __future__ import annotations

import copy
import json
import os
import socket
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from trainforge.core.errors import FailedPrecondition

MAX_GRAD_NORM = 1.0  # gradient clipping for every run (plain loop and DeepSpeed alike)


@dataclass(frozen=True)
class Runtime:
    rank: int
    local_rank: int
    world_size: int
    device: Any  # torch.device
    deepspeed: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_runtime(use_deepspeed: bool) -> Runtime:
    """One process: rank 0 of 1 on cuda:0 or the CPU. DeepSpeed: the launcher's RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR and MASTER_PORT (filled for a lone process started without it)."""
    import torch

    if not use_deepspeed:
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        return Runtime(0, 0, 1, device, False)
    for key, default in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, default)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    import deepspeed
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, verbose=False)
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return Runtime(rank, local_rank, world, device, True)


def deepspeed_config_dir() -> Path:
    """The DeepSpeed JSON files shipped in trainforge.configs ($TRAINFORGE_DEEPSPEED_CONFIGS overrides)."""
    override = os.environ.get("TRAINFORGE_DEEPSPEED_CONFIGS")
    if override:
        return Path(override)
    candidate = Path(str(resources.files("trainforge.configs").joinpath("deepspeed")))
    if (candidate / "zero2.json").is_file():
        return candidate
    raise FailedPrecondition("trainforge.configs/deepspeed/zero*.json not found; set TRAINFORGE_DEEPSPEED_CONFIGS")


def deepspeed_config(zero_stage: int, *, micro_batch: int, accumulation: int, world_size: int, bf16: bool,
                     load_universal: bool = False, config_dir: Path | None = None) -> dict[str, Any]:
    """The stage's JSON with every "auto" filled: batch sizes, clipping, bf16 on GPUs."""
    path = (config_dir or deepspeed_config_dir()) / f"zero{zero_stage}.json"
    config = json.loads(path.read_text())
    filled = copy.deepcopy(config)
    values = {"train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": accumulation,
              "train_batch_size": micro_batch * accumulation * world_size, "gradient_clipping": MAX_GRAD_NORM}
    for key, value in values.items():
        if filled.get(key) == "auto":
            filled[key] = value
    if filled.get("bf16", {}).get("enabled") == "auto":
        filled["bf16"]["enabled"] = bool(bf16)
    if load_universal:
        filled.setdefault("checkpoint", {})["load_universal"] = True
    leftover = [k for k, v in _walk(filled) if v == "auto"]
    if leftover:
        raise FailedPrecondition(f"{path.name}: no value for {', '.join(leftover)}")
    return filled


def _walk(d: dict[str, Any], prefix: str = ""):
    for key, value in d.items():
        if isinstance(value, dict):
            yield from _walk(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def barrier(runtime: Runtime) -> None:
    if runtime.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(runtime: Runtime, value: Any) -> Any:
    """Rank 0's value on every rank."""
    if runtime.world_size == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(runtime: Runtime, values: list[float]) -> list[float]:
    if runtime.world_size == 1:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=runtime.device if runtime.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()
