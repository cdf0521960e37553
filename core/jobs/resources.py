"""CPU, memory and GPU use of a job's process group, sampled at each heartbeat."""

from __future__ import annotations

import os

import psutil


class ProcessGroupSampler:
    def __init__(self, pgid: int):
        self.pgid = pgid
        self._procs: dict[int, psutil.Process] = {}

    def sample(self) -> dict[str, float]:
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
        usage = {"cpu_percent": round(cpu, 1), "rss_mb": round(rss / 2**20, 1)}
        usage.update(_gpu_usage())
        return usage


def _gpu_usage() -> dict[str, float]:
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return {}
    try:
        count = pynvml.nvmlDeviceGetCount()
        if not count:
            return {}
        util = mem = 0.0
        for i in range(count):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            util += pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            mem += pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
        return {"gpu_utilization": util / count, "gpu_memory_mb": mem}
    finally:
        pynvml.nvmlShutdown()
