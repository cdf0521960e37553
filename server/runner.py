"""Runs the gRPC server until asked to stop: in the current event loop (`serve_until`) or in a
thread of its own (`BackgroundServer`, for the CLI demo, tests and benchmarks, whose callers are
synchronous)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from trainforge.core.settings import Settings
from trainforge.server.app import create_server, open_deps, stop_server


async def serve_until(settings: Settings, dsn: str, stop: asyncio.Event,
                      ready: Callable[[int], None] | None = None) -> None:
    deps = await open_deps(settings, dsn)
    try:
        server, port = await create_server(settings, deps)
        if ready:
            ready(port)
        await stop.wait()
        await stop_server(server)
    finally:
        await deps.close()


class BackgroundServer:
    """The gRPC server on its own event loop in a daemon thread."""

    def __init__(self, settings: Settings, dsn: str):
        self.settings, self.dsn = settings, dsn
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="trainforge-grpc", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await serve_until(self.settings, self.dsn, self._stop, self._on_ready)

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that called start()
            self._error = exc
            self._ready.set()

    def _on_ready(self, port: int) -> None:
        self.port = port
        self._ready.set()

    def start(self, timeout: float = 60) -> int:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("gRPC server did not start in time")
        if self._error:
            raise self._error
        return self.port

    def stop(self, timeout: float = 30) -> None:
        if self._loop and self._stop and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
