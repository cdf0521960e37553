"""What the GPU benchmark scripts share: where a JSON goes, package versions, percentiles.

Imported as `bench_common` (each script runs from this folder, which Python puts first on
sys.path; benchmarks/gpu/conftest.py does the same for the pytest suite). Standard library only,
so a script can report "missing packages" on a bare box before anything else is imported.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from collections.abc import Iterable
from pathlib import Path


def output_path(arg: Path | None, filename: str) -> Path:
    """--out as given (a file, or a folder to put `filename` in), else $OUT/filename, else ./filename."""
    if arg is not None:
        return arg / filename if arg.is_dir() else arg
    out_dir = os.environ.get("OUT")
    return Path(out_dir) / filename if out_dir else Path(filename)


def package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def collect_versions(dists: Iterable[str]) -> dict[str, str]:
    """python, torch and its CUDA, and each distribution in `dists`."""
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": str(torch.version.cuda)}
    out.update({d: package_version(d) for d in dists})
    return out


def percentiles(values: list[float]) -> dict[str, float]:
    """p20/p50/p80 by linear interpolation between closest ranks; {} for no values."""
    if not values:
        return {}
    s = sorted(values)

    def at(q: float) -> float:
        pos = q * (len(s) - 1)
        lo, hi = int(pos), min(int(pos) + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    return {"p20": at(0.2), "p50": at(0.5), "p80": at(0.8)}
