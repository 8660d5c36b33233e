"""How messages become InfluxDB points: measurements, tags, fields and time.

Tags are only the low-cardinality identity of a series (site, device, the
terminal's acquirer, a device state, an alert's type...). Transaction ids,
card tokens, amounts and codes are fields: one series per device keeps the
series count proportional to the fleet, whatever the traffic.

Point identity (see docs/wire.md): InfluxDB keys a point by measurement, tag
set and timestamp, and silently overwrites on a match. A device's events all
share one series, so the timestamp carries the identity: event time truncated
to the millisecond, plus the device's sequence number modulo 1,000,000 in the
sub-millisecond digits (`point_time_ns`). A redelivered event (same device,
same seq, same ts) lands on the same point; two distinct events of a device
would need the same millisecond *and* sequence numbers 1,000,000 apart to
collide, i.e. a million events within one millisecond of the device's clock.
Booleans that dashboards aggregate are written as integers 0/1, because
InfluxQL cannot take the mean or sum of a boolean field.
"""

from __future__ import annotations

import enum
from typing import Final, NamedTuple

from wire.lineproto import FieldValue, encode_point
from wire.messages import (
    Alert,
    DeviceState,
    HostHealth,
    Message,
    PaymentTransaction,
    SensorReading,
    TerminalStatus,
)

NS_PER_MS: Final = 1_000_000
SEQ_SLOTS_PER_MS: Final = 1_000_000


class Measurement(enum.StrEnum):
    PAYMENT = "payment"
    TERMINAL_STATUS = "terminal_status"
    SENSOR = "sensor"
    HOST_HEALTH = "host_health"
    DEVICE_STATE = "device_state"
    ANOMALY = "anomaly"


class Point(NamedTuple):
    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int

    def to_line(self) -> str:
        return encode_point(self.measurement, self.tags, self.fields, self.time_ns)


def point_time_ns(ts_ns: int, seq: int) -> int:
    """The point timestamp of a device's event: ms-truncated event time + seq slot."""
    return ts_ns - ts_ns % NS_PER_MS + seq % SEQ_SLOTS_PER_MS


def to_point(message: Message) -> Point:
    match message:
        case PaymentTransaction():
            return _payment(message)
        case TerminalStatus():
            return _status(message)
        case SensorReading():
            return _sensor(message)
        case HostHealth():
            return _health(message)
        case DeviceState():
            return _state(message)
        case Alert():
            return _alert(message)


def to_line(message: Message) -> str:
    return to_point(message).to_line()


def _payment(m: PaymentTransaction) -> Point:
    return Point(
        Measurement.PAYMENT,
        {"site": m.site, "device": m.device, "acquirer": m.acquirer},
        {
            "seq": m.seq,
            "txn_id": m.txn_id,
            "card_token": m.card_token,
            "amount_minor": m.amount_minor,
            "currency": m.currency,
            "method": m.method.value,
            "mcc": m.mcc,
            "response_code": m.response_code,
            "approved": int(m.approved),
            "auth_latency_ms": float(m.auth_latency_ms),
            "offline": int(m.offline),
        },
        point_time_ns(m.ts, m.seq),
    )


def _status(m: TerminalStatus) -> Point:
    return Point(
        Measurement.TERMINAL_STATUS,
        {"site": m.site, "device": m.device},
        {
            "seq": m.seq,
            "battery_pct": float(m.battery_pct),
            "charging": int(m.charging),
            "paper_pct": float(m.paper_pct),
            "signal_dbm": m.signal_dbm,
            "temperature_c": float(m.temperature_c),
            "tamper": int(m.tamper),
            "firmware": m.firmware,
            "offline_queue": m.offline_queue,
            "uptime_s": m.uptime_s,
        },
        point_time_ns(m.ts, m.seq),
    )


def _sensor(m: SensorReading) -> Point:
    return Point(
        Measurement.SENSOR,
        {"site": m.site, "device": m.device},
        {
            "seq": m.seq,
            "temperature_c": float(m.temperature_c),
            "humidity_pct": float(m.humidity_pct),
            "door_open": int(m.door_open),
            "mains_power": int(m.mains_power),
        },
        point_time_ns(m.ts, m.seq),
    )


def _health(m: HostHealth) -> Point:
    fields: dict[str, FieldValue] = {
        "seq": m.seq,
        "load1": float(m.load1),
        "mem_used_pct": float(m.mem_used_pct),
        "disk_used_pct": float(m.disk_used_pct),
        "clock_synced": int(m.clock_synced),
        "outbox_depth": m.outbox_depth,
        "outbox_dropped": m.outbox_dropped,
    }
    if m.cpu_temp_c is not None:
        fields["cpu_temp_c"] = float(m.cpu_temp_c)
    return Point(
        Measurement.HOST_HEALTH,
        {"site": m.site, "device": m.device},
        fields,
        point_time_ns(m.ts, m.seq),
    )


def _state(m: DeviceState) -> Point:
    # The state is a tag: the "online" message and the last will registered at
    # the same connect share a timestamp, and must not overwrite each other.
    return Point(
        Measurement.DEVICE_STATE,
        {"site": m.site, "device": m.device, "state": "online" if m.online else "offline"},
        {"online": int(m.online), "reason": m.reason.value},
        m.ts,
    )


def _alert(m: Alert) -> Point:
    return Point(
        Measurement.ANOMALY,
        {
            "type": m.type,
            "severity": m.severity.value,
            "status": m.status.value,
            "detector": m.detector,
            "site": m.site or "",
            "device": m.device or "",
        },
        {"alert_id": m.alert_id, "score": float(m.score), "summary": m.summary},
        m.ts,
    )
