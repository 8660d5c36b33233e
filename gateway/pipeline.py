"""The gateway's in-memory processing of one MQTT message, between MQTT and the spool.

    outcome = pipeline.process(topic, payload, time.time_ns())

parses the topic, decodes and validates the payload against it (wire: type
matches the stream, ids match the topic, no card number), checks that its
``ts`` is plausible at ``now_ns`` (`TimestampsSection`: no further ahead than
``max_future_skew``, no older than ``max_event_age`` except a ``state``, never
a time in another unit), builds its line-protocol line, and for sequenced
events deduplicates (gateway.dedup), detects gaps (gateway.gaps), both per
(site, device, stream) as each stream of a device counts its own ``seq``, and
feeds payments to the aggregates (gateway.aggregates). The `Outcome` says what to do:

- ``ACCEPTED``: spool ``outcome.line``.
- ``DUPLICATE``: a redelivery. Spool ``outcome.line`` all the same: it lands
  on the same InfluxDB point, and if the first copy never reached the spool
  (an append that failed, so its MQTT message was not acked and came back)
  this copy is the one that stores the event. It is kept out of aggregates
  and gaps, and counted.
- ``REJECTED``: ``outcome.reason`` (a `RejectReason`) and ``outcome.detail``
  (text naming the field). Keep the payload in the dead letters when
  ``outcome.keep_payload``; for ``PAN_DETECTED`` it is False: never keep,
  log or forward such a payload, nor its topic (count it, log the detail).
  Any rejection whose topic, payload or error text holds a card-number-like
  digit run becomes ``PAN_DETECTED``, whatever failed first.

`Pipeline.tick` closes aggregate windows and returns their lines (spool them
too); call it about once a second, also when no traffic comes. `Pipeline.stats`
is a snapshot of every counter, for gateway.metrics. Nothing here does I/O
(but log a bug) or takes a lock: call all three from the one thread that
consumes MQTT messages. `process` never raises: anything that is not a valid
device message is a rejection, and so is a message whose processing failed
unexpectedly (``INTERNAL_ERROR``: a bug, logged with where it raised, never
with the payload; the message is kept in the dead letters for a replay once
fixed).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

import msgspec

from gateway.aggregates import AggregateStats, Aggregator
from gateway.config import AggregatesSection, DedupSection, GapsSection, TimestampsSection
from gateway.dedup import Deduplicator, DedupStats
from gateway.gaps import GapDetector, GapStats
from runtime.logs import kv, raised_at
from wire import pci
from wire.errors import LineProtocolError, MessageDecodeError, PanDetectedError, TopicError
from wire.messages import (
    STREAM_FOR_MESSAGE,
    DeviceMessage,
    DeviceState,
    HostHealth,
    PaymentTransaction,
    SensorReading,
    TerminalStatus,
    decode_device_message,
)
from wire.points import decoded_to_line
from wire.timestamps import implausible_ts
from wire.topics import DeviceTopic, Stream, parse_device_topic

log = logging.getLogger(__name__)

MAX_DETAIL_CHARS = 500
# Parsed topics are cached (a fleet's topics repeat); only valid ones, and at
# most this many: the cache is emptied when full.
TOPIC_CACHE_ENTRIES = 1 << 16

DEFAULT_AGGREGATES = AggregatesSection()
DEFAULT_DEDUP = DedupSection()
DEFAULT_GAPS = GapsSection()
DEFAULT_TIMESTAMPS = TimestampsSection()


Sequenced = PaymentTransaction | TerminalStatus | SensorReading | HostHealth


class Verdict(enum.StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


class RejectReason(enum.StrEnum):
    BAD_TOPIC = "bad_topic"  # not tp/v1/dev/{site}/{device}/{stream}, or a bad id in it
    DECODE_ERROR = "decode_error"  # not the stream's message type, or a bad field
    ID_MISMATCH = "id_mismatch"  # payload site/device differ from the topic's
    IMPLAUSIBLE_TIME = "implausible_time"  # ts outside the accepted window, or in another unit
    PAN_DETECTED = "pan_detected"  # a card-number-like digit run: never keep the payload
    UNENCODABLE = "unencodable"  # valid message that line protocol cannot carry
    INTERNAL_ERROR = "internal_error"  # processing failed unexpectedly: a bug, logged
    NOT_MQTT = "not_mqtt"  # a PUBLISH the MQTT codec refused (kept whole, as it came)


# A Struct: 10x cheaper to build than a dataclass; never in a cycle, so untracked by the GC.
class Outcome(msgspec.Struct, frozen=True, gc=False):
    verdict: Verdict
    line: str | None = None  # ACCEPTED and DUPLICATE: the line to spool
    stream: Stream | None = None
    reason: RejectReason | None = None  # REJECTED only
    detail: str = ""  # REJECTED: what was wrong, naming the field; never card digits

    @property
    def keep_payload(self) -> bool:
        """True for a rejection whose payload belongs in the dead letters."""
        return self.verdict is Verdict.REJECTED and self.reason is not RejectReason.PAN_DETECTED


@dataclass(frozen=True, slots=True)
class PipelineStats:
    accepted: dict[str, int]  # by stream
    duplicates: dict[str, int]  # by stream
    rejected: dict[str, int]  # by reason
    dedup: DedupStats
    gaps: GapStats | None  # None when gap detection is off
    aggregates: AggregateStats


class Pipeline:
    def __init__(
        self,
        gateway: str,
        now_ns: int,
        *,
        aggregates: AggregatesSection = DEFAULT_AGGREGATES,
        dedup: DedupSection = DEFAULT_DEDUP,
        gaps: GapsSection = DEFAULT_GAPS,
        timestamps: TimestampsSection = DEFAULT_TIMESTAMPS,
    ) -> None:
        self._max_age_ns = timestamps.max_event_age_ns
        self._max_future_ns = timestamps.max_future_skew_ns
        self._aggregator = Aggregator(gateway, now_ns, aggregates)
        self._dedup = Deduplicator(dedup.max_entries)
        self._gaps = GapDetector(gaps.window, gaps.max_devices) if gaps.enabled else None
        self._accepted = dict.fromkeys(STREAM_FOR_MESSAGE, 0)
        self._duplicates = dict.fromkeys(STREAM_FOR_MESSAGE, 0)
        self._rejected = dict.fromkeys(RejectReason, 0)
        self._topics: dict[str, DeviceTopic] = {}

    def process(self, topic: str, payload: bytes, now_ns: int) -> Outcome:
        """Validate, deduplicate and aggregate one MQTT message; never raises."""
        try:
            return self._process(topic, payload, now_ns)
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the gateway: count, log, go on
            log.error("pipeline_failed", extra=kv(error=type(exc).__name__, at=raised_at(exc)))
            return self._reject(RejectReason.INTERNAL_ERROR, exc, topic, payload)

    def _process(self, topic: str, payload: bytes, now_ns: int) -> Outcome:
        message = self._decode(topic, payload)
        if isinstance(message, Outcome):
            return message
        if not now_ns - self._max_age_ns <= message.ts <= now_ns + self._max_future_ns:
            implausible = self._implausible_time(message, now_ns)
            if implausible is not None:
                return self._reject(RejectReason.IMPLAUSIBLE_TIME, implausible, topic, payload)
        try:
            line = decoded_to_line(message)
        except LineProtocolError as exc:
            return self._reject(RejectReason.UNENCODABLE, exc, topic, payload)
        stream = STREAM_FOR_MESSAGE[type(message)]
        if not isinstance(message, DeviceState) and self._is_duplicate(message, stream, now_ns):
            self._duplicates[type(message)] += 1
            return Outcome(Verdict.DUPLICATE, line, stream)
        self._accepted[type(message)] += 1
        return Outcome(Verdict.ACCEPTED, line, stream)

    def _decode(self, topic: str, payload: bytes) -> DeviceMessage | Outcome:
        """The valid message, or the rejection."""
        where = self._topics.get(topic)
        if where is None:
            try:
                where = parse_device_topic(topic)
            except TopicError as exc:
                return self._reject(RejectReason.BAD_TOPIC, exc, topic, payload)
            if len(self._topics) >= TOPIC_CACHE_ENTRIES:
                self._topics.clear()
            self._topics[topic] = where
        try:
            return decode_device_message(where, payload)
        except PanDetectedError as exc:
            return self._reject(RejectReason.PAN_DETECTED, exc, topic, payload)
        except MessageDecodeError as exc:
            return self._reject(RejectReason.DECODE_ERROR, exc, topic, payload)
        except TopicError as exc:
            return self._reject(RejectReason.ID_MISMATCH, exc, topic, payload)

    def _implausible_time(self, message: DeviceMessage, now_ns: int) -> str | None:
        """Why a ``ts`` outside [now - max age, now + max skew] is not plausible; None if it is.

        A ``state`` has no age limit: a last will carries the time of the connect
        that registered it, and a retained state the time it was published.
        """
        max_age = None if type(message) is DeviceState else self._max_age_ns
        return implausible_ts(
            message.ts, now_ns, max_age_ns=max_age, max_future_ns=self._max_future_ns
        )

    def _is_duplicate(self, message: Sequenced, stream: Stream, now_ns: int) -> bool:
        """Dedup, then gaps and aggregates for a new sequenced event.

        Both key by (site, device, stream): each stream of a device has its own
        ``seq`` counter (docs/wire.md).
        """
        site, device, seq = message.site, message.device, message.seq
        if self._dedup.is_duplicate(site, device, stream, seq, message.ts):
            return True
        if self._gaps is not None:
            self._gaps.observe(site, device, stream, seq)
        if type(message) is PaymentTransaction:
            self._aggregator.add(message, now_ns)
        return False

    def _reject(
        self, reason: RejectReason, error: Exception | str, topic: str, payload: bytes
    ) -> Outcome:
        if reason is RejectReason.INTERNAL_ERROR:
            text = f"{type(error).__name__}: {error}"
        else:
            text = str(error)
        detail = text[:MAX_DETAIL_CHARS]
        if reason is not RejectReason.PAN_DETECTED:
            where = _card_number_in(topic, payload, detail)
            if where:
                detail = (
                    f"{reason.value}, and the {where} holds a card-number-like digit run: "
                    "nothing of it is kept"
                )
                reason = RejectReason.PAN_DETECTED
        self._rejected[reason] += 1
        return Outcome(Verdict.REJECTED, reason=reason, detail=detail)

    def reject_unreadable(self, topic: str, packet: bytes, error: str) -> Outcome:
        """The rejection of a PUBLISH the MQTT codec refused (``packet``: all of it),
        counted as `RejectReason.NOT_MQTT`, or as a card number if it holds one."""
        return self._reject(RejectReason.NOT_MQTT, error, topic, packet)

    def tick(self, now_ns: int) -> list[str]:
        """Close the aggregate windows the watermark passed; their lines, to spool."""
        return self._aggregator.close(now_ns)

    def stats(self) -> PipelineStats:
        return PipelineStats(
            accepted={STREAM_FOR_MESSAGE[k].value: n for k, n in self._accepted.items()},
            duplicates={STREAM_FOR_MESSAGE[k].value: n for k, n in self._duplicates.items()},
            rejected={reason.value: n for reason, n in self._rejected.items()},
            dedup=self._dedup.stats(),
            gaps=None if self._gaps is None else self._gaps.stats(),
            aggregates=self._aggregator.stats(),
        )


def _card_number_in(topic: str, payload: bytes, detail: str) -> str:
    """Where a rejected message holds a card number ("" if nowhere).

    wire refuses a payload with a card number before decoding it, but a message
    may be rejected before that (its topic, its size) or for text wire made up
    (the error), and none of it may reach the dead letters or logs with one.
    The scan is wire.pci's, raw bytes for the payload (ns ``ts`` values left out).
    """
    if pci.contains_pan(topic):
        return "topic"
    if pci.payload_contains_pan(payload):
        return "payload"
    if pci.contains_pan(detail):
        return "error text"
    return ""
