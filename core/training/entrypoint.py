"""The training process: `python -m trainforge.core.training.entrypoint --config job.json --output DIR
[--resume DIR] [--reporter print | module:Class]`.

Started by the worker, directly (one process) or through the DeepSpeed launcher (one per device or
rank). Reads the job's config (the stored spec written by config.to_dict, with its `resolved`
block), runs the recipe, and on rank 0 writes `DIR/result.json` (process_contract.TrainResult:
status, steps, metrics, dataset sha256, parameter count, world size) or, on failure,
`DIR/error.json` (process_contract.TrainError) and one JSON line on stderr.

Exit codes (process_contract, shared with the worker): 0 succeeded (or stopped early), 3 paused,
4 cancelled, 5 released (the worker is shutting down), 1 failed.
A reporter given as `module:Class` is built with keyword arguments job_id and dsn from the
environment variables TRAINFORGE_JOB_ID and TRAINFORGE_DATABASE_URL, on rank 0 only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from trainforge.core.training.process_contract import (  # noqa: F401 - EXIT_* re-exported for callers
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PAUSED,
    EXIT_RELEASED,
    TrainError,
    exit_code,
)

# Offline before anything imports transformers or huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def build_reporter(spec: str) -> Any:
    from trainforge.core.training.reporting import NullReporter, PrintReporter

    job_id = os.environ.get("TRAINFORGE_JOB_ID", "")
    if _rank() != 0:
        return NullReporter()
    if spec == "print":
        return PrintReporter(job_id=job_id)
    if spec == "null":
        return NullReporter()
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"--reporter must be 'print' or 'module:Class', got {spec!r}")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(job_id=job_id, dsn=os.environ.get("TRAINFORGE_DATABASE_URL", ""))


class _SignalStop:
    """SIGTERM (the worker's cancel, or its lease lost) becomes a cancel at the next step boundary;
    the worker kills the process group a few seconds later in any case."""

    def __init__(self, reporter: Any):
        self.reporter = reporter
        self.requested: str | None = None
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, signum, frame) -> None:
        self.requested = "cancel"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reporter, name)

    def should_stop(self) -> str | None:
        return self.requested or self.reporter.should_stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trainforge.core.training.entrypoint", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="job config JSON (config.to_dict output)")
    parser.add_argument("--output", required=True, type=Path, help="folder for checkpoints, logs and the model")
    parser.add_argument("--resume", type=Path, default=None, help="checkpoint folder, or an output folder")
    parser.add_argument("--reporter", default="print", help="'print' or an import path 'module:Class'")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # DeepSpeed launcher
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)

    reporter = None
    try:
        from trainforge.core.training.config import resolved_from_dict
        from trainforge.core.training.recipe import train

        config = resolved_from_dict(json.loads(args.config.read_text()))
        reporter = _SignalStop(build_reporter(args.reporter))
        result = train(config, args.output, reporter, args.resume)
        if _rank() == 0:
            result.write(args.output)
        return exit_code(result.status)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes exit 1 with its JSON line
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        error = TrainError(error=type(exc).__name__, message=str(getattr(exc, "message", "") or exc),
                           reason=getattr(exc, "reason", "INTERNAL"), rank=_rank(),
                           violations=[{"field": v.field, "description": v.description}
                                       for v in getattr(exc, "violations", None) or ()])
        traceback.print_exc(file=sys.stderr)
        sys.stderr.write(json.dumps(error.to_json()) + "\n")
        sys.stderr.flush()
        if _rank() == 0:
            error.write(args.output)
        return EXIT_FAILED
    finally:
        _leave_process_group()
        close = getattr(getattr(reporter, "reporter", None), "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # noqa: BLE001 - closing must not mask the outcome
                pass


def _leave_process_group() -> None:
    """Leaves the process group explicitly: left to interpreter exit, gloo's teardown took ~3 s."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - a peer that already left must not turn success into failure
        pass


if __name__ == "__main__":
    sys.exit(main())
