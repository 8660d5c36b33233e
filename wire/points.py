"""How messages become InfluxDB points: measurements, tags, fields and time.

Tags are only the low-cardinality identity of a series (site, device, the
terminal's acquirer, a device state, an alert's type...). Transaction ids,
card tokens, amounts and codes are fields: one series per device keeps the
series count proportional to the fleet, whatever the traffic.

Point identity: InfluxDB keys a point by measurement, tag set and timestamp,
and silently overwrites on a match. A device's events share one series, so
the timestamp carries the identity: event time truncated to the millisecond,
plus the device's sequence number modulo 1,000,000 in the sub-millisecond
digits (`point_time_ns`). A redelivered event (same device, stream, seq and ts) lands
on the same point; two distinct events of a device would need the same
millisecond *and* sequence numbers 1,000,000 apart to collide: a million
events within one millisecond of the device's clock, even a stopped one.

Booleans that dashboards aggregate are written as integers 0/1, because
InfluxQL cannot take the mean or sum of a boolean field.

The high-rate messages are formatted with one f-string each (about 2.5x faster
than building a dict for `encode_point`, see bench/lineproto.py). `to_line`
sends every value through the escaping and checking of wire.lineproto. A
message that a wire.messages decoder returned has passed its schema already
(ids and codes made of characters that need no escaping, numbers within int64
and finite), so `decoded_to_line`, the gateway's path, writes its values as
they are, with the same f-string: about 2.5x cheaper, and the same line
(tests/wire/test_points.py).
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from wire.lineproto import FieldValue, encode_point, float_field, int_digits, string_content
from wire.lineproto import tag_value as tag
from wire.messages import (
    Alert,
    DeviceState,
    HostHealth,
    Message,
    PaymentTransaction,
    SensorReading,
    TerminalStatus,
)
from wire.timestamps import NS_PER_MS

SEQ_SLOTS_PER_MS: Final = 1_000_000


class Measurement(enum.StrEnum):
    PAYMENT = "payment"
    TERMINAL_STATUS = "terminal_status"
    SENSOR = "sensor"
    HOST_HEALTH = "host_health"
    DEVICE_STATE = "device_state"
    ANOMALY = "anomaly"


def point_time_ns(ts_ns: int, seq: int) -> int:
    """The point timestamp of a device's event: ms-truncated event time + seq slot."""
    return ts_ns - ts_ns % NS_PER_MS + seq % SEQ_SLOTS_PER_MS


class _Values(NamedTuple):
    """How a line writes each kind of value: wire.lineproto's text, without quotes or ``i``."""

    tag: Callable[[str], str]
    string: Callable[[str], str]
    integer: Callable[[int], str]
    real: Callable[[float], str]


_CHECKED: Final = _Values(tag, string_content, int_digits, float_field)
# What the checked functions return for values a decoder let through (floats are
# floats then: msgspec widens an integer in a float field).
_AS_THEY_ARE: Final = _Values(str, str, str, repr)


def to_line(message: Message) -> str:
    """The line-protocol line (no trailing newline) that stores ``message``."""
    return _LINES[type(message)](message, _CHECKED)


def decoded_to_line(message: Message) -> str:
    """`to_line` of a message a wire.messages decoder returned, values unchecked.

    Only for decoded messages: one built in code skipped the schema's validation.
    """
    return _LINES[type(message)](message, _AS_THEY_ARE)


def _flag(value: bool) -> str:
    return "1i" if value else "0i"


def _payment(m: PaymentTransaction, values: _Values) -> str:
    tag, string, integer, real = values
    return (
        f"payment,acquirer={tag(m.acquirer)},device={tag(m.device)},site={tag(m.site)}"
        f" seq={integer(m.seq)}i"
        f',txn_id="{string(m.txn_id)}"'
        f',card_token="{string(m.card_token)}"'
        f",amount_minor={integer(m.amount_minor)}i"
        f',currency="{string(m.currency)}"'
        f',method="{string(m.method)}"'
        f',mcc="{string(m.mcc)}"'
        f',response_code="{string(m.response_code)}"'
        f",approved={_flag(m.approved)}"
        f",auth_latency_ms={real(m.auth_latency_ms)}"
        f",offline={_flag(m.offline)}"
        f" {point_time_ns(m.ts, m.seq)}"
    )


def _status(m: TerminalStatus, values: _Values) -> str:
    tag, string, integer, real = values
    return (
        f"terminal_status,device={tag(m.device)},site={tag(m.site)}"
        f" seq={integer(m.seq)}i"
        f",battery_pct={real(m.battery_pct)}"
        f",charging={_flag(m.charging)}"
        f",paper_pct={real(m.paper_pct)}"
        f",signal_dbm={integer(m.signal_dbm)}i"
        f",temperature_c={real(m.temperature_c)}"
        f",tamper={_flag(m.tamper)}"
        f',firmware="{string(m.firmware)}"'
        f",offline_queue={integer(m.offline_queue)}i"
        f",uptime_s={integer(m.uptime_s)}i"
        f" {point_time_ns(m.ts, m.seq)}"
    )


def _sensor(m: SensorReading, values: _Values) -> str:
    tag, _, integer, real = values
    return (
        f"sensor,device={tag(m.device)},site={tag(m.site)}"
        f" seq={integer(m.seq)}i"
        f",temperature_c={real(m.temperature_c)}"
        f",humidity_pct={real(m.humidity_pct)}"
        f",door_open={_flag(m.door_open)}"
        f",mains_power={_flag(m.mains_power)}"
        f" {point_time_ns(m.ts, m.seq)}"
    )


def _health(m: HostHealth, _: _Values) -> str:
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
    return encode_point(
        Measurement.HOST_HEALTH,
        {"site": m.site, "device": m.device},
        fields,
        point_time_ns(m.ts, m.seq),
    )


def _state(m: DeviceState, values: _Values) -> str:
    # The state is a tag: the "online" message and the last will registered at
    # the same connect share a timestamp, and must not overwrite each other.
    tag, string, _, _ = values
    state = "online" if m.online else "offline"
    return (
        f"device_state,device={tag(m.device)},site={tag(m.site)},state={state}"
        f' online={_flag(m.online)},reason="{string(m.reason)}" {m.ts}'
    )


def _alert(m: Alert, _: _Values) -> str:
    return encode_point(
        Measurement.ANOMALY,
        {
            "type": m.type,
            "severity": m.severity.value,
            "status": m.status.value,
            "detector": m.detector,
            "site": m.site or "",
            "device": m.device or "",
            "acquirer": m.acquirer or "",
        },
        {"alert_id": m.alert_id, "score": float(m.score), "summary": m.summary},
        # two alerts of one type and subject tags at one instant (two cards' velocity)
        # must not overwrite each other: the alert id picks the sub-millisecond slot
        m.ts - m.ts % NS_PER_MS + zlib.crc32(m.alert_id.encode()) % SEQ_SLOTS_PER_MS,
    )


_LINES: Final[dict[type[Message], Callable[[Any, _Values], str]]] = {
    PaymentTransaction: _payment,
    TerminalStatus: _status,
    SensorReading: _sensor,
    HostHealth: _health,
    DeviceState: _state,
    Alert: _alert,
}
