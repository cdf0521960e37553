"""A stable serving path's target: the gateway routes `/api/serving/{model}/{alias}/` to host:port."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServingRoute:
    model: str
    alias: str
    host: str
    port: int
