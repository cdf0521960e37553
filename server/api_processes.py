"""More gRPC server processes behind the gateway (`api_processes` in the settings).

One Python process serves the API on one core: grpc.aio runs the handlers on one event loop under
the GIL (benchmarks/README.md: at 64 clients the server process is the first thing to saturate).
With `api_processes: N`, `trainforge serve` starts N - 1 more processes, each with its own
database pool, key-revocation listener and job-event listener, each serving gRPC on its own
loopback port; Envoy spreads REST calls over all N (least-request) and retries a call whose
connection failed before it was sent. Direct gRPC clients keep the one public port (the first
process). Training workers and the Prometheus endpoint stay in the first process.

A child that dies is started again on the same port, so Envoy's static endpoint list stays true;
it gets SIGTERM if the parent dies (setpriv --pdeathsig; and the next start kills it from its
record under data_dir/run if it is still there, core.child_processes), and the DSN travels on
stdin, never in argv or the environment.

    python -m trainforge.server.api_processes   # the child: one JSON line on stdin, "ready" on stdout
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from trainforge.core.child_processes import ChildRecords, with_parent_death_signal
from trainforge.core.errors import Unavailable
from trainforge.core.settings import Settings

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 60.0
RESTART_PAUSE_SECONDS = 1.0


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiProcess:
    """One child gRPC server on a fixed loopback port."""

    def __init__(self, index: int, settings: Settings, dsn: str, port: int, log_path: Path,
                 records: ChildRecords | None = None):
        self.index, self.settings, self.dsn, self.port, self.log_path = index, settings, dsn, port, log_path
        self.records = records
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        if self.records is not None and self.process is not None:
            self.records.remove(self.process.pid)  # the one that died, when this is a restart
        argv = with_parent_death_signal([sys.executable, "-m", "trainforge.server.api_processes"])
        with open(self.log_path, "ab") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log_file,
                start_new_session=True)
        if self.records is not None:
            self.records.add(self.process.pid, f"API process {self.index}")
        request = {"settings": self.settings.model_dump(mode="json"), "dsn": self.dsn, "port": self.port}
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        await self.process.stdin.drain()
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), START_TIMEOUT_SECONDS)
        except TimeoutError:
            line = b""
        if not line.startswith(b'{"ready"'):
            await self.stop(0)
            raise Unavailable(f"API process {self.index} did not start on 127.0.0.1:{self.port}; see {self.log_path}",
                              reason="API_PROCESS_FAILED")

    async def stop(self, grace: float) -> None:
        process = self.process
        if process is None:
            return
        try:
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGTERM)
                await asyncio.wait_for(process.wait(), grace + 5)
        except ProcessLookupError:
            pass
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        if self.records is not None:
            self.records.remove(process.pid)


class ApiProcessPool:
    """The N - 1 extra servers: started together, restarted one by one, stopped together."""

    def __init__(self, settings: Settings, dsn: str, count: int, run_dir: Path, grace: float = 5.0,
                 records: ChildRecords | None = None):
        run_dir.mkdir(parents=True, exist_ok=True)
        # Children serve only the gateway, over loopback in plaintext (TLS ends at Envoy).
        child_settings = settings.model_copy(update={"grpc_host": "127.0.0.1", "workers": 0, "metrics_port": 0,
                                                     "tls_cert_file": "", "tls_key_file": "",
                                                     "tls_client_ca_file": ""})
        self.children = [ApiProcess(i + 1, child_settings, dsn, free_loopback_port(), run_dir / f"api-{i + 1}.log",
                                    records) for i in range(count)]
        self.grace = grace
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None

    @property
    def ports(self) -> list[int]:
        return [c.port for c in self.children]

    async def start(self) -> None:
        try:
            await asyncio.gather(*(c.start() for c in self.children))
        except BaseException:
            await self.stop()
            raise
        self._watch = asyncio.create_task(self._supervise(), name="trainforge-api-processes")

    async def _supervise(self) -> None:
        while not self._stopping:
            waits = {asyncio.ensure_future(c.process.wait()): c for c in self.children if c.process is not None}
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done:
                child = waits[task]
                if self._stopping:
                    return
                log.error("API process %d (port %d) exited with %s; starting it again", child.index, child.port,
                          child.process.returncode if child.process else None)
                await asyncio.sleep(RESTART_PAUSE_SECONDS)
                try:
                    await child.start()
                except Unavailable:
                    log.exception("API process %d did not start again; retrying", child.index)

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await asyncio.gather(*(c.stop(self.grace) for c in self.children))


# -- the child ------------------------------------------------------------------------------------

async def _serve_child() -> None:
    from trainforge.server.app import create_server, open_deps, stop_server
    from trainforge.server.observability import configure_logging

    request = json.loads(sys.stdin.readline())
    settings = Settings(**request["settings"]).model_copy(update={"grpc_port": int(request["port"])})
    configure_logging(settings.log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    deps = await open_deps(settings, request["dsn"])
    try:
        server, port = await create_server(settings, deps)
        sys.stdout.write(json.dumps({"ready": port}) + "\n")
        sys.stdout.flush()
        serving = asyncio.ensure_future(server.wait_for_termination())
        stop_wait = asyncio.ensure_future(stop.wait())
        await asyncio.wait({serving, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        await stop_server(server, 5.0)
        await asyncio.wait({serving})
    finally:
        await deps.close()


if __name__ == "__main__":
    asyncio.run(_serve_child())
