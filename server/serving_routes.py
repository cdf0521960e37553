"""Points the gateway's stable endpoints, `/api/serving/{model}/{alias}/...`, at the inference
server of each live local deployment, through Envoy's file-based xDS: the gateway's route table
comes by RDS from `rds.json` and the serving clusters by CDS from `cds.json`, both in
`<gateway run dir>/serving/`. Each file is replaced whole by a rename in its folder, the only change
Envoy's filesystem subscription reacts to (it watches the path for moves, so it never reads a half
written file).

A switch never edits a cluster in place (an updated cluster replaces its hosts, the path of
envoyproxy/envoy#13070's transient 503s): there is one cluster per server address, and `apply`
goes in three steps, each confirmed on Envoy's admin before the next:
  1. add the clusters of new addresses;
  2. swap the route table (a request keeps the route it matched, new requests take the new one);
  3. remove the clusters no route names any more: their connection pools are drained, so requests
     in flight on the old server finish (tests/server/test_serving_routes.py checks it with streams
     that outlive the switch).
When `apply` returns, Envoy sends nothing new to an address that left the list; the caller may then
stop that server gracefully (stop accepting, finish what is in flight).

Every process that knows the gateway's run dir and admin URL can apply routes (a deploy job in a
worker, `trainforge serve` itself): the whole read-change-confirm runs under a file lock, and the
routes of record are the files themselves."""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import logging
import os
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from trainforge.core.errors import FailedPrecondition, Unavailable
from trainforge.core.serving.routes import ServingRoute, check_routes

log = logging.getLogger(__name__)

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE_CONFIG_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
# The catch-all 404 route of gateway/envoy.yaml; serving routes go just before it.
NOT_FOUND_ROUTE = "serving-not-found"
CLUSTER_PREFIX = "serving/"
# A serving route is named `serving/{model}@{alias}`: `@` is in neither name, so the name reads back.
ROUTE_PREFIX = "serving/"

# A streamed chat sends a chunk per token; a plain completion sends nothing until it is done. The
# route has no total timeout (a long generation may take minutes), and its idle timeout (no byte in
# either direction) is 10 minutes, over the 5-minute default of Envoy's stream idle timeout: a
# non-streamed 4096-token answer at 10 tokens/s is silent for ~7 minutes.
SERVING_IDLE_TIMEOUT = "600s"
# Envoy closes a pooled connection idle for 30 s, before the server would (aiohttp keeps an idle
# connection 75 s): a request is never written into a connection the server is closing.
UPSTREAM_IDLE_TIMEOUT = "30s"
# Envoy applies an update on its main thread (what the admin reports) and then posts it to each
# worker thread's event loop; this margin covers that hand-over before the next step relies on it.
WORKER_SETTLE_S = 0.1

SERVING_AUTH_FILTER = "trainforge.serving_auth"
_DISABLED_FILTERS = {
    # The transcoder would refuse a path that is not one of the API's methods (reject_unknown_method)
    # and the body check is for API calls: neither applies to an inference server's requests.
    "envoy.filters.http.grpc_json_transcoder": {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True},
    "envoy.filters.http.ext_authz": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "disabled": True},
    # The API-key check of the serving paths (gateway/envoy.yaml: off everywhere else).
    SERVING_AUTH_FILTER: {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": False,
                          "config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3."
                                              "ExtAuthzPerRoute", "check_settings": {}}},
}


def cluster_name(route: ServingRoute) -> str:
    """One cluster per server address, shared by every model and alias it serves."""
    return f"{CLUSTER_PREFIX}{route.address}"


def render_cluster(route: ServingRoute) -> dict:
    name = cluster_name(route)
    return {
        "@type": CLUSTER_TYPE,
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": route.host, "port_value": route.port}}}}]}]},
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "common_http_protocol_options": {"idle_timeout": UPSTREAM_IDLE_TIMEOUT},
            "explicit_http_config": {"http_protocol_options": {}},
        }},
    }


def render_route(route: ServingRoute) -> dict:
    return {
        "name": f"{ROUTE_PREFIX}{route.model}@{route.alias}",
        "match": {"prefix": route.prefix},
        "route": {
            "cluster": cluster_name(route),
            "prefix_rewrite": "/",
            "timeout": "0s",
            "idle_timeout": SERVING_IDLE_TIMEOUT,
            # Only failures where the server never saw the request: nothing is generated twice.
            "retry_policy": {"retry_on": "connect-failure,refused-stream,reset-before-request", "num_retries": 2},
        },
        "typed_per_filter_config": copy.deepcopy(_DISABLED_FILTERS),
    }


