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
import operator
import re
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Final, NamedTuple, TypeVar

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
    msgspec.Struct,
    kw_only=True,
    frozen=True,
    forbid_unknown_fields=True,
    tag_field="schema",
    gc=False,
):
    """Base of every message: strict, immutable, tagged with its schema and version.

    Fields hold only strings, numbers and enums, so no message can be part of a
    reference cycle: the garbage collector need not track them (``gc=False``; a
    gateway holds and drops tens of thousands a second, and each tracked one
    brings the next collection closer).
    """


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
    _refuse_unsafe(data)
    return _strict_decode(decoder, data)


def _refuse_unsafe(data: bytes) -> None:
    """Raise for a payload too large, nested too deep or holding a card number."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise MessageDecodeError(
            f"payload of {len(data)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit"
        )
    if data.count(b"[") + data.count(b"{") > MAX_NESTING:  # else too few brackets to nest deep
        _refuse_deep_nesting(data)
    if pci.payload_contains_pan(data):
        raise PanDetectedError(
            f"{_where_the_card_number_is(data)} holds a card number; payload refused "
            "(card data travels only as a card_token)"
        )


def _strict_decode(decoder: msgspec.json.Decoder[Any], data: bytes) -> Any:
    try:
        message = decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise MessageDecodeError(str(exc)) from None
    if isinstance(message, _SchemaRequired):
        raise MessageDecodeError(f"Invalid value {message.__struct_config__.tag!r} - at `$.schema`")
    return message


def decode_device_message(topic: DeviceTopic, data: bytes) -> DeviceMessage:
    """Decode a payload received on ``topic``; its type and ids must match the topic.

    The gateway's path: a `_FastDecoder` first, the strict decoder when it is unsure.
    """
    cls = MESSAGE_FOR_STREAM[topic.stream]
    _refuse_unsafe(data)
    fast = _fast_decoder_for(cls)
    message: DeviceMessage | None = None if fast is None else fast.decode(data)
    if message is None:
        message = _strict_decode(_decoder_for(cls), data)
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


_fast_decoders: dict[type[WireStruct], _FastDecoder | None] = {}
# Checking fewer patterns one call each costs less than the copy and the rebuild (measured
# per type with bench.pipeline's mix: a payment has 8, a heartbeat 3).
_FAST_FROM_PATTERNS: Final = 5
# A pattern made of literal letters, digits and "_", and classes of printable ASCII (no
# escapes, no negation), with counts: it never matches a NUL.
_PRINTABLE_PATTERN: Final = re.compile(
    r"\\A(?:\[[ -Z_a-~]+\]|[A-Za-z0-9_]|\{[0-9]+(?:,[0-9]+)?\})+\\Z"
)


class _FastDecoder(NamedTuple):
    """The strict decoder's result at less cost, when that is certain.

    msgspec checks a string field's pattern by calling a regular expression
    (~0.25 us each, 8 of a payment's 15 fields): most of a strict decode. This
    decodes into a copy of the type without those patterns (``lax``), checks
    them all with one expression over the values joined by NUL (``patterns``:
    none matches a NUL, so values cannot trade characters), and builds the
    real message from the values. It returns None, and the strict decoder
    decides with its own error, for anything else, and whenever the strict
    decoder could see what the copy does not. That is a repeated key: the
    strict decoder checks every occurrence, the copy only the last. So the
    payload's count of ``"`` must be ``quotes``, that of each field once: a
    repeated string key adds 4, an escaped quote 1, and only leaving out a
    defaulted field takes any away (2 for a number or a boolean), so a type
    with at most one defaulted field, not a string, cannot hide one
    (`_fast_decoder`). The lax decoder's union with `_SchemaRequired` makes
    ``schema`` required; a payload of that placeholder holds nothing else (4
    quotes, never ``quotes``).
    """

    lax: msgspec.json.Decoder[Any]
    cls: type[WireStruct]
    checked: Callable[[Any], tuple[str, ...]]  # the values of the fields with a pattern
    patterns: re.Pattern[str]
    quotes: int

    def decode(self, data: bytes) -> Any:
        if data.count(b'"') != self.quotes:
            return None
        try:
            lax = self.lax.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        if not self.patterns.match("\x00".join(self.checked(lax))):
            return None
        return self.cls(**msgspec.structs.asdict(lax))


def _fast_decoder_for(cls: type[WireStruct]) -> _FastDecoder | None:
    if cls not in _fast_decoders:
        _fast_decoders[cls] = _fast_decoder(cls)
    return _fast_decoders[cls]


def _fast_decoder(cls: type[WireStruct]) -> _FastDecoder | None:
    """``cls``'s `_FastDecoder`; None if its fields leave any doubt (see there)."""
    fields = msgspec.structs.fields(cls)
    defaulted = [field for field in fields if not field.required]
    if len(defaulted) > 1 or any(_json_string(field.type) is not False for field in defaulted):
        return None
    lax_fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    checked: list[str] = []
    patterns: list[str] = []
    strings = 2  # the schema key and its value
    for field in fields:
        kind = _json_string(field.type)
        if kind is None:
            return None
        strings += 1 + kind
        pattern = _checkable_pattern(field.type)
        if pattern is not None:
            checked.append(field.name)
            patterns.append(f"(?:{pattern[2:-2]})")  # without \A and \Z
        lax_type = field.type if pattern is None else str
        lax_fields.append(
            (field.name, lax_type) if field.required else (field.name, lax_type, field.default)
        )
    if len(checked) < _FAST_FROM_PATTERNS:
        return None
    lax = msgspec.defstruct(
        f"Lax{cls.__name__}", lax_fields, bases=(WireStruct,), tag=cls.__struct_config__.tag
    )
    return _FastDecoder(
        lax=msgspec.json.Decoder(lax | _SchemaRequired),
        cls=cls,
        checked=operator.attrgetter(*checked),
        patterns=re.compile(r"\A" + "\x00".join(patterns) + r"\Z"),
        quotes=2 * strings,
    )


def _checkable_pattern(annotation: Any) -> str | None:
    """The pattern of a string field constrained by nothing else, if it never matches a NUL."""
    if typing.get_origin(annotation) is not Annotated:
        return None
    base, *metas = typing.get_args(annotation)
    if base is not str or len(metas) != 1 or not isinstance(metas[0], msgspec.Meta):
        return None
    meta = metas[0]
    if meta.pattern is None or meta.min_length is not None or meta.max_length is not None:
        return None
    return meta.pattern if _PRINTABLE_PATTERN.match(meta.pattern) else None


def _json_string(annotation: Any) -> bool | None:
    """Whether a field's JSON value is a string; None when it may or may not be."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = {_json_string(member) for member in typing.get_args(annotation)}
        return kinds.pop() if len(kinds) == 1 else None
    if annotation is str or (isinstance(annotation, type) and issubclass(annotation, enum.StrEnum)):
        return True
    return False if annotation in (int, float, bool, type(None)) else None


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
