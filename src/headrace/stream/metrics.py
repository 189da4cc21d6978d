"""The stream worker's Prometheus metrics, defined once, under ``headrace_stream_``.

Labels: ``source`` (the name in headrace.yaml) and ``dataset``. Each worker process serves its own
``/metrics`` (``metrics_port``, plus the worker's index with ``--workers N``); sum over processes in
PromQL.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

__all__ = [
    "BATCH_ROWS",
    "COMMITTED",
    "DELAY",
    "DUPLICATES",
    "FLUSH_SECONDS",
    "PENDING",
    "QUARANTINED",
    "RECEIVED",
    "RECONNECTS",
    "serve_metrics",
]

log = logging.getLogger("headrace.stream.metrics")
_LABELS = ("source", "dataset")

RECEIVED = Counter("headrace_stream_messages_received", "Messages received from the broker", _LABELS)
COMMITTED = Counter("headrace_stream_rows_committed", "Rows committed to the dataset", _LABELS)
QUARANTINED = Counter(
    "headrace_stream_rows_quarantined", "Rows and unparseable messages sent to the quarantine", _LABELS
)
DUPLICATES = Counter(
    "headrace_stream_duplicates_dropped", "Redelivered rows dropped because their key was committed", _LABELS
)
RECONNECTS = Counter("headrace_stream_reconnects", "Reconnections to the broker", _LABELS)
FLUSH_SECONDS = Histogram(
    "headrace_stream_batch_flush_seconds",
    "Seconds to validate, commit and acknowledge one micro-batch",
    _LABELS,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DELAY = Histogram(
    "headrace_stream_end_to_end_delay_seconds",
    "Seconds from a reading's event time (or receive time) to its commit, oldest row of each batch",
    _LABELS,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
)
BATCH_ROWS = Histogram(
    "headrace_stream_batch_rows",
    "Messages per micro-batch",
    _LABELS,
    buckets=(1, 10, 100, 1000, 5000, 10000, 50000, 100000),
)
PENDING = Gauge("headrace_stream_pending_messages", "Messages received and not yet committed", _LABELS)

_served: set[int] = set()


def serve_metrics(port: int) -> None:
    """Serve the default registry on ``port`` (once per process and port)."""
    if port in _served:
        return
    start_http_server(port, addr="0.0.0.0")
    _served.add(port)
    log.info("metrics on http://0.0.0.0:%d/metrics", port)
