"""The serving metrics, all under ``headrace_``, with the shared labels ``model``, ``version``, ``route``.

Each app gets its own ``CollectorRegistry`` (two apps in one process, as tests do, never collide).
With several worker processes (``headrace serve --workers N``) every value is kept in files under
``$PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode) and ``/metrics``, whichever
worker answers, sums them over the workers: one request counted once, by the worker that served it.
Labelled children are cached: ``labels()`` takes a lock and builds a tuple, and a one-row prediction
should not pay that twice per request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

__all__ = ["LATENCY_BUCKETS", "ServeMetrics", "multiprocess_dir"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SCORE_BUCKETS = tuple(i / 10 for i in range(1, 10))


def multiprocess_dir() -> str | None:
    """The folder shared by the worker processes, when prometheus_client's multiprocess mode is on."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class ServeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        shared = multiprocess_dir()
        if shared is not None and registry is None:
            # The metrics below write to the shared files; what /metrics renders is read from them.
            MultiProcessCollector(self.registry, path=shared)
            r = CollectorRegistry()
        self.requests = Counter(
            "headrace_requests",
            "Requests by route, model, version and status code",
            ["route", "model", "version", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "headrace_request_duration_seconds",
            "Request latency",
            ["route", "model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "headrace_request_errors",
            "Requests that failed, by route, model and error kind",
            ["route", "model", "error"],
            registry=r,
        )
        self.in_flight = Gauge(
            "headrace_requests_in_flight",
            "Requests being handled",
            ["route"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.predictions = Counter(
            "headrace_predictions",
            "Predicted labels (classification) or rows (regression) by model and version",
            ["model", "version", "label"],
            registry=r,
        )
        self.notes = Counter(
            "headrace_prediction_notes",
            "Answers that fell back: a value imputed, an unseen category ignored, an unknown user served "
            "popular items",
            ["model", "version", "kind"],
            registry=r,
        )
        self.scores = Histogram(
            "headrace_prediction_score",
            "Distribution of the positive-class probability (binary) or of predicted values",
            ["model", "version"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.load_seconds = Gauge(
            "headrace_model_load_seconds",
            "Seconds to load (and compile) a model version",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.model_info = Gauge(
            "headrace_model_info",
            "1 for the version being served, with its path",
            ["model", "version", "path"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.swaps = Counter("headrace_model_swaps", "Hot swaps to a new champion", ["model"], registry=r)
        self.log_rows = Counter(
            "headrace_prediction_log_rows",
            "Rows written to the prediction log datasets",
            ["dataset"],
            registry=r,
        )
        self.log_dropped = Counter(
            "headrace_prediction_log_dropped",
            "Rows dropped (queue full or write failed)",
            ["dataset"],
            registry=r,
        )
        self.interactions = Counter(
            "headrace_interactions", "Interactions received for live recommendations", ["model"], registry=r
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe(self, route: str, model: str, version: str, status: int, seconds: float) -> None:
        self.child(self.requests, route, model, version, str(status)).inc()
        self.child(self.duration, route, model, version).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    @staticmethod
    def process_stopped() -> None:
        """Drop this worker's live gauges from the shared files (multiprocess mode only)."""
        shared = multiprocess_dir()
        if shared is not None:
            mark_process_dead(os.getpid(), path=shared)

    @staticmethod
    def sweep_dead_workers() -> list[int]:
        """Drop the live gauges of workers that died without stopping (a crash, a kill): the worker
        started in a dead one's place calls this, so in-flight counts and model info stay true."""
        shared = multiprocess_dir()
        if shared is None:
            return []
        dead = []
        for path in Path(shared).glob("gauge_live*_*.db"):
            pid = int(path.stem.rsplit("_", 1)[-1])
            if pid != os.getpid() and not _alive(pid):
                mark_process_dead(pid, path=shared)
                dead.append(pid)
        return sorted(set(dead))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
