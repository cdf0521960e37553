"""The inference server's Prometheus metrics, in a registry of its own (never the process-global
default, so two servers in one test process, or a library's metrics, never mix)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Endpoints that get their own label value; anything else counts as "other", so a scanner probing
# random paths cannot grow the label set.
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")
CONTENT_TYPE = CONTENT_TYPE_LATEST

# A 135M model on 2 cores answers a short chat in 0.3-2 s and a first token in 20-300 ms; 8 queued
# clients push both up about 8x. The buckets cover 5 ms to 2 minutes.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def endpoint_label(path: str) -> str:
    return path if path in ENDPOINTS else "other"


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("trainforge_serving_requests", "HTTP requests answered, by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("trainforge_serving_request_duration_seconds",
                                 "Time from request to the last byte of the response", ["endpoint"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("trainforge_serving_time_to_first_token_seconds",
                              "Time from request to the first generated text (queueing included)", ["endpoint"],
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("trainforge_serving_generated_tokens", "Completion tokens generated", ["endpoint"],
                              registry=r)
        self.prompt_tokens = Counter("trainforge_serving_prompt_tokens", "Prompt tokens processed", ["endpoint"],
                                     registry=r)
        self.in_flight = Gauge("trainforge_serving_requests_in_flight", "Requests being answered now",
                               registry=r)
        self.ready = Gauge("trainforge_serving_model_ready", "1 once the model is loaded and serving", registry=r)
        self.load_seconds = Gauge("trainforge_serving_model_load_seconds", "Seconds the model took to load",
                                  registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
