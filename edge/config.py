"""The edge agent's config file (TOML), validated at start.

    [agent]
    site = "s0042"
    device = "s0042-pi1"           # the agent id: MQTT username, client id, HostHealth device
    state_dir = "/var/lib/tillpulse"

    [mqtt]
    host = "broker.example.net"
    port = 8883
    username = "s0042-pi1"
    password_file = "/etc/tillpulse/mqtt-password"   # or env TILLPULSE_MQTT_PASSWORD
    [mqtt.tls]
    ca_file = "/etc/tillpulse/ca.pem"
    cert_file = "/etc/tillpulse/client.pem"          # mutual TLS (optional)
    key_file = "/etc/tillpulse/client.key"

    [outbox]
    max_bytes = 67108864
    low_priority_ttl_s = 86400

    [[serial]]
    port = "/dev/ttyUSB0"
    baudrate = 115200

    [health]
    interval_s = 60

Any key can be overridden from the environment, e.g.
``TILLPULSE_EDGE__MQTT__HOST=10.0.0.5`` (see runtime.config).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import msgspec

from runtime.cli import OperatorError
from runtime.config import load_config
from runtime.config_sections import MQTT_PASSWORD_ENV, MqttSection, Seconds, Section
from runtime.preflight import check_dir, check_secret, check_tls_files
from wire.messages import Id


class AgentSection(Section, kw_only=True, frozen=True):
    site: Id
    device: Id
    state_dir: str = "/var/lib/tillpulse"


class EdgeMqttSection(MqttSection, kw_only=True, frozen=True):
    # The bounded in-flight window: at most this many QoS 1 publishes unacknowledged.
    inflight_window: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 100


class OutboxSection(Section, kw_only=True, frozen=True):
    max_bytes: Annotated[int, msgspec.Meta(ge=1 << 20)] = 64 << 20
    low_priority_ttl_s: Seconds = 24 * 3600


class SerialSection(Section, kw_only=True, frozen=True):
    port: str
    baudrate: Annotated[int, msgspec.Meta(ge=1200)] = 115200


class HealthSection(Section, kw_only=True, frozen=True):
    interval_s: Seconds = 60.0


class EdgeConfig(Section, kw_only=True, frozen=True):
    agent: AgentSection
    mqtt: EdgeMqttSection
    outbox: OutboxSection = OutboxSection()
    serial: list[SerialSection] = msgspec.field(default_factory=list)
    health: HealthSection = HealthSection()

    def __post_init__(self) -> None:
        ports = [section.port for section in self.serial]
        for port in ports:
            if ports.count(port) > 1:  # two readers of one tty each get half its bytes
                raise ValueError(f"serial: port {port} is listed twice: remove one [[serial]]")

    @property
    def outbox_path(self) -> Path:
        return Path(self.agent.state_dir) / "outbox.sqlite3"


def load_edge_config(path: str | Path) -> EdgeConfig:
    return load_config(path, EdgeConfig, "edge")


def check_edge_config(
    config: EdgeConfig, source: str | Path, environ: Mapping[str, str] | None = None
) -> None:
    """What ``edge run`` needs before it starts, checked by ``run`` and ``check-config``
    alike: a serial port to read, a writable state dir (created), the broker's
    password and TLS files. Raises `OperatorError` naming the key and the fix."""
    if not config.serial:
        raise OperatorError(
            f"no [[serial]] port in {source}: add one per device the agent reads, "
            '[[serial]] port = "/dev/ttyUSB0" (see tillpulse edge sample-config)'
        )
    for index, section in enumerate(config.serial):
        _check_tty(section.port, f"[[serial]] #{index + 1} port", source)
    check_dir(config.agent.state_dir, "[agent] state_dir", source)
    if config.mqtt.username is not None:
        check_secret(
            config.mqtt.password_file,
            MQTT_PASSWORD_ENV,
            "[mqtt] password_file",
            source,
            os.environ if environ is None else environ,
        )
    check_tls_files(config.mqtt.tls, source)


def _check_tty(port: str, key: str, source: str | Path) -> None:
    """A port that exists must be a terminal device (a missing one may be unplugged:
    the agent waits for it)."""
    try:
        mode = os.stat(port).st_mode
    except OSError:
        return
    if not stat.S_ISCHR(mode):
        raise OperatorError(
            f"{key} {port} (in {source}): is not a serial device (a tty): name the "
            "device, e.g. /dev/serial/by-id/... or /dev/ttyUSB0"
        )
