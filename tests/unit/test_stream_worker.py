"""The stream worker's commit path on a real store: dedup, quarantine, ack only after commit."""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest
from pydantic import ValidationError

from headrace.config.sources_stream import MqttSource, NatsSource
from headrace.ingest.base import Batch
from headrace.store import Store
from headrace.stream.mqtt import StreamToken, payload_format
from headrace.stream.payload import Message, TopicPattern, parse_messages
from headrace.stream.simulator import SensorSimulator
from headrace.stream.worker import KeyMemory, StreamWorker


def spec(**kw):
    base = {
        "kind": "mqtt",
        "broker": "mqtt://127.0.0.1:1883",
        "topics": ["s/+/telemetry"],
        "dataset": "readings",
        "topic_pattern": "s/{device}/telemetry",
        "columns": {"temperature": {"type": "float", "max": 45}},
    }
    return MqttSource.model_validate({**base, **kw})


class ListSource:
    """Batches built from given messages; records what was acknowledged and when."""

    name = "fake"

    def __init__(self, source_spec, batches: list[list[Message]], store: Store) -> None:
        self.spec, self.batches, self.store = source_spec, batches, store
        self.acked: list[tuple[list[int], int]] = []  # (message ids, dataset rows at ack time)

    def read(self) -> Iterator[Batch]:
        pattern = TopicPattern(self.spec.topic_pattern)
        for messages in self.batches:
            parsed = parse_messages(messages, payload_format(self.spec), pattern)
            token = StreamToken([m.token for m in messages], len(messages), parsed.suspect_keys, 0.0)
            yield Batch(frame=parsed.frame, origin="fake", failures=parsed.failures, token=token)

    def ack(self, batch: Batch) -> None:
        rows = self.store.read("readings").height if self.store.exists("readings") else 0
        self.acked.append((batch.token.acks, rows))


def messages(sim_payloads, dup=False, start=0):
    return [
        Message(f"s/{d}/telemetry", p, time.time(), dup, start + i)
        for i, (d, p, _bad) in enumerate(sim_payloads)
    ]


def test_commit_then_ack_and_quarantine(tmp_path):
    store = Store(tmp_path / "lake")
    readings = list(SensorSimulator(5, malformed=0.1, seed=1).readings(200))
    bad = sum(b for _, _, b in readings)
    src = ListSource(spec(), [messages(readings[:100]), messages(readings[100:], start=100)], store)
    stats = StreamWorker("fake", src.spec, store, source=src).run()
    data = store.read("readings")
    quarantine = store.read("readings__quarantine")
    assert data.height + quarantine.height == 200
    assert quarantine.height >= bad
    assert data.get_column("temperature").max() <= 45
    assert stats.rows_committed == data.height and stats.status == "succeeded"
    # each batch was acknowledged after its rows were in the dataset
    assert [len(ids) for ids, _ in src.acked] == [100, 100]
    assert src.acked[0][1] > 0 and src.acked[1][1] == data.height


def test_redelivery_after_restart_is_not_doubled(tmp_path):
    """A worker killed after the commit and before the ack: the broker redelivers (DUP set) to a
    fresh worker with empty memory, which finds the keys in the dataset and drops them."""
    store = Store(tmp_path / "lake")
    readings = list(SensorSimulator(3, seed=2).readings(150))
    first = ListSource(spec(), [messages(readings[:100])], store)
    StreamWorker("fake", first.spec, store, source=first).run()
    assert store.read("readings").height == 100
    redelivered = messages(readings[50:100], dup=True, start=50) + messages(readings[100:], start=100)
    second = ListSource(spec(), [redelivered], store)
    stats = StreamWorker("fake", second.spec, store, source=second).run()
    data = store.read("readings")
    assert data.height == 150
    assert data.select("device_id", "seq").n_unique() == 150
    assert stats.duplicates == 50
    assert len(second.acked[0][0]) == 100  # duplicates are acknowledged too


def test_within_batch_and_memory_duplicates(tmp_path):
    store = Store(tmp_path / "lake")
    one = {"device_id": "d", "seq": 1, "temperature": 20.0}
    payload = orjson.dumps(one)
    batch = [Message("s/d/telemetry", payload, 1.0, False, i) for i in range(3)]
    src = ListSource(spec(), [batch, batch], store)
    stats = StreamWorker("fake", src.spec, store, source=src).run()
    assert store.read("readings").height == 1
    assert stats.duplicates == 5


