"""The gateway's config file (TOML), validated at start.

    [gateway]
    id = "gw1"                       # the `gateway` tag, MQTT client id, dead-letter topic
    state_dir = "/var/lib/tillpulse-gateway"   # spool/ and deadletters/ below it

    [mqtt]
    host = "broker.example.net"
    port = 8883
    username = "gw1"
    password_file = "/etc/tillpulse/mqtt-password"   # or env TILLPULSE_MQTT_PASSWORD
    shared_group = "gateways"        # $share/gateways/tp/v1/dev/+/+/+ ; omit for one gateway
    session_expiry_s = 604800
    receive_maximum = 1000           # MQTT v5 flow control: unacked inbound QoS 1 at most
    keepalive_s = 30
    [mqtt.tls]
    ca_file = "/etc/tillpulse/ca.pem"

    [influxdb]
    dialect = "v2"                   # "v2" (token/org/bucket) or "v1" (/write?db=&rp=)
    url = "http://influxdb:8086"
    org = "tillpulse"
    bucket = "tillpulse"
    token_file = "/etc/tillpulse/influx-token"       # or env TILLPULSE_INFLUX_TOKEN

    [timestamps]
    max_event_age = "30d"            # older event times are rejected (dead letters)
    max_future_skew = "1h"           # and so are times further ahead of the gateway's clock

    [spool]  [forwarder]  [aggregates]  [dedup]  [gaps]  [deadletters]  [http]

See gateway/deploy/gateway.example.toml for every key with its default. Any key
can be overridden from the environment, e.g. ``TILLPULSE_GATEWAY__MQTT__HOST``
(see runtime.config). Keys a dialect needs are checked when the file is
loaded, with an error naming the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from runtime.config import load_config
from runtime.config_sections import (
    INFLUX_PASSWORD_ENV,
    INFLUX_TOKEN_ENV,
    MQTT_PASSWORD_ENV,
    InfluxSection,
    MqttSection,
    Section,
)
from runtime.durations import parse_duration
from runtime.preflight import check_dir, check_secret, check_tls_files
from wire.messages import Id

Positive = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]


class GatewaySection(Section, kw_only=True, frozen=True):
    id: Id
    state_dir: str = "/var/lib/tillpulse-gateway"


class GatewayMqttSection(MqttSection, kw_only=True, frozen=True):
    shared_group: Id | None = None  # MQTT v5 shared subscription; None: a plain subscription
    receive_maximum: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1000


class TimestampsSection(Section, kw_only=True, frozen=True):
    """The event times the gateway accepts: ``[now - max_event_age, now + max_future_skew]``
    on its own clock; others are rejected (docs/wire.md, "Plausible time")."""

    # An edge outbox replays what it held through an outage: days old is normal.
    max_event_age: str = "30d"
    # An hour: a clock minutes ahead still reaches the cloud, which raises it as clock_skew
    # (a device that looked silent would be a wrong diagnosis); its payments beyond
    # aggregates.future_tolerance_s (300 s) are stored but kept out of the aggregates.
    max_future_skew: str = "1h"

    def __post_init__(self) -> None:
        for key in ("max_event_age", "max_future_skew"):
            try:
                ns = parse_duration(getattr(self, key))
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
            if ns <= 0:
                raise ValueError(f"{key}: must be longer than 0")

    @property
    def max_event_age_ns(self) -> int:
        return parse_duration(self.max_event_age)

    @property
    def max_future_skew_ns(self) -> int:
        return parse_duration(self.max_future_skew)


class SpoolSection(Section, kw_only=True, frozen=True):
    max_bytes: Annotated[int, msgspec.Meta(ge=1 << 20)] = 1 << 30
    segment_bytes: Annotated[int, msgspec.Meta(ge=64 << 10)] = 64 << 20
    # "always": fsync every append before the MQTT messages behind it are acked;
    # "interval": at most every fsync_interval_s (power loss may lose acked messages).
    fsync: Literal["always", "interval"] = "always"
    fsync_interval_s: Seconds = 1.0

    def __post_init__(self) -> None:
        if self.segment_bytes > self.max_bytes:
            raise ValueError("segment_bytes: must not exceed max_bytes")


class ForwarderSection(Section, kw_only=True, frozen=True):
    # 2,000 lines: influxd 1.6 stores such a batch in ~0.1-0.35 s under load; batches of
    # 5,000 took twice as long and doubled the p99 publish -> queryable at half the
    # saturated rate (BENCHMARKS.md "Gateway throughput", 2026-12-06, evening)
    batch_lines: Positive = 2_000
    batch_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 4 << 20
    linger_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 100


class AggregatesSection(Section, kw_only=True, frozen=True):
    window_s: Annotated[int, msgspec.Meta(ge=1, le=86_400)] = 60
    allowed_lateness_s: Annotated[int, msgspec.Meta(ge=0)] = 120
    future_tolerance_s: Annotated[int, msgspec.Meta(ge=0)] = 300  # beyond: counted as future
    max_open_windows: Positive = 16  # distinct window starts open at once
    max_open_keys: Positive = 500_000  # (window, terminal) accumulators, ~330 bytes each
    max_open_values: Positive = 4_000_000  # latencies stored for the percentiles (8 bytes each)


class DedupSection(Section, kw_only=True, frozen=True):
    max_entries: Positive = 200_000  # about 230 bytes each


class GapsSection(Section, kw_only=True, frozen=True):
    # Off when a shared subscription splits each device's messages round robin:
    # every gateway would then see the others' share of a device as gaps.
    enabled: bool = True
    window: Positive = 4096  # missing seqs remembered below a stream's highest
    # (site, device, stream) counters followed: a terminal has two (payment, status)
    max_devices: Positive = 400_000


class DeadLettersSection(Section, kw_only=True, frozen=True):
    max_bytes: Annotated[int, msgspec.Meta(ge=64 << 10)] = 64 << 20


class HttpSection(Section, kw_only=True, frozen=True):
    listen: Annotated[str, msgspec.Meta(pattern=r"\A\S+:[0-9]{1,5}\Z")] = "127.0.0.1:9464"

    def __post_init__(self) -> None:
        if int(self.listen.rpartition(":")[2]) > 65535:
            raise ValueError(f"listen: {self.listen!r}: the port must be 0-65535")

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) to bind; brackets around an IPv6 host are removed."""
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class GatewayConfig(Section, kw_only=True, frozen=True):
    gateway: GatewaySection
    mqtt: GatewayMqttSection
    influxdb: InfluxSection
    timestamps: TimestampsSection = TimestampsSection()
    spool: SpoolSection = SpoolSection()
    forwarder: ForwarderSection = ForwarderSection()
    aggregates: AggregatesSection = AggregatesSection()
    dedup: DedupSection = DedupSection()
    gaps: GapsSection = GapsSection()
    deadletters: DeadLettersSection = DeadLettersSection()
    http: HttpSection = HttpSection()

    @property
    def spool_dir(self) -> Path:
        return Path(self.gateway.state_dir) / "spool"

    @property
    def deadletters_dir(self) -> Path:
        return Path(self.gateway.state_dir) / "deadletters"


def load_gateway_config(path: str | Path) -> GatewayConfig:
    return load_config(path, GatewayConfig, "gateway")


def load_checked(path: str | Path, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """The config, and what `run` needs of the machine before it starts: the state
    directory writable (created if missing, as the spool would), the secrets and TLS
    files readable. `run` and `check-config` both start here, so they agree.
    Raises `OperatorError` naming the key, the file and the fix."""
    config = load_gateway_config(path)
    env = dict(os.environ if environ is None else environ)
    check_dir(config.gateway.state_dir, "[gateway] state_dir", path)
    mqtt = config.mqtt
    if mqtt.username is not None:
        check_secret(mqtt.password_file, MQTT_PASSWORD_ENV, "[mqtt] password_file", path, env)
    check_tls_files(mqtt.tls, path)
    influx = config.influxdb
    if influx.dialect == "v2":
        check_secret(influx.token_file, INFLUX_TOKEN_ENV, "[influxdb] token_file", path, env)
    elif influx.username is not None:
        key = "[influxdb] password_file"
        check_secret(influx.password_file, INFLUX_PASSWORD_ENV, key, path, env)
    return config
