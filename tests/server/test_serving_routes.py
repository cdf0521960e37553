"""Stable endpoints through a real Envoy: /api/serving/{model}/{alias}/... reaches the server the
routes name, a switch drops no request and cuts no stream while the old server drains, SSE chunks
pass through as they are written, unknown names get a JSON 404 from Envoy, bad names are refused.
The backends are small aiohttp servers (each names itself in /v1/models and streams slowly)."""

from __future__ import annotations

import asyncio
import http.client
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from tests.support import free_port
from trainforge.core.errors import FailedPrecondition, InvalidArgument, Unavailable
from trainforge.core.serving.routes import ServingRoute
from trainforge.server.envoy_process import EnvoyGateway
from trainforge.server.serving_routes import ServingRoutes

STREAM_CHUNKS = 30
CHUNK_DELAY_S = 0.1  # a 3 s stream: long enough to be in flight across a switch


class Backend:
    """An OpenAI-shaped server on 127.0.0.1:<free port>, in its own thread and event loop.
    `stop()` is graceful as a SIGTERM'd server's: stop accepting, finish what is in flight."""

    def __init__(self, name: str):
        self.name = name
        self.started_streams = 0
        self.saw_authorization = False
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        self.runner = web.AppRunner(app, shutdown_timeout=20)
        self.thread.start()
        self._call(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self._call(site.start())
        self.port = self.runner.addresses[0][1]

    def _call(self, coroutine, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def models(self, request: web.Request) -> web.Response:
        self.saw_authorization = self.saw_authorization or "authorization" in request.headers
        return web.json_response({"object": "list", "data": [{"id": self.name, "object": "model"}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert body["stream"] is True
        self.started_streams += 1
        response = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await response.prepare(request)
        for i in range(STREAM_CHUNKS):
            chunk = {"object": "chat.completion.chunk", "model": self.name, "index": i}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(CHUNK_DELAY_S)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def route(self, model: str = "m", alias: str = "production") -> ServingRoute:
        return ServingRoute(model, alias, "127.0.0.1", self.port)

    def stop(self) -> None:
        if self.loop.is_running():
            self._call(self.runner.cleanup())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


# The serving paths need an API key (server/serving_auth.py, asked by Envoy's ext_authz through the
# suite's gRPC server); every request here carries the viewer's, unless a test says otherwise.
AUTH: dict[str, str] = {}


@pytest.fixture(scope="module")
def envoy(grpc_server, api_keys) -> Iterator[EnvoyGateway]:
    AUTH["authorization"] = f"Bearer {api_keys['viewer']}"
    with tempfile.TemporaryDirectory(prefix="trainforge-serving-") as folder:
        gateway = EnvoyGateway(Path(folder), grpc_address="127.0.0.1", grpc_port=grpc_server.port,
                               http_port=free_port(), admin_port=0)
        gateway.start()
        yield gateway
        gateway.stop()


@pytest.fixture
def backends() -> Iterator[dict[str, Backend]]:
    started = {name: Backend(name) for name in ("A", "B")}
    yield started
    for backend in started.values():
        backend.stop()


def get(envoy: EnvoyGateway, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    connection = http.client.HTTPConnection(envoy.http_address, envoy.http_port, timeout=10)
    try:
        connection.request("GET", path, headers=AUTH if headers is None else headers)
        response = connection.getresponse()
        return response.status, dict(response.headers), json.loads(response.read())
    finally:
        connection.close()


def served_by(envoy: EnvoyGateway, model: str, alias: str) -> str:
    status, _, body = get(envoy, f"/api/serving/{model}/{alias}/v1/models")
    assert status == 200, body
    return body["data"][0]["id"]


@dataclass
class Stream:
    """One streamed chat through the gateway, read line by line in a thread."""

    envoy: EnvoyGateway
    path: str = "/api/serving/m/production/v1/chat/completions"
    chunks: list[dict] = field(default_factory=list)
    done: bool = False
    error: str = ""
    started: float = 0.0
    first_chunk_s: float = -1.0
    total_s: float = -1.0

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        connection = http.client.HTTPConnection(self.envoy.http_address, self.envoy.http_port, timeout=15)
        try:
            self.started = time.monotonic()
            connection.request("POST", self.path, body=json.dumps({"model": "m", "stream": True}),
                               headers={"content-type": "application/json", **AUTH})
            response = connection.getresponse()
            if response.status != 200:
                self.error = f"HTTP {response.status}: {response.read()[:300]!r}"
                return
            while line := response.readline():
                line = line.strip()
                if line == b"data: [DONE]":
                    self.done = True
                elif line.startswith(b"data: "):
                    if not self.chunks:
                        self.first_chunk_s = time.monotonic() - self.started
                    self.chunks.append(json.loads(line[6:]))
            self.total_s = time.monotonic() - self.started
        except Exception as exc:  # every failure is a finding, reported by the test
            self.error = repr(exc)
        finally:
            connection.close()

    def join(self) -> Stream:
        self.thread.join(20)
        return self

    def complete_from(self, name: str) -> bool:
        return (self.done and not self.error and [c["index"] for c in self.chunks] == list(range(STREAM_CHUNKS))
                and {c["model"] for c in self.chunks} == {name})


class Load:
    """Threads sending GET /v1/models through the gateway back to back on keep-alive connections;
    every answer is recorded with the time its request was sent."""

    def __init__(self, envoy: EnvoyGateway, threads: int = 2):
        self.envoy = envoy
        self.answers: list[tuple[float, str]] = []
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        connection = http.client.HTTPConnection(self.envoy.http_address, self.envoy.http_port, timeout=10)
        while not self.stopping.is_set():
            sent = time.monotonic()
            try:
                connection.request("GET", "/api/serving/m/production/v1/models", headers=AUTH)
                response = connection.getresponse()
                body = response.read()
                if response.status != 200:
                    self.failures.append(f"HTTP {response.status}: {body[:300]!r}")
                else:
                    self.answers.append((sent, json.loads(body)["data"][0]["id"]))
            except Exception as exc:
                self.failures.append(repr(exc))
                connection.close()
                connection = http.client.HTTPConnection(self.envoy.http_address, self.envoy.http_port, timeout=10)
        connection.close()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(15)


def test_route_reaches_its_server_and_streams_unbuffered(envoy, backends):
    envoy.serving_routes.apply([backends["A"].route()])
    assert served_by(envoy, "m", "production") == "A"
    stream = Stream(envoy).join()
    assert stream.complete_from("A"), stream
    # Each chunk passes through as the server writes it: the first arrives long before the end.
    assert stream.first_chunk_s < 1.0 and stream.total_s >= STREAM_CHUNKS * CHUNK_DELAY_S, stream
    assert envoy.serving_routes.current() == [backends["A"].route()]


def test_switch_drops_no_request_and_drains_the_old_server(envoy, backends):
    a, b = backends["A"], backends["B"]
    envoy.serving_routes.apply([a.route()])
    load = Load(envoy)
    streams = [Stream(envoy) for _ in range(3)]
    deadline = time.monotonic() + 5
    while any(not s.chunks for s in streams) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(s.chunks for s in streams), "the streams did not start"
    time.sleep(0.3)

    began = time.monotonic()
    envoy.serving_routes.apply([b.route()])
    applied = time.monotonic()
    # What a rollout does next: SIGTERM the old server, which stops accepting and finishes what is
    # in flight. Its streams have ~2 s to go, so this waits for them.
    a.stop()
    stopped = time.monotonic()
    late_stream = Stream(envoy).join()
    time.sleep(0.5)
    load.stop()

    for stream in streams:
        assert stream.join().complete_from("A"), stream
    assert late_stream.complete_from("B"), late_stream
    assert load.failures == []
    before = [name for sent, name in load.answers if sent < began]
    after = [name for sent, name in load.answers if sent >= applied]
    assert len(before) >= 5 and set(before) == {"A"}, before
    assert len(after) >= 5 and set(after) == {"B"}, after
    assert stopped - applied > 1.0, "the old server stopped at once: no stream was in flight across the switch"
    assert applied - began < 2.0


def test_models_and_aliases_route_independently(envoy, backends):
    a, b = backends["A"], backends["B"]
    routes = [a.route("m1", "production"), b.route("m1", "staging"),
              b.route("org/m2", "production"), a.route("org/m2", "staging"),
              # Its prefix /api/serving/org/m2/ is a prefix of org/m2's: the longer one must win.
              a.route("org", "m2")]
    envoy.serving_routes.apply(routes)
    expected = {("m1", "production"): "A", ("m1", "staging"): "B", ("org/m2", "production"): "B",
                ("org/m2", "staging"): "A", ("org", "m2"): "A"}
    assert {key: served_by(envoy, *key) for key in expected} == expected

    # Moving one alias (put) leaves every other endpoint where it was.
    envoy.serving_routes.put(b.route("m1", "production"))
    assert {key: served_by(envoy, *key) for key in expected} == {**expected, ("m1", "production"): "B"}

    # A route taken away is a 404, the others keep serving.
    envoy.serving_routes.remove("m1", "production")
    assert get(envoy, "/api/serving/m1/production/v1/models")[0] == 404
    assert served_by(envoy, "m1", "staging") == "B"
    assert sorted(envoy.serving_routes.current(), key=lambda r: r.prefix) == sorted(routes[1:], key=lambda r: r.prefix)


def test_unknown_model_or_alias_is_a_json_404_from_envoy(envoy, backends):
    envoy.serving_routes.apply([backends["A"].route("known", "production")])
    for path in ("/api/serving/unknown/production/v1/models", "/api/serving/known/staging/v1/models",
                 "/api/serving/known/production", "/api/serving/"):
        status, headers, body = get(envoy, path)
        assert status == 404, (path, body)
        assert headers["content-type"].startswith("application/json")
        assert body["code"] == 404 and "no live deployment" in body["message"], body
    post = Stream(envoy, path="/api/serving/unknown/production/v1/chat/completions").join()
    assert post.error.startswith("HTTP 404"), post


def test_bad_names_are_refused(envoy):
    with pytest.raises(InvalidArgument) as caught:
        ServingRoute("bad name", "Production", "localhost", 0)
    assert {v.field for v in caught.value.violations} == {"model", "alias", "host", "port"}
    for model in ("a/../b", "a//b", "a/", "./a", "x" * 129):
        with pytest.raises(InvalidArgument) as caught:
            ServingRoute(model, "production", "127.0.0.1", 8000)
        assert [v.field for v in caught.value.violations] == ["model"], model
    for alias in ("", "a/b", "a.b", "1st"):
        with pytest.raises(InvalidArgument) as caught:
            ServingRoute("m", alias, "127.0.0.1", 8000)
        assert [v.field for v in caught.value.violations] == ["alias"], alias

    before = envoy.serving_routes.current()
    route = ServingRoute("m", "production", "127.0.0.1", 8000)
    with pytest.raises(InvalidArgument) as caught:
        envoy.serving_routes.apply([route, ServingRoute("m", "production", "127.0.0.1", 8001)])
    assert [v.field for v in caught.value.violations] == ["routes[1]"]
    assert envoy.serving_routes.current() == before


def test_an_unreachable_admin_is_a_clear_error_and_changes_nothing(envoy):
    before = (envoy.run_dir / "serving" / "cds.json").read_text()
    routes = ServingRoutes(envoy.run_dir, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Unavailable, match="admin endpoint http://127.0.0.1:"):
        routes.apply([ServingRoute("m", "production", "127.0.0.1", 8000)])
    assert (envoy.run_dir / "serving" / "cds.json").read_text() == before


def test_serving_routes_need_a_running_gateway(tmp_path):
    gateway = EnvoyGateway(tmp_path, grpc_address="127.0.0.1", grpc_port=free_port(), http_port=free_port(),
                           admin_port=0)
    with pytest.raises(FailedPrecondition):
        gateway.serving_routes  # noqa: B018


def test_serving_paths_need_an_api_key_and_never_pass_it_on(envoy, backends, api_keys):
    routes = envoy.serving_routes
    routes.apply([backends["A"].route()])
    try:
        status, _, body = get(envoy, "/api/serving/m/production/v1/models", headers={})
        assert status == 401 and "API key" in body["message"], body  # the gateway's JSON error shape
        status, _, body = get(envoy, "/api/serving/m/production/v1/models",
                              headers={"authorization": "Bearer tf_notakey_" + "x" * 43})
        assert status == 401, body
        status, _, body = get(envoy, "/api/serving/m/production/v1/models",
                              headers={"authorization": f"Bearer {api_keys['viewer']}"})
        assert status == 200 and body["data"][0]["id"] == "A", body
        assert backends["A"].saw_authorization is False  # the key stays at the gateway
    finally:
        routes.apply([])
