"""Real-time ingestion: MQTT (3.1.1 and 5) and NATS JetStream into versioned datasets.

``headrace stream`` runs :class:`StreamWorker` over the ``kind: mqtt`` and ``kind: nats`` sources:
micro-batches are validated and quarantined like any other ingestion, committed, and only then
acknowledged to the broker; duplicates are removed by message key. ``headrace simulate sensors``
publishes realistic readings (:func:`simulate_sensors`); :class:`LocalBroker` is the in-process broker
the demo starts when none is reachable (production commands never start one).
"""

from __future__ import annotations

from .broker import LocalBroker, broker_reachable
from .mqtt import MqttStream, StreamToken
from .payload import Message, PayloadFormat, TopicPattern, parse_messages
from .simulator import SensorSimulator, SimulationResult, simulate_sensors
from .worker import KeyMemory, StreamStats, StreamWorker, open_stream, run_source, run_workers

__all__ = [
    "KeyMemory",
    "LocalBroker",
    "Message",
    "MqttStream",
    "PayloadFormat",
    "SensorSimulator",
    "SimulationResult",
    "StreamStats",
    "StreamToken",
    "StreamWorker",
    "TopicPattern",
    "broker_reachable",
    "open_stream",
    "parse_messages",
    "run_source",
    "run_workers",
    "simulate_sensors",
]
