"""The stable endpoints of local deployments: which inference server answers
`/api/serving/{model}/{alias}/...` on the gateway. Core code builds the list; the server's gateway
(trainforge.server.serving_routes) makes Envoy route by it. Names are checked here, once, because
they become part of Envoy's route table: a model name is a path prefix, so it must be a name the
registry accepts and must not contain empty, `.` or `..` segments a client's URL could never carry."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from trainforge.core.registry.validation import Violations, check_alias, check_name

SERVING_PREFIX = "/api/serving/"


def _check_model(v: Violations, field: str, model: str) -> None:
    before = len(v.items)
    check_name(v, field, model)
    if len(v.items) == before and any(segment in ("", ".", "..") for segment in model.split("/")):
        v.add(field, "must not contain empty, '.' or '..' path segments")


def _check_host(v: Violations, field: str, host: str) -> None:
    # Routes go to STATIC Envoy clusters, which take IP addresses only: a DNS name would need a
    # resolver in the gateway and could resolve to an address the server does not listen on.
    try:
        ipaddress.ip_address(host)
    except ValueError:
        v.add(field, f"must be an IP address such as 127.0.0.1 (got {host!r})")


def _check_port(v: Violations, field: str, port: object) -> None:
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        v.add(field, f"must be a port number 1-65535 (got {port!r})")


def _collect(v: Violations, prefix: str, route: ServingRoute) -> None:
    for name in ("model", "alias", "host"):
        if not isinstance(getattr(route, name), str):
            v.add(f"{prefix}{name}", f"must be a string (got {type(getattr(route, name)).__name__})")
    if isinstance(route.model, str):
        _check_model(v, f"{prefix}model", route.model)
    if isinstance(route.alias, str):
        check_alias(v, f"{prefix}alias", route.alias)
    if isinstance(route.host, str):
        _check_host(v, f"{prefix}host", route.host)
    _check_port(v, f"{prefix}port", route.port)


@dataclass(frozen=True)
class ServingRoute:
    """Requests to `/api/serving/{model}/{alias}/<rest>` go to `http://{host}:{port}/<rest>`.
    Raises InvalidArgument naming every bad field."""

    model: str
    alias: str
    host: str
    port: int

    def __post_init__(self) -> None:
        v = Violations()
        _collect(v, "", self)
        v.raise_if_any()

    @property
    def prefix(self) -> str:
        """The gateway path prefix of this endpoint, with its trailing slash."""
        return f"{SERVING_PREFIX}{self.model}/{self.alias}/"

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def check_routes(routes: Iterable[ServingRoute]) -> Sequence[ServingRoute]:
    """The routes as a list, after checking that each model and alias is routed once; raises
    InvalidArgument naming each duplicate (`routes[i]`)."""
    routes = list(routes)
    v = Violations()
    seen: dict[tuple[str, str], int] = {}
    for i, route in enumerate(routes):
        if not isinstance(route, ServingRoute):
            v.add(f"routes[{i}]", f"must be a ServingRoute (got {type(route).__name__})")
            continue
        key = (route.model, route.alias)
        if key in seen:
            v.add(f"routes[{i}]", f"model {route.model!r} alias {route.alias!r} is already routed by "
                                  f"routes[{seen[key]}]")
        else:
            seen[key] = i
    v.raise_if_any()
    return routes
