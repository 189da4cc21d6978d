"""``headrace simulate sensors``: publish realistic IoT sensor readings to an MQTT broker."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    pass
from ._app import app, console, emit_json

simulate_app = typer.Typer(
    help="Publish simulated data (for demos, tests and benchmarks).", no_args_is_help=True
)
app.add_typer(simulate_app, name="simulate")


@simulate_app.command("sensors")
def sensors(
    broker: str = typer.Option("mqtt://127.0.0.1:1883", "--broker", help="mqtt://HOST[:PORT] or mqtts://..."),
    topic_prefix: str = typer.Option(
        "sensors", "--topic-prefix", help="topics are PREFIX/<device_id>/telemetry"
    ),
    devices: int = typer.Option(10, "--devices", min=1, help="how many devices"),
    rate: float = typer.Option(
        0.0, "--rate", min=0.0, help="messages per second in all (0: as fast as possible)"
    ),
    count: int = typer.Option(1000, "--count", min=0, help="how many messages"),
    qos: int = typer.Option(1, "--qos", min=0, max=2, help="MQTT QoS 0, 1 or 2"),
    malformed: float = typer.Option(0.0, "--malformed", min=0.0, max=1.0, help="share of malformed payloads"),
    seed: int = typer.Option(0, "--seed", help="random seed (same seed, same readings)"),
    interval: float = typer.Option(60.0, "--interval", min=0.001, help="simulated seconds between readings"),
    protocol: str = typer.Option("5", "--protocol", help="MQTT protocol: 5 or 3.1.1"),
    username: str | None = typer.Option(None, "--username", help="broker user name"),
    password_env: str = typer.Option(
        "MQTT_PASSWORD", "--password-env", help="environment variable holding the password"
    ),
    ca_file: str | None = typer.Option(None, "--ca-file", help="CA certificate (PEM) for mqtts://"),
    cert_file: str | None = typer.Option(None, "--cert-file", help="client certificate for mutual TLS"),
    key_file: str | None = typer.Option(None, "--key-file", help="client key for mutual TLS"),
    json: bool = typer.Option(False, "--json", help="print one JSON document"),
) -> None:
    """Publish COUNT readings from DEVICES devices (temperature, humidity, vibration, battery)."""
    from ..stream.simulator import simulate_sensors

    if protocol not in ("5", "3.1.1"):
        raise typer.BadParameter("must be 5 or 3.1.1", param_hint="--protocol")
    result = simulate_sensors(
        broker,
        topic_prefix,
        devices=devices,
        rate=rate,
        count=count,
        qos=qos,
        malformed=malformed,
        seed=seed,
        interval=interval,
        protocol=protocol,
        username=username,
        password=os.environ.get(password_env) if username else None,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
    )
    if json:
        emit_json(result.to_dict())
        return
    console.print(
        f"published {result.sent} readings ({result.malformed} malformed) from {devices} devices to "
        f"{topic_prefix}/<device>/telemetry in {result.seconds:.2f} s ({result.rate:,.0f}/s)"
        + (f"; reconnected {result.reconnects} time(s)" if result.reconnects else ""),
        soft_wrap=True,
    )
