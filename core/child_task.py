"""CPU-heavy work the server must not run on its event loop (evaluation, compression) runs as
`python -m <module>` in a child process: the request goes in as one JSON object on stdin, the
outcome comes back as one JSON line on stdout — `{"result": ...}`, or `{"error": ...}` with the
field violations of an InvalidArgument, which the parent raises again as its own. The child dies
with its parent (setpriv --pdeathsig) and with the request that waits for it (a cancelled call
kills it), so no evaluation keeps a core busy for nobody."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from trainforge.core.child_processes import with_parent_death_signal
from trainforge.core.errors import FieldViolation, InvalidArgument, Unavailable


async def run_in_child(module: str, request: dict[str, Any], timeout: float, what: str) -> dict[str, Any]:
    # Started on the event loop's thread, which lives as long as the server: the parent-death
    # signal follows the thread that forked the child.
    process = await asyncio.create_subprocess_exec(
        *with_parent_death_signal([sys.executable, "-m", module]), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(json.dumps(request).encode()), timeout)
    except TimeoutError:
        await _kill(process)
        raise Unavailable(f"{what} took longer than {timeout:.0f} s") from None
    except BaseException:  # the call was cancelled (client gone, server stopping): nobody wants the result
        await asyncio.shield(_kill(process))
        raise
    lines = out.decode().strip().splitlines()
    try:
        reply = json.loads(lines[-1]) if lines else {}
    except ValueError:
        reply = {}
    if process.returncode != 0 or "error" in reply or "result" not in reply:
        if reply.get("violations"):
            raise InvalidArgument([FieldViolation(v["field"], v["description"]) for v in reply["violations"]])
        error = reply.get("error") or " | ".join(err.decode(errors="replace").strip().splitlines()[-3:])
        raise Unavailable(f"{what} failed: {error}"[:2000])
    return reply["result"]


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        try:
            process.kill()
        except ProcessLookupError:
            pass
    await process.wait()


def child_main(handle: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """The child's side: read the request, run `handle`, print the one reply line."""
    request = json.loads(sys.stdin.read())
    try:
        print(json.dumps({"result": handle(request)}))
    except InvalidArgument as exc:
        print(json.dumps({"error": exc.message, "violations": [
            {"field": v.field, "description": v.description} for v in exc.violations]}))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one JSON line
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        sys.exit(1)