def test_key_memory_is_bounded():
    memory = KeyMemory(3)
    memory.add_all(["a", "b", "c", "d"])
    assert len(memory) == 3 and "a" not in memory and "d" in memory


def test_simulator_is_deterministic_and_realistic():
    a = list(SensorSimulator(4, malformed=0.05, seed=3, end=1e9).readings(400))
    b = list(SensorSimulator(4, malformed=0.05, seed=3, end=1e9).readings(400))
    assert a == b
    good = [orjson.loads(p) for _, p, bad in a if not bad]
    assert 0 < sum(bad for *_, bad in a) < 60
    assert {r["device_id"] for r in good} == {"dev-0000", "dev-0001", "dev-0002", "dev-0003"}
    stuck = [r["temperature"] for r in good if r["device_id"] == "dev-0001"][20:]
    assert len(set(stuck)) == 1
    assert all(0 <= r["humidity"] <= 100 and r["vibration"] > 0 for r in good)


def test_specs_refuse_plaintext_to_remote_brokers_and_hide_secrets():
    with pytest.raises(ValidationError, match="allow_insecure"):
        spec(broker="mqtt://broker.example.com:1883")
    assert spec(broker="mqtt://broker.example.com", allow_insecure=True).port == 1883
    secure = spec(broker="mqtts://broker.example.com", username="u", password="s3cret")
    assert secure.port == 8883 and secure.uses_tls
    assert "s3cret" not in repr(secure) and "s3cret" not in str(secure.model_dump())
    with pytest.raises(ValidationError, match="credentials"):
        spec(broker="mqtt://u:p@127.0.0.1")
    with pytest.raises(ValidationError, match="mqtts"):
        spec(tls={"ca_file": "ca.pem"})
    with pytest.raises(ValidationError):
        spec(topic_pattern="a/{bad level}/b")
    with pytest.raises(ValidationError, match="allow_insecure"):
        NatsSource.model_validate(
            {
                "kind": "nats",
                "servers": ["nats://10.1.2.3:4222"],
                "stream": "s",
                "subjects": ["a"],
                "dataset": "d",
            }
        )


def test_payload_columns_are_typed_on_the_first_batch_and_held_to_it(tmp_path):
    """Numbers sent as JSON text are inferred (and pinned in the metadata); a later payload whose value
    does not fit is quarantined with the reason, never stored as text."""
    from headrace.ingest.schema import load_schema
    from headrace.metadata import Metadata

    store = Store(tmp_path / "lake")
    meta = Metadata(f"sqlite:///{tmp_path / 'm.db'}")
    first = [(f"d{i}", orjson.dumps({"humidity": f"{40 + i}.5", "door": "true"}), False) for i in range(20)]
    later = [("d1", orjson.dumps({"humidity": "wet", "door": "false"}), False)]
    later += [("d2", orjson.dumps({"humidity": "41", "door": "false"}), False)]
    src = ListSource(spec(columns={}), [messages(first), messages(later, start=20)], store)
    StreamWorker("fake", src.spec, store, meta, source=src).run()
    data = store.read("readings")
    assert str(data.schema["humidity"]) == "Float64" and str(data.schema["door"]) == "Boolean"
    assert data.height == 21 and data["humidity"].max() == 59.5
    q = store.read("readings__quarantine")
    assert q["reason"].to_list() == ["humidity: type float (inferred)"]
    pinned = load_schema(meta, "readings")
    assert pinned is not None and pinned.columns["humidity"].type == "float"
    meta.dispose()


def test_a_message_paho_refused_reads_as_not_published():
    """A publish refused while the connection was lost: paho's is_published raises for it, and the
    simulator reads it as not acknowledged (it publishes it again) instead of failing."""
    import paho.mqtt.client as mqtt

    from headrace.stream.simulator import _published

    refused = mqtt.MQTTMessageInfo(7)
    refused.rc = mqtt.MQTT_ERR_NO_CONN
    with pytest.raises(RuntimeError):
        refused.is_published()
    assert _published(refused) is False
    sent = mqtt.MQTTMessageInfo(8)
    sent._set_as_published()
    assert _published(sent) is True
