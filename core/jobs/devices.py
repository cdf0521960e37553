"""GPUs for jobs: one allocator per worker process, shared by its workers (server.service.WorkerGroup),
so that `trainforge worker --concurrency N` on a 4-GPU machine runs each job on GPUs of its own
instead of every job on GPU 0.

A job needs as many GPUs as it has processes (process_contract.world_size) on a GPU host, and none
on a CPU host; a hostfile job places its ranks itself and takes none from here. A worker takes every
free GPU before it claims, claims only a job that fits in them (JobStore.claim's `max_devices`),
keeps what the job needs and gives the rest back at once; it waits, without claiming, while no GPU
is free. The job's GPUs come back when it ends, however it ends.

GPUs are named as CUDA_VISIBLE_DEVICES names them (indices, or `GPU-<uuid>` / `MIG-<uuid>`), so the
names handed to a job are valid in its CUDA_VISIBLE_DEVICES. Nothing here imports torch: the worker
finds the GPUs through NVML."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from typing import Any

from trainforge.core.training.process_contract import uses_hostfile, world_size

AUTO, NONE = "auto", "none"
# A waiting worker looks at its stop event at least this often even if no GPU is given back.
_WAIT_SECONDS = 5.0


def visible_gpus(setting: str = AUTO, env: Mapping[str, str] | None = None, nvml_count=None) -> tuple[str, ...]:
    """The GPUs this process may hand out: `setting` ("auto", "none" or "0,1,2,3"; settings.gpus,
    `trainforge worker --gpus`). "auto" reads CUDA_VISIBLE_DEVICES when it is set (CUDA stops
    reading it at the first negative entry: "-1" hides every GPU), else counts the GPUs through
    NVML (`nvml_count`, a callable, replaces the probe in tests)."""
    env = os.environ if env is None else env
    setting = setting.strip()
    if setting == NONE:
        return ()
    if setting != AUTO:
        return tuple(t.strip() for t in setting.split(",") if t.strip())
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        out: list[str] = []
        for token in (t.strip() for t in listed.split(",")):
            if not token or token.startswith("-"):
                break
            out.append(token)
        return tuple(out)
    return tuple(str(i) for i in range((nvml_count or _nvml_gpu_count)()))


def _nvml_gpu_count() -> int:
    """GPUs NVML sees; 0 without the NVIDIA driver (a CPU host) or when NVML fails (some vGPU hosts)."""
    try:
        import pynvml
    except ImportError:
        return 0
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    except pynvml.NVMLError:
        return 0
    finally:
        pynvml.nvmlShutdown()


class DeviceAllocator:
    """Free and held GPUs of one worker process. Used from one event loop (the WorkerGroup's);
    every method that changes the free list runs without awaiting in between, so no lock is needed."""

    def __init__(self, gpus: Sequence[str]):
        if len(set(gpus)) != len(gpus):
            raise ValueError(f"GPU names repeat: {','.join(gpus)}")
        self.gpus: tuple[str, ...] = tuple(gpus)
        self._free: list[str] = list(self.gpus)
        self._changed = asyncio.Event()

    @property
    def gpu_host(self) -> bool:
        return bool(self.gpus)

    @property
    def free(self) -> tuple[str, ...]:
        return tuple(self._free)

    def needed(self, spec: Mapping[str, Any]) -> int:
        """GPUs a job takes from this allocator: its world size on a GPU host; 0 on a CPU host or
        for a hostfile job."""
        distributed = spec.get("distributed") or {}
        if not self.gpu_host or uses_hostfile(distributed):
            return 0
        return world_size(distributed)

    def take_free(self) -> list[str] | None:
        """Every free GPU (possibly none on a CPU host), now; None on a GPU host with none free."""
        if self.gpu_host and not self._free:
            return None
        held, self._free = self._free, []
        return held

    async def hold_free(self, stop: asyncio.Event) -> list[str] | None:
        """Every free GPU, waiting until at least one is free on a GPU host; None once `stop` is set."""
        while not stop.is_set():
            held = self.take_free()
            if held is not None:
                return held
            changed = asyncio.ensure_future(self._changed.wait())
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({changed, stopping}, timeout=_WAIT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
                stopping.cancel()
        return None

    def keep(self, held: Sequence[str], count: int) -> list[str]:
        """The first `count` of `held` stay held; the others are given back."""
        if count > len(held):
            raise ValueError(f"needs {count} GPU(s) but holds {len(held)}")
        self.release(held[count:])
        return list(held[:count])

    def release(self, gpus: Sequence[str]) -> None:
        """Gives GPUs back (unknown or already free names are ignored, so a double release is harmless)
        and wakes the workers waiting for one."""
        returned = {g for g in gpus if g in self.gpus and g not in self._free}
        if not returned:
            return
        free = set(self._free) | returned
        self._free = [g for g in self.gpus if g in free]  # lowest first: allocation is predictable
        self._changed.set()
        self._changed = asyncio.Event()
