"""Message schemas: what devices, agents and cloud jobs put on MQTT.

Every message is a msgspec Struct encoded as JSON. The ``schema`` field names
the message type and its version ("payment/1"); it is required on decode, so a
payload of another type or version is refused with an error that says so.
Decoding is strict: unknown fields, wrong types and out-of-range values are
errors that name the field, and a payload carrying anything shaped like a card
number (see wire.pci) is refused.

Units are in the field names (``_ms``, ``_pct``, ``_c``, ``_dbm``, ``_s``);
``ts`` is event time in nanoseconds since the Unix epoch, UTC; ``seq`` is the
per-device sequence number (gap detection and point identity, see
wire.points); amounts are integers in the currency's minor unit.
"""

from __future__ import annotations

import enum
import importlib
import math
from typing import Annotated, Any, Final, TypeVar

import msgspec

from wire import pci
from wire.errors import MessageDecodeError, PanDetectedError, TopicError
from wire.topics import ID_PATTERN, DeviceTopic, Stream

MAX_PAYLOAD_BYTES: Final = 16 * 1024

Id = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
# InfluxDB refuses the int64 extremes as point times (its range ends at 2**63 - 2),
# and a point's time puts the seq in the sub-millisecond digits (wire.points): the
# last millisecond whose every slot fits is the limit (year 2262).
MAX_NANOS: Final = 9_223_372_036_853_999_999
Nanos = Annotated[int, msgspec.Meta(ge=0, le=MAX_NANOS)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Percent = Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]
Celsius = Annotated[float, msgspec.Meta(ge=-80.0, le=200.0)]
Count = Annotated[int, msgspec.Meta(ge=0, lt=2**31)]


class PaymentMethod(enum.StrEnum):
    CHIP = "chip"
    CONTACTLESS = "contactless"
    SWIPE = "swipe"
    MANUAL = "manual"
    WALLET = "wallet"


