"""Prometheus metrics of one replica (``GET /metrics``), in a registry of the app's own (several apps in one
process do not mix their figures).

Fed by: :class:`voicecall.server.limits.Admission` (sessions, limit rejections), the history recorder (turns,
per-stage latency, errors by code — so these need history on, ``store.url`` not ``none``), the relay (messages and
bytes, flushed in batches off the per-message path) and collectors read at scrape time (queue depths, drain).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Live:
    """Gauges computed when Prometheus scrapes (queue depths, draining)."""

    def __init__(self, read: Callable[[], Mapping[str, float]]) -> None:
        self.read = read

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        out = []
        for name, value in self.read().items():
            g = GaugeMetricFamily(f"voicecall_{name}", name.replace("_", " "))
            g.add_metric([], float(value))
            out.append(g)
        return out


class Metrics:
    def __init__(self, replica: str) -> None:
        self.replica = replica
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions = Gauge("voicecall_sessions", "Live sessions", ["transport", "provider"], registry=r)
        self.sessions_started = Counter("voicecall_sessions_started", "Sessions admitted", ["transport", "provider"],
                                        registry=r)
        self.limit_rejections = Counter("voicecall_limit_rejections", "Sessions/secrets refused, by reason", ["code"],
                                        registry=r)
        self.turns = Counter("voicecall_turns", "Responses finished, by status", ["provider", "status"], registry=r)
        self.stage_latency = Histogram("voicecall_stage_latency_seconds", "Per-stage latency of a response",
                                       ["provider", "stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("voicecall_errors", "error events sent to clients, by code", ["code"], registry=r)
        self.relay_messages = Counter("voicecall_relay_messages", "Relayed WebSocket messages", ["direction"],
                                      registry=r)
        self.relay_bytes = Counter("voicecall_relay_bytes", "Relayed WebSocket bytes", ["direction"], registry=r)
        self.info = Gauge("voicecall_replica_info", "This replica", ["replica"], registry=r)
        self.info.labels(replica).set(1)

    def add_live(self, read: Callable[[], Mapping[str, float]]) -> None:
        self.registry.register(_Live(read))  # type: ignore[arg-type]

    def observe_response(self, provider: str, status: str, latency_ms: Mapping[str, float]) -> None:
        self.turns.labels(provider, status).inc()
        for stage, ms in latency_ms.items():
            if isinstance(ms, (int, float)) and ms >= 0:
                self.stage_latency.labels(provider, stage.removesuffix("_ms")).observe(ms / 1000.0)

    def observe_error(self, code: Any) -> None:
        self.errors.labels(str(code or "unknown")[:64]).inc()

    def relayed(self, direction: str, messages: int, nbytes: int) -> None:
        if messages:
            self.relay_messages.labels(direction).inc(messages)
            self.relay_bytes.labels(direction).inc(nbytes)

    def render(self) -> bytes:
        return generate_latest(self.registry)
