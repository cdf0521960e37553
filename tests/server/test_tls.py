"""TLS on the gateway listener and the gRPC port, with certificates the test makes (openssl CLI):
settings validated up front with every problem at once, HTTPS and gRPC over TLS through the real
`serve` code path (server.service.Service), plaintext refused, mutual TLS, and the warning for a
plaintext listener on the network."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from tests.server.test_cli import runner
from tests.support import authed, free_port
from trainforge.core.errors import InvalidArgument
from trainforge.core.settings import Settings, load_settings
from trainforge.server.cli import app
from trainforge.server.service import Endpoints, Service, gateway_needs_own_port, warn_if_plaintext
from trainforge.v1 import registry_pb2 as pb
from trainforge.v1 import registry_pb2_grpc

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A self-signed server certificate for localhost/127.0.0.1, a second unrelated key, and a client
    CA with one client certificate."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", *EC, "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", d / "server.key", "-out", d / "server.pem")
    _openssl("req", "-x509", *EC, "-subj", "/CN=test client CA", "-keyout", d / "ca.key", "-out", d / "ca.pem")
    _openssl("req", *EC, "-subj", "/CN=client", "-keyout", d / "client.key", "-out", d / "client.csr")
    _openssl("x509", "-req", "-in", d / "client.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
             "-CAcreateserial", "-days", "2", "-out", d / "client.pem")
    (d / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    return {p.stem + p.suffix.replace(".", "_"): p for p in d.iterdir()}


def _violations(**values) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        load_settings(env={}, **values)
    return {v.field: v.description for v in info.value.violations}


def test_tls_settings_report_every_problem_at_once(pki, tmp_path):
    assert "tls_cert_file" in _violations(tls_key_file=str(pki["server_key"]))["tls_key_file"]
    assert "required" in _violations(tls_cert_file=str(pki["server_pem"]))["tls_key_file"]
    found = _violations(tls_cert_file=str(pki["garbage_pem"]), tls_key_file=str(tmp_path / "missing.key"),
                        tls_client_ca_file=str(pki["server_key"]), grpc_port=-1)
    assert set(found) == {"tls_cert_file", "tls_key_file", "tls_client_ca_file", "grpc_port"}, found
    assert "not a PEM certificate" in found["tls_cert_file"] and "does not exist" in found["tls_key_file"]
    mismatched = _violations(tls_cert_file=str(pki["server_pem"]), tls_key_file=str(pki["client_key"]))
    assert "not the key of that certificate" in mismatched["tls_key_file"]
    assert "tls_cert_file" in _violations(tls_client_ca_file=str(pki["ca_pem"]))["tls_client_ca_file"]
    # Relative paths are under data_dir, like every other path in the settings.
    good = load_settings(env={}, data_dir=str(pki["server_pem"].parent), tls_cert_file="server.pem",
                         tls_key_file="server.key")
    assert good.tls is not None and good.tls.cert_file == pki["server_pem"]


def test_a_plaintext_listener_on_the_network_is_warned_about(pki, caplog):
    with caplog.at_level(logging.WARNING, logger="trainforge.server.service"):
        assert warn_if_plaintext(Settings()) == []
        assert warn_if_plaintext(Settings(http_host="0.0.0.0")) == ["http_host=0.0.0.0"]
        assert warn_if_plaintext(Settings(grpc_host="192.0.2.10", tls_cert_file=str(pki["server_pem"]),
                                          tls_key_file=str(pki["server_key"]))) == []
    # Envoy reaches the server over loopback plaintext: a port of its own unless the public one is that.
    assert not gateway_needs_own_port(Settings()) and not gateway_needs_own_port(Settings(grpc_host="0.0.0.0"))
    assert gateway_needs_own_port(Settings(grpc_host="192.0.2.10"))
    assert gateway_needs_own_port(Settings(tls_cert_file=str(pki["server_pem"]), tls_key_file=str(pki["server_key"])))
    [record] = caplog.records
    assert record.levelno == logging.WARNING and "PLAINTEXT" in record.getMessage()
    assert "http_host=0.0.0.0" in record.getMessage()


class _Serving:
    """`Service.run` (what `trainforge serve` runs) on its own event loop in a thread."""

    def __init__(self, settings: Settings):
        self.settings, self.endpoints = settings, None
        self._ready, self._error = threading.Event(), None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await Service(self.settings, grpc_grace=1.0).run(self._stop, self._on_ready)

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self._error = exc
            self._ready.set()

    def _on_ready(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self._ready.set()

    def __enter__(self) -> Endpoints:
        self._thread.start()
        assert self._ready.wait(90), "the service did not start"
        if self._error:
            raise self._error
        return self.endpoints

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


def _serve(data_dir: Path, database_url: str, **values) -> _Serving:
    return _Serving(load_settings(env={}, data_dir=str(data_dir), database_url=database_url, grpc_port=0,
                                  http_port=free_port(), envoy_admin_port=0, metrics_port=0, workers=0,
                                  **{k: str(v) for k, v in values.items()}))


def _https(url: str, token: str, context: ssl.SSLContext) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        return response.status, json.loads(response.read())


@pytest.fixture(scope="module")
def tls_service(pki, tmp_path_factory, database_url) -> Iterator[Endpoints]:
    # Two API processes: the second serves the gateway only, in plaintext on loopback.
    with _serve(tmp_path_factory.mktemp("tls-serve"), database_url, api_processes=2,
                tls_cert_file=pki["server_pem"], tls_key_file=pki["server_key"]) as endpoints:
        yield endpoints


def test_https_through_the_gateway_with_the_ca(tls_service, pki, api_keys, database_url):
    assert tls_service.http_url.startswith("https://")
    context = ssl.create_default_context(cafile=str(pki["server_pem"]))
    status, body = _https(f"{tls_service.rest_url}/models?page_size=1", api_keys["viewer"], context)
    assert status == 200 and "data" in body
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # without the CA: refused
        _https(f"{tls_service.rest_url}/models", api_keys["viewer"], ssl.create_default_context())

    # The gateway reaches the server on a loopback port of its own, so the audit log still names
    # the client Envoy saw (here 127.0.0.2), not Envoy.
    host, port = tls_service.http_url.removeprefix("https://").rsplit(":", 1)
    name, request_id = f"tls-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    conn = http.client.HTTPSConnection(host, int(port), timeout=30, context=context, source_address=("127.0.0.2", 0))
    conn.connect()
    client_port = conn.sock.getsockname()[1]
    conn.request("POST", "/api/training/models", body=json.dumps({"name": name, "version": "1"}),
                 headers={"content-type": "application/json", "authorization": f"Bearer {api_keys['trainer']}",
                          "x-request-id": request_id})
    assert conn.getresponse().status == 200
    conn.close()
    with psycopg.connect(database_url) as db:
        [(client,)] = db.execute("SELECT client FROM audit_log WHERE request_id = %s", (request_id,)).fetchall()
    assert client == f"ipv4:127.0.0.2:{client_port}"

    plain = http.client.HTTPConnection(host, int(port), timeout=10)
    with pytest.raises((http.client.HTTPException, OSError)):
        plain.request("GET", "/api/training/models", headers={"authorization": f"Bearer {api_keys['viewer']}"})
        plain.getresponse().read()
    plain.close()


def test_grpc_over_tls(tls_service, pki, api_keys):
    credentials = grpc.ssl_channel_credentials(root_certificates=pki["server_pem"].read_bytes())
    with grpc.secure_channel(tls_service.grpc_address, credentials) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(authed(channel, api_keys["viewer"]))
        assert stub.ListModels(pb.ListModelsRequest(page_size=1), timeout=30).total_size >= 0
    # The CLI, told the CA by TRAINFORGE_TLS_CA_FILE.
    listed = runner.invoke(app, ["models", "list", "--server", tls_service.grpc_address, "--json"],
                           env={"TRAINFORGE_API_KEY": api_keys["viewer"],
                                "TRAINFORGE_TLS_CA_FILE": str(pki["server_pem"])})
    assert listed.exit_code == 0 and "data" in json.loads(listed.stdout), listed.output
    with grpc.insecure_channel(tls_service.grpc_address) as channel:  # plaintext to the TLS port
        stub = registry_pb2_grpc.RegistryServiceStub(authed(channel, api_keys["viewer"]))
        with pytest.raises(grpc.RpcError) as info:
            stub.ListModels(pb.ListModelsRequest(page_size=1), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_needs_a_client_certificate_signed_by_the_ca(pki, tmp_path, database_url, api_keys):
    with _serve(tmp_path, database_url, tls_cert_file=pki["server_pem"], tls_key_file=pki["server_key"],
                tls_client_ca_file=pki["ca_pem"]) as endpoints:
        url = f"{endpoints.rest_url}/models?page_size=1"
        anonymous = ssl.create_default_context(cafile=str(pki["server_pem"]))
        with pytest.raises((urllib.error.URLError, OSError)):
            _https(url, api_keys["viewer"], anonymous)
        client = ssl.create_default_context(cafile=str(pki["server_pem"]))
        client.load_cert_chain(pki["client_pem"], pki["client_key"])
        assert _https(url, api_keys["viewer"], client)[0] == 200

        credentials = grpc.ssl_channel_credentials(root_certificates=pki["server_pem"].read_bytes(),
                                                   private_key=pki["client_key"].read_bytes(),
                                                   certificate_chain=pki["client_pem"].read_bytes())
        with grpc.secure_channel(endpoints.grpc_address, credentials) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(authed(channel, api_keys["viewer"]))
            assert stub.ListModels(pb.ListModelsRequest(page_size=1), timeout=30).total_size >= 0