def render_route_config(base: dict, routes: Sequence[ServingRoute]) -> dict:
    """The gateway's route table with one route per model and alias, just before the catch-all 404.
    Longer prefixes first: model `org` alias `model` (`/api/serving/org/model/`) must not take the
    requests of model `org/model` alias `production`."""
    config = copy.deepcopy(base)
    table = config["virtual_hosts"][0]["routes"]
    at = next((i for i, r in enumerate(table) if r.get("name") == NOT_FOUND_ROUTE), None)
    if at is None:
        raise FailedPrecondition(f"the gateway's route table has no {NOT_FOUND_ROUTE!r} route (gateway/envoy.yaml)")
    ordered = sorted(routes, key=lambda r: (-len(r.prefix), r.prefix))
    table[at:at] = [render_route(r) for r in ordered]
    return config


def use_dynamic_routes(config: dict, directory: Path) -> dict:
    """Changes a rendered gateway config (server.envoy_process.render_config) to take its route
    table by RDS and its serving clusters by CDS from files in `directory`; returns the route table
    it had inline, the base that every route file is built on. Write the files (`write_initial`)
    before Envoy starts: a path config source must exist when Envoy loads it."""
    files = ServingFiles(directory)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    base = hcm.pop("route_config")
    hcm["rds"] = {"route_config_name": base["name"],
                  "config_source": {"resource_api_version": "V3", "path_config_source": {"path": str(files.rds)}}}
    config.setdefault("node", {"id": "trainforge-gateway", "cluster": "trainforge"})
    config["dynamic_resources"] = {
        "cds_config": {"resource_api_version": "V3", "path_config_source": {"path": str(files.cds)}}}
    return base


