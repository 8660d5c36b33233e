"""Message schemas: what devices, agents and cloud jobs put on MQTT.

Every message is a msgspec Struct encoded as JSON. The ``schema`` field names
the message type and its version ("payment/1"); it is required on decode, so a
payload of another type or version is refused with an error that says so.
Decoding is strict: unknown fields, wrong types and out-of-range values are
errors that name the field. Before anything is parsed, a payload over
`MAX_PAYLOAD_BYTES` or nested deeper than `MAX_NESTING` is refused, and so is
one whose raw bytes hold a card number anywhere, in any field, known or not,
string or integer (`wire.pci.payload_contains_pan`; the error never holds the
digits). Decoding raises `MessageDecodeError` (or its `PanDetectedError`) and
nothing else.

Units are in the field names (``_ms``, ``_pct``, ``_c``, ``_dbm``, ``_s``);
``ts`` is event time in nanoseconds since the Unix epoch, UTC; ``seq`` is the
device's sequence number for the message's stream, one counter per (device,
stream) (gap detection, deduplication and point identity, see wire.points);
amounts are integers in the currency's minor unit.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any, Final, TypeVar

import msgspec

from wire import pci
from wire.errors import MessageDecodeError, PanDetectedError, TopicError
from wire.topics import ID_PATTERN, DeviceTopic, Stream

MAX_PAYLOAD_BYTES: Final = 16 * 1024
MAX_NESTING: Final = 32
_BRACKET_OUTSIDE_STRINGS: Final = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_FIELD_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")

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
    """A device message with a ``seq``: one counter per (device, stream), kept across reboots.

    Each stream counts on its own, so a terminal's payment 5 and its status 5 are
    distinct events, and an agent whose id is also its terminal's numbers its
    HostHealth without touching the terminal's counters. An event's identity is
    therefore (site, device, stream, seq).
    """

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


SERIAL_STREAMS: Final = frozenset({Stream.PAYMENT, Stream.STATUS, Stream.SENSOR})
"""The streams a device sends over its serial link, the only ones a `LinkAck` names."""


class LinkAck(WireStruct, kw_only=True, frozen=True, tag="ack/2"):
    """Serial link only, agent -> device: the ``stream`` message ``seq`` is durable in the outbox.

    Sequence numbers count per (device, stream), so the ack names the stream: a
    status ack must never release the payment with the same ``seq``. The device
    keeps each payment until it is acknowledged and sends it again otherwise
    (see docs/wire.md, "Serial link"); samples are never re-sent. (``ack/1``
    had no ``stream``; it is refused.)
    """

    device: Id
    stream: Stream  # one of SERIAL_STREAMS
    seq: Seq

    def __post_init__(self) -> None:
        if self.stream not in SERIAL_STREAMS:  # msgspec reports this as a ValidationError
            allowed = ", ".join(sorted(stream.value for stream in SERIAL_STREAMS))
            raise ValueError(
                f"a LinkAck acknowledges a serial stream ({allowed}), not {self.stream.value!r}"
                " - at `$.stream`"
            )


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
    """Check limits and card numbers, then decode and validate.

    Raises MessageDecodeError naming the bad field (PanDetectedError for a card
    number), and nothing else: the limits are checked before msgspec runs, which
    would otherwise raise RecursionError on deeply nested input.
    """
    if len(data) > MAX_PAYLOAD_BYTES:
        raise MessageDecodeError(
            f"payload of {len(data)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit"
        )
    _refuse_deep_nesting(data)
    if pci.payload_contains_pan(data):
        raise PanDetectedError(
            f"{_where_the_card_number_is(data)} holds a card number; payload refused "
            "(card data travels only as a card_token)"
        )
    try:
        message = decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise MessageDecodeError(str(exc)) from None
    if isinstance(message, _SchemaRequired):
        raise MessageDecodeError(f"Invalid value {message.__struct_config__.tag!r} - at `$.schema`")
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
        decoder = _typed_decoders[cls] = msgspec.json.Decoder(cls | _SchemaRequired)
    return decoder


class _SchemaRequired(WireStruct, kw_only=True, frozen=True, tag="\x00"):
    """Second member of every single-type decoder (never a valid result).

    msgspec treats the tag field of a lone tagged type as optional, so a payload
    without ``schema`` would decode; in a union it must read the tag, and a
    missing one is an error that names the field, as docs/wire.md promises.
    """


def _refuse_deep_nesting(data: bytes) -> None:
    """Raise MessageDecodeError if arrays and objects nest deeper than MAX_NESTING.

    Messages are flat; the limit only has to stay far below the depth (about
    1,000) at which msgspec raises RecursionError. Brackets inside strings do
    not count; an unterminated string's brackets do (refusing is safe).
    """
    if data.count(b"[") + data.count(b"{") <= MAX_NESTING:
        return  # the common case: too few brackets to nest that deep
    depth = 0
    for token in _BRACKET_OUTSIDE_STRINGS.finditer(data):
        if token.group() in (b"[", b"{"):
            depth += 1
            if depth > MAX_NESTING:
                raise MessageDecodeError(
                    f"arrays and objects nest deeper than {MAX_NESTING} levels"
                )
        elif token.group() in (b"]", b"}"):
            depth -= 1


def _where_the_card_number_is(data: bytes) -> str:
    """Which field holds it, for the error text: its name when that is a plain one."""
    try:
        document = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return "the payload"
    if isinstance(document, dict):
        for name, value in document.items():
            if pci.payload_contains_pan(msgspec.json.encode({name: value})):
                plain = _FIELD_NAME.match(name) and not pci.contains_pan(name)
                return f"field `{name}`" if plain else "a field name"
    return "the payload"