class StateReason(enum.StrEnum):
    CONNECTED = "connected"  # published by the agent right after CONNACK
    LAST_WILL = "last-will"  # published by the broker when the agent vanished
    SHUTDOWN = "shutdown"  # published by the agent on a clean stop


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertStatus(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class WireStruct(
    msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, tag_field="schema"
):
    """Base of every message: strict, immutable, tagged with its schema and version."""


class _Message(WireStruct, kw_only=True, frozen=True):
    """Fields every device message carries."""

    site: Id
    device: Id
    ts: Nanos


class _SequencedMessage(_Message, kw_only=True, frozen=True):
    seq: Seq


class PaymentTransaction(_SequencedMessage, kw_only=True, frozen=True, tag="payment/1"):
    """One authorisation attempt at a terminal, approved or declined."""

    txn_id: Annotated[str, msgspec.Meta(pattern=r"\A[A-Za-z0-9_.:-]{1,64}\Z")]
    card_token: Annotated[str, msgspec.Meta(pattern=pci.TOKEN_PATTERN)]
    amount_minor: Annotated[int, msgspec.Meta(ge=0, le=10**10)]
    currency: Annotated[str, msgspec.Meta(pattern=r"\A[A-Z]{3}\Z")]
    method: PaymentMethod
    acquirer: Id
    mcc: Annotated[str, msgspec.Meta(pattern=r"\A[0-9]{4}\Z")]  # merchant category code
    response_code: Annotated[str, msgspec.Meta(pattern=r"\A[0-9A-Z]{2}\Z")]  # ISO 8583 field 39
    approved: bool
    auth_latency_ms: Annotated[float, msgspec.Meta(ge=0.0, le=600_000.0)]
    offline: bool = False  # authorised offline and forwarded later by the terminal


class TerminalStatus(_SequencedMessage, kw_only=True, frozen=True, tag="status/1"):
    """A POS terminal's periodic heartbeat."""

    battery_pct: Percent
    charging: bool
    paper_pct: Percent
    signal_dbm: Annotated[int, msgspec.Meta(ge=-150, le=0)]
    temperature_c: Celsius
    tamper: bool
    firmware: Annotated[str, msgspec.Meta(pattern=r"\A[A-Za-z0-9_.+-]{1,32}\Z")]
    offline_queue: Count  # transactions stored on the terminal, not yet forwarded
    uptime_s: Annotated[int, msgspec.Meta(ge=0, lt=2**40)]


class SensorReading(_SequencedMessage, kw_only=True, frozen=True, tag="sensor/1"):
    """An environmental sensor next to the terminals."""

    temperature_c: Celsius
    humidity_pct: Percent
    door_open: bool
    mains_power: bool


class HostHealth(_SequencedMessage, kw_only=True, frozen=True, tag="health/1"):
    """The edge agent's own host (a Raspberry Pi) and its outbox."""

    cpu_temp_c: Celsius | None
    load1: Annotated[float, msgspec.Meta(ge=0.0, le=10_000.0)]
    mem_used_pct: Percent
    disk_used_pct: Percent
    clock_synced: bool
    outbox_depth: Count
    outbox_dropped: Count  # low-priority samples dropped since the agent started


class DeviceState(_Message, kw_only=True, frozen=True, tag="state/1"):
    """Online/offline, retained; the offline message is the agent's MQTT last will."""

    online: bool
    reason: StateReason


class Alert(WireStruct, kw_only=True, frozen=True, tag="alert/1"):
    """An anomaly raised (or resolved) by the cloud jobs."""

    alert_id: Annotated[str, msgspec.Meta(pattern=r"\A[A-Za-z0-9_.:-]{1,128}\Z")]
    ts: Nanos
    type: Id
    severity: Severity
    status: AlertStatus
    site: Id | None = None  # None: fleet-wide (an acquirer outage, say)
    device: Id | None = None  # None: the whole site, acquirer or fleet
    acquirer: Id | None = None  # set when the acquirer is the subject or the root cause
    score: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    detector: Id
    summary: Annotated[str, msgspec.Meta(max_length=2000)]


class LinkAck(WireStruct, kw_only=True, frozen=True, tag="ack/1"):
    """Serial link only, agent -> device: the message ``seq`` is durable in the outbox.

    The device keeps each payment until it is acknowledged and sends it again
    otherwise (see docs/wire.md, "Serial link"); samples are never re-sent.
    """

    device: Id
    seq: Seq


DeviceMessage = PaymentTransaction | TerminalStatus | SensorReading | HostHealth | DeviceState
Message = DeviceMessage | Alert

MESSAGE_FOR_STREAM: Final[dict[Stream, type[DeviceMessage]]] = {
    Stream.PAYMENT: PaymentTransaction,
    Stream.STATUS: TerminalStatus,
    Stream.SENSOR: SensorReading,
    Stream.HEALTH: HostHealth,
    Stream.STATE: DeviceState,
}
STREAM_FOR_MESSAGE: Final[dict[type[DeviceMessage], Stream]] = {
    cls: stream for stream, cls in MESSAGE_FOR_STREAM.items()
}

_encoder = msgspec.json.Encoder()
_any_decoder = msgspec.json.Decoder(Message)
_typed_decoders: dict[type[WireStruct], msgspec.json.Decoder[Any]] = {}

M = TypeVar("M", bound=WireStruct)


def encode(message: WireStruct) -> bytes:
    """JSON bytes for ``message`` (the ``schema`` tag included)."""
    return _encoder.encode(message)


def decode(data: bytes) -> Message:
    """Decode and validate a payload of any message type."""
    message: Message = _checked_decode(_any_decoder, data)
    return message


def decode_as(data: bytes, expected: type[M]) -> M:
    """Decode and validate a payload that must be of type ``expected``."""
    message: M = _checked_decode(_decoder_for(expected), data)
    return message


def _checked_decode(decoder: msgspec.json.Decoder[Any], data: bytes) -> Any:
    """Decode, validate and PCI-check; raise MessageDecodeError naming the bad field."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise MessageDecodeError(
            f"payload of {len(data)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit"
        )
    try:
        message = decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise MessageDecodeError(str(exc)) from None
    _refuse_card_numbers(message)
    return message


def decode_device_message(topic: DeviceTopic, data: bytes) -> DeviceMessage:
    """Decode a payload received on ``topic``; its type and ids must match the topic."""
    message: DeviceMessage = _checked_decode(_decoder_for(MESSAGE_FOR_STREAM[topic.stream]), data)
    if message.site != topic.site or message.device != topic.device:
        raise TopicError(
            f"payload ids site={message.site!r} device={message.device!r} do not match "
            f"the topic's site={topic.site!r} device={topic.device!r}"
        )
    return message


def _decoder_for(cls: type[WireStruct]) -> msgspec.json.Decoder[Any]:
    decoder = _typed_decoders.get(cls)
    if decoder is None:
        decoder = _typed_decoders[cls] = msgspec.json.Decoder(cls)
    return decoder


def _refuse_card_numbers(message: WireStruct) -> None:
    names = _pan_scan_fields.get(type(message))
    if names is None:
        names = _pan_scan_fields[type(message)] = _fields_that_may_hold_a_pan(type(message))
    values = [getattr(message, name) for name in names]
    # One scan of all candidate strings: a digit run (digits joined by single
    # spaces or dashes) cannot cross the newline, so this finds exactly what
    # scanning each field on its own finds. Only then look for the field.
    if not pci.contains_pan("\n".join(v for v in values if isinstance(v, str))):
        return
    for name, value in zip(names, values, strict=True):
        if isinstance(value, str) and pci.contains_pan(value):
            raise PanDetectedError(
                f"field `{name}` holds a card-number-like digit run; payload refused "
                "(card data travels only as a card_token)"
            )


_pan_scan_fields: dict[type[WireStruct], tuple[str, ...]] = {}


def _fields_that_may_hold_a_pan(cls: type[WireStruct]) -> tuple[str, ...]:
    """The fields of ``cls`` whose decoded value could hold a PAN-like digit run.

    Left out only what validation already rules out: non-string types, enums and
    literals none of whose values holds one, and strings whose msgspec pattern is
    anchored (``\\A...\\Z``) and matches at most PAN_MIN_DIGITS - 1 characters
    (currency, mcc, response_code) or whose max_length is that short. Anything
    else, or any doubt, is scanned.
    """
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    return tuple(field.name for field in info.fields if _may_hold_a_pan(field.type))


def _may_hold_a_pan(kind: msgspec.inspect.Type) -> bool:
    if isinstance(kind, msgspec.inspect.UnionType):
        return any(_may_hold_a_pan(member) for member in kind.types)
    if isinstance(kind, msgspec.inspect.EnumType | msgspec.inspect.LiteralType):
        values = (
            [m.value for m in kind.cls]
            if isinstance(kind, msgspec.inspect.EnumType)
            else kind.values
        )
        return any(
            not isinstance(v, int | bool) and (not isinstance(v, str) or pci.contains_pan(v))
            for v in values
        )
    if isinstance(kind, msgspec.inspect.StrType):
        if kind.max_length is not None and kind.max_length < pci.PAN_MIN_DIGITS:
            return False
        return kind.pattern is None or _pattern_max_width(kind.pattern) >= pci.PAN_MIN_DIGITS
    return not isinstance(
        kind,
        msgspec.inspect.IntType
        | msgspec.inspect.FloatType
        | msgspec.inspect.BoolType
        | msgspec.inspect.NoneType,
    )


def _pattern_max_width(pattern: str) -> float:
    """Longest string a ``\\A...\\Z``-anchored pattern matches; infinity otherwise or on doubt."""
    try:
        # CPython's own regex parser (private, no stubs): used once per message type
        sre = importlib.import_module("re._constants")
        parsed = importlib.import_module("re._parser").parse(pattern)
        items = list(parsed)
        anchored = (
            len(items) >= 2
            and items[0] == (sre.AT, sre.AT_BEGINNING_STRING)
            and items[-1] == (sre.AT, sre.AT_END_STRING)
        )
        if not anchored:
            return math.inf
        return float(parsed.getwidth()[1])
    except Exception:  # noqa: BLE001 - any doubt: scan the field
        return math.inf