class ServingFiles:
    """The files of the dynamic part, in one folder (renames are atomic only within a filesystem)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.base = directory / "base_routes.json"
        self.rds = directory / "rds.json"
        self.cds = directory / "cds.json"
        self.lock = directory / "lock"

    def write_initial(self, base: dict) -> None:
        """The state of a fresh gateway: the base route table and no serving cluster."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.locked():
            _replace(self.base, base)
            _replace(self.rds, _discovery(0, [{"@type": ROUTE_CONFIG_TYPE, **render_route_config(base, [])}]))
            _replace(self.cds, _discovery(0, []))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with open(self.lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _discovery(version: int, resources: list[dict]) -> dict:
    return {"version_info": str(version), "resources": resources}


def _replace(path: Path, document: dict) -> None:
    """Writes `path` whole by a rename from a temporary file beside it."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=1)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class ServingRoutes:
    """`apply(routes)` makes the gateway at `admin_url` route exactly `routes` and returns once
    Envoy reports every step applied. `run_dir` is the gateway's run folder (EnvoyGateway.run_dir)."""

    def __init__(self, run_dir: Path, admin_url: str, *, timeout: float = 10):
        self.files = ServingFiles(Path(run_dir) / "serving")
        self.run_dir = Path(run_dir)
        self.admin_url = admin_url.rstrip("/")
        self.timeout = timeout

    def apply(self, routes: Iterable[ServingRoute]) -> None:
        """Routes exactly `routes`. Blocking (about 0.3 s): call it from a thread in async code.
        Raises InvalidArgument for a model and alias routed twice, Unavailable when Envoy refuses
        an update (the file is put back as it was) or has not applied it within `timeout` s."""
        routes = check_routes(routes)
        with self.files.locked():
            self._apply(routes)

    def put(self, route: ServingRoute) -> None:
        """Routes `route`'s model and alias to its server, leaving every other route as it is:
        the read and the change are one step under the lock, so deploys running at once in several
        processes do not undo each other."""
        with self.files.locked():
            others = [r for r in self._read() if (r.model, r.alias) != (route.model, route.alias)]
            self._apply(check_routes([*others, route]))

    def remove(self, model: str, alias: str) -> None:
        """Stops routing `model`'s `alias` (a later request gets the 404); no-op if not routed."""
        with self.files.locked():
            self._apply([r for r in self._read() if (r.model, r.alias) != (model, alias)])

    def current(self) -> list[ServingRoute]:
        """The routes of record, as last applied."""
        with self.files.locked():
            return self._read()

    def _read(self) -> list[ServingRoute]:
        rds = json.loads(self.files.rds.read_text())
        cds = json.loads(self.files.cds.read_text())
        addresses = {c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                     ["socket_address"] for c in cds["resources"]}
        routes = []
        for entry in rds["resources"][0]["virtual_hosts"][0]["routes"]:
            if entry.get("name", "").startswith(ROUTE_PREFIX):
                model, alias = entry["name"][len(ROUTE_PREFIX):].rsplit("@", 1)
                address = addresses[entry["route"]["cluster"]]
                routes.append(ServingRoute(model, alias, address["address"], address["port_value"]))
        return routes

    def _apply(self, routes: Sequence[ServingRoute]) -> None:
        base = json.loads(self.files.base.read_text())
        cds = json.loads(self.files.cds.read_text())
        rds = json.loads(self.files.rds.read_text())
        version = max(int(cds["version_info"]), int(rds["version_info"]))
        old = {c["name"]: c for c in cds["resources"]}
        new = {cluster_name(r): render_cluster(r) for r in routes}
        table = {"@type": ROUTE_CONFIG_TYPE, **render_route_config(base, routes)}

        if new.keys() - old.keys():
            version += 1
            cds = self._update(self.files.cds, cds, _discovery(version, [*old.values(), *(
                c for name, c in new.items() if name not in old)]), self._clusters_at)
        if rds["resources"] != [table]:
            version += 1
            rds = self._update(self.files.rds, rds, _discovery(version, [table]), self._routes_at)
        if old.keys() - new.keys():
            version += 1
            cds = self._update(self.files.cds, cds, _discovery(version, list(new.values())), self._clusters_at)
        log.info("serving routes applied", extra={"fields": {
            "version": version, "routes": [f"{r.model}@{r.alias}->{r.address}" for r in routes]}})

    # ---- one confirmed step ----

    def _update(self, path: Path, previous: dict, document: dict, applied_at: Callable[[], str | None]) -> dict:
        """Replaces `path` (now holding `previous`) by `document` and waits until `applied_at()`
        reports its version; returns `document`."""
        rejected_before = self._rejected()
        _replace(path, document)
        version = document["version_info"]
        deadline = time.monotonic() + self.timeout
        while True:
            if applied_at() == version:
                time.sleep(WORKER_SETTLE_S)
                return document
            if self._rejected() > rejected_before:
                _replace(path, previous)
                raise Unavailable(f"the gateway refused {path.name} version {version}: {self._log_tail()}",
                                  reason="GATEWAY_CONFIG_REJECTED")
            if time.monotonic() > deadline:
                raise Unavailable(f"the gateway at {self.admin_url} did not apply {path.name} version {version} "
                                  f"in {self.timeout:.0f} s", reason="GATEWAY_UPDATE_TIMEOUT")
            time.sleep(0.02)

    def _clusters_at(self) -> str | None:
        """The CDS version Envoy runs, once no cluster of it is still warming."""
        dump = self._config_dump("ClustersConfigDump")
        if dump.get("dynamic_warming_clusters"):
            return None
        return dump.get("version_info")

    def _routes_at(self) -> str | None:
        dump = self._config_dump("RoutesConfigDump")
        versions = [c.get("version_info") for c in dump.get("dynamic_route_configs", [])]
        return versions[0] if len(versions) == 1 else None

    def _config_dump(self, kind: str) -> dict:
        for config in self._admin_json("/config_dump").get("configs", []):
            if config.get("@type", "").endswith("." + kind):
                return config
        return {}

    def _rejected(self) -> int:
        """Updates Envoy refused so far, clusters and routes together."""
        stats = self._admin_json("/stats?format=json&filter=" + urllib.request.quote(
            r"^(cluster_manager\.cds|http\.[^.]+\.rds\.[^.]+)\.update_rejected$"))
        return sum(int(s.get("value", 0)) for s in stats.get("stats", []) if "value" in s)

    def _admin_json(self, path: str) -> dict:
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=5) as response:
                return json.loads(response.read())
        except (OSError, ValueError) as exc:
            raise Unavailable(f"the gateway's admin endpoint {self.admin_url} did not answer {path}: {exc}",
                              reason="GATEWAY_ADMIN_UNAVAILABLE") from None

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.run_dir / "envoy.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no envoy.log)"
        return " | ".join(line for line in text[-lines:])
