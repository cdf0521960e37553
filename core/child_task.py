"""CPU-heavy work of a job (evaluation, compression) runs as `python -m <module>` in a child process
that the worker supervises like a training process (core.jobs.worker): the request goes in as one
JSON object on stdin, the outcome comes back as one JSON line on stdout — `{"result": ...}`, or
`{"error": ...}` with the field violations of an InvalidArgument, which the parent raises again as
its own (`read_reply`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from trainforge.core import errors
from trainforge.core.errors import FieldViolation, InvalidArgument, TrainforgeError, Unavailable


def read_reply(stdout: str, stderr_tail: str, returncode: int | None, what: str) -> dict[str, Any]:
    """The parent's side: the child's result, or its failure raised as a domain error."""
    lines = stdout.strip().splitlines()
    try:
        reply = json.loads(lines[-1]) if lines else {}
    except ValueError:
        reply = {}
    if returncode != 0 or "error" in reply or "result" not in reply:
        if reply.get("violations"):
            raise InvalidArgument([FieldViolation(v["field"], v["description"]) for v in reply["violations"]])
        error_class = getattr(errors, reply.get("error_type", ""), None)
        if isinstance(error_class, type) and issubclass(error_class, TrainforgeError) and error_class is not InvalidArgument:
            # A domain error keeps its class across the boundary (DATA_LOSS stays DATA_LOSS).
            raise error_class(reply["error"][:2000], reason=reply.get("reason"), metadata=reply.get("metadata"))
        error = reply.get("error") or f"exited with {returncode}: {stderr_tail}"
        raise Unavailable(f"{what} failed: {error}"[:2000])
    return reply["result"]


def child_main(handle: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """The child's side: read the request, run `handle`, print the one reply line."""
    request = json.loads(sys.stdin.read())
    try:
        print(json.dumps({"result": handle(request)}))
    except InvalidArgument as exc:
        print(json.dumps({"error": exc.message, "violations": [
            {"field": v.field, "description": v.description} for v in exc.violations]}))
    except TrainforgeError as exc:
        print(json.dumps({"error": exc.message, "error_type": type(exc).__name__, "reason": exc.reason,
                          "metadata": {k: str(v) for k, v in exc.metadata.items()}}))
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one JSON line
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        sys.exit(1)
