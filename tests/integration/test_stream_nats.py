"""The stream worker on a NATS JetStream durable pull consumer (nats-server on 127.0.0.1:4222)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from headrace.config.sources_stream import NatsSource
from headrace.store import Store
from headrace.stream.nats import NatsStream
from headrace.stream.simulator import SensorSimulator
from headrace.stream.worker import StreamWorker

pytestmark = pytest.mark.integration


async def _publish(url: str, subject_prefix: str, count: int) -> int:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    bad = 0
    try:
        futures = []
        for device, payload, malformed in SensorSimulator(8, malformed=0.01, seed=5).readings(count):
            bad += malformed
            futures.append(js.publish(f"{subject_prefix}.{device}", payload))
            if len(futures) >= 500:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
    finally:
        await nc.close()
    return bad


async def _delete_stream(url: str, stream: str) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def test_nats_jetstream_exact_count_and_redelivery(tmp_path, nats_url):
    name = "hrtest" + uuid.uuid4().hex[:8]
    total = 10_000
    spec = NatsSource.model_validate(
        {
            "kind": "nats",
            "servers": [nats_url],
            "stream": name,
            "subjects": [f"{name}.>"],
            "create_stream": True,
            "dataset": "readings",
            "topic_pattern": name + ".{device}",
            "payload": {"event_time": "ts"},
            "batch_rows": 2000,
            "ack_wait_seconds": 2,
            "compact_every_seconds": 0,
        }
    )
    store = Store(tmp_path / "lake")
    try:
        # a first consumer takes a batch and "dies" without acknowledging it
        dying = NatsStream("sensors", spec)
        dying.start()
        bad = asyncio.run(_publish(nats_url, name, total))
        lost_batch = next(iter(dying.read()))
        assert lost_batch.frame.height + len(lost_batch.failures) == lost_batch.token.messages >= 2000
        dying.close()
        # the worker on the same durable gets everything, the unacknowledged batch redelivered
        stats = StreamWorker("sensors", spec, store, source=NatsStream("sensors", spec)).run(idle_exit=5)
    finally:
        asyncio.run(_delete_stream(nats_url, name))
    data = store.read("readings")
    assert data.height == total - bad
    assert data.select("device", "seq").n_unique() == total - bad
    assert store.read("readings__quarantine").height == bad
    assert stats.status == "succeeded"
