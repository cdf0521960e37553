"""CPU, memory and GPU use of a job's process group, sampled at each heartbeat.

A probe never fails a job: the sample holds what could be measured and leaves the rest out. NVML
answers NOT_SUPPORTED for utilisation on MIG instances and on many vGPU profiles while memory
still reads, and a process can exit between being listed and being read."""

from __future__ import annotations

import logging
import os

import psutil

log = logging.getLogger(__name__)


class ProcessGroupSampler:
    def __init__(self, pgid: int):
        self.pgid = pgid
        self._procs: dict[int, psutil.Process] = {}
        self._warned: set[str] = set()

    def sample(self) -> dict[str, float]:
        usage: dict[str, float] = {}
        for probe in (self._cpu_and_memory, _gpu_usage):
            try:
                usage.update(probe())
            except Exception as exc:  # noqa: BLE001 - a measurement, never a reason to stop a job
                self._warn_once(probe.__name__, exc)
        return usage

    def _cpu_and_memory(self) -> dict[str, float]:
        cpu = rss = 0.0
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(proc.pid) != self.pgid:
                    continue
                # cpu_percent needs the same Process object between calls to measure an interval.
                tracked = self._procs.setdefault(proc.pid, proc)
                cpu += tracked.cpu_percent(None)
                rss += tracked.memory_info().rss
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue
        return {"cpu_percent": round(cpu, 1), "rss_mb": round(rss / 2**20, 1)}

    def _warn_once(self, probe: str, exc: Exception) -> None:
        if probe not in self._warned:
            self._warned.add(probe)
            log.warning("resource probe %s failed (%s: %s); the job's samples leave it out", probe,
                        type(exc).__name__, exc)


def _gpu_usage() -> dict[str, float]:
    """Mean utilisation and total memory over the devices NVML sees; each figure only from the
    devices that report it."""
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return {}
    try:
        utils: list[float] = []
        mems: list[float] = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            try:
                utils.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
            except pynvml.NVMLError:
                pass
            try:
                mems.append(pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20)
            except pynvml.NVMLError:
                pass
        usage = {}
        if utils:
            usage["gpu_utilization"] = sum(utils) / len(utils)
        if mems:
            usage["gpu_memory_mb"] = sum(mems)
        return usage
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
