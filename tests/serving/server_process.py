"""The inference server as the tests (and the serving benchmark) run it: a real subprocess on port
0, found through its ready file, plus a small HTTP client that reads server-sent events line by
line as they arrive."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODULE = "trainforge.core.serving.openai_server"


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


class ServerProcess:
    """`python -m trainforge.core.serving.openai_server ...`; `start()` returns once the ready file
    is there (the server listens; the model may still be loading)."""

    def __init__(self, engine: str, model: Path | str, name: str, *extra: str, env: dict[str, str] | None = None):
        self.folder = Path(tempfile.mkdtemp(prefix="tf-serving-test-"))
        self.ready_file = self.folder / "ready.json"
        self.log_path = self.folder / "server.log"
        self.argv = [sys.executable, "-m", MODULE, "--engine", engine, "--model", str(model),
                     "--served-model-name", name, "--port", "0", "--ready-file", str(self.ready_file), *extra]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self._final_log = ""  # the log, kept once stop() removed the folder
        self.port = 0
        self.ready_at = 0.0

    def start(self, timeout: float = 60) -> ServerProcess:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while not self.ready_file.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode} before listening:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no ready file after {timeout} s:\n{self.log()}")
            time.sleep(0.01)
        self.ready_at = time.monotonic()
        ready = json.loads(self.ready_file.read_text())
        assert ready["pid"] == self.proc.pid, ready
        self.port = ready["port"]
        return self

    def log(self) -> str:
        if self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return self._final_log

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get("/health").status == 200:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"not healthy after {timeout} s:\n{self.log()}")

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit code (killing the process if it outlives `timeout`); the folder
        with the ready file and the log goes (the log stays readable through log())."""
        if self.proc is None:
            shutil.rmtree(self.folder, ignore_errors=True)
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        if self.folder.exists():
            self._final_log = self.log()
            shutil.rmtree(self.folder, ignore_errors=True)
        return self.proc.returncode

    # -- HTTP --------------------------------------------------------------------------------
    def connection(self, timeout: float = 120) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                timeout: float = 120) -> Answer:
        conn = self.connection(timeout)
        try:
            data = raw if raw is not None else None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            response = conn.getresponse()
            payload = response.read()
            headers = {k.lower(): v for k, v in response.getheaders()}
            if headers.get("content-type", "").startswith("application/json"):
                return Answer(response.status, json.loads(payload), headers)
            return Answer(response.status, payload.decode(), headers)
        finally:
            conn.close()

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None, **kw: Any) -> Answer:
        return self.request("POST", path, body, **kw)

    def metrics(self) -> dict[str, float]:
        """Prometheus samples by their full name with labels, e.g. `x_total{a="b"}`."""
        out = {}
        for line in self.get("/metrics").body.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out


class EventStream:
    """A POST whose answer is read as server-sent events, one `data:` event at a time."""

    def __init__(self, server: ServerProcess, path: str, body: dict, timeout: float = 120):
        self.conn = server.connection(timeout)
        self.conn.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        self.response = self.conn.getresponse()
        self.raw: list[bytes] = []  # every line exactly as it came

    def events(self) -> Iterator[str]:
        """The payload of each event (the text after `data: `), in order; checks the framing:
        every event is one `data: ...` line followed by one empty line."""
        while True:
            line = self.response.readline()
            if not line:
                return
            self.raw.append(line)
            assert line.startswith(b"data: ") and line.endswith(b"\n"), line
            blank = self.response.readline()
            self.raw.append(blank)
            assert blank == b"\n", (line, blank)
            yield line[len(b"data: "):-1].decode()

    def close(self) -> None:
        self.conn.close()
