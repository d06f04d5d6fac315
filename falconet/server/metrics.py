"""Prometheus metrics of the prediction server (``GET /metrics``).

Each app has its own registry, so several servers in one process (the tests) do not mix counts.
Requests are labelled by route *template*, never by raw path, so a client cannot blow up the
number of series by inventing URLs.
"""
from __future__ import annotations

import time
from typing import Any

#: Seconds; from a fast int8 classifier on a desktop to a detector on a Raspberry Pi.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("falconet_http_requests", "HTTP requests answered, by route template and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("falconet_http_request_duration_seconds", "Time from request to the end of the "
                                 "response, by route template", ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("falconet_inference_seconds", "Decode, preprocess, model and post-processing "
                                   "time of one image in a worker", ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("falconet_queue_wait_seconds", "Time a request waited for an inference slot",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.rejected = Counter("falconet_rejected_requests", "Requests refused with 503 because the server was "
                                "saturated", ["reason"], registry=r)
        self.predictions = Counter("falconet_predictions", "Images predicted, by model", ["model"], registry=r)
        self.running = Gauge("falconet_inference_running", "Inferences running now", registry=r)
        self.waiting = Gauge("falconet_inference_waiting", "Requests waiting for an inference slot", registry=r)
        self.ready = Gauge("falconet_model_ready", "1 when the model is loaded and warmed up", ["model"], registry=r)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Plain ASGI (no per-request task or body copy, unlike ``BaseHTTPMiddleware``)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope.get("method", ""), template, str(status)).inc()
            self.metrics.latency.labels(template).observe(time.perf_counter() - start)
