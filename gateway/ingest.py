"""MQTT -> pipeline -> spool, acknowledging a message only once it is durable.

One thread runs `Ingest.run`. It turns the `BrokerLink` (MQTT v5 on its own
socket with the mqtt5 codec, persistent session, ``receive_maximum`` as flow
control), which subscribes to every device topic, as a shared subscription
when a group is configured, so N gateways split the load with no
coordination of ours.

Each turn, the link hands over every PUBLISH of one read from the socket (a
batch of up to a few thousand), and each goes through `Pipeline.process`.
The lines of the valid ones (duplicates too: re-spooling one is harmless,
and its first copy may be in a group the spool refused) wait in the current
group; rejected messages are kept in the dead letters (except payloads
carrying a card number, which are only counted) and re-published on the
dead-letter topic. After every turn the group is committed: one
`Spool.append` (one fsync; a group of more than half a segment in several),
then the PUBACKs of all its QoS 1 messages in one send; a turn whose group
is still small reads on for up to `GROUP_LINGER_S` first (group commit).
If the spool is full, nothing is acknowledged: the group is kept and
retried, the broker stops sending once ``receive_maximum`` messages are
unacknowledged, and holds the rest in our session (back-pressure, nothing
dropped). The PUBACKs
of a connection that was lost meanwhile are not sent: the broker redelivers
those messages (dup flag) on the next one, and they are acknowledged then.

No message can break the link (one that did would lose the PUBACKs queued
behind it and come back forever):
- a PUBLISH the codec refuses (`runtime.mqtt_packets.RefusedPublish`) is
  skipped by its length, acknowledged with its group, counted
  (``invalid_packets``, and by the pipeline as rejected ``not_mqtt``) and
  kept whole in the dead letters, like any rejected message (unless it
  holds a card number);
- the dead-letter publish goes through `runtime.mqtt_safe` (reason and
  topic escaped into valid MQTT; a packet past the broker's maximum size is
  not sent); a publish that fails is counted (``deadletters_unpublished``)
  and logged, and takes nothing else with it;
- a rejection sticks: a redelivered message (dup flag) that was rejected
  before (`RejectionMemory`) is acknowledged and counted
  (``redelivered_rejections``), not processed, kept or published again;
- handling one message never raises out of the batch: anything unexpected is
  counted (``internal_errors``) and logged without the payload; so is
  anything unexpected in the rest of a loop turn (closing aggregate windows,
  committing), after which the loop goes on.
Every message is acknowledged with its group, so only after the group's lines
are in the spool; that includes rejected ones, also when the dead letters
could not write them (full disk: counted by `DeadLetters`): the payload is
invalid, and not acknowledging it would only bring it back the same.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

import mqtt5
import msgspec

from gateway.broker_link import TURN_S, BrokerLink
from gateway.errors import SpoolError, SpoolFullError
from gateway.pipeline import Outcome, Pipeline, PipelineStats, Verdict
from gateway.rejections import RejectionMemory
from gateway.spool import Spool
from runtime import mqtt_safe
from runtime.config_sections import LinkSettings
from runtime.deadletters import DeadLetters
from runtime.logs import kv, raised_at
from runtime.mqtt_packets import RefusedPublish
from wire.topics import deadletter_topic, device_subscription

log = logging.getLogger(__name__)

TICK_EVERY_NS: Final = 1_000_000_000  # aggregate windows are closed once a second
# Group commit: a group that is still small waits this long for more messages, which
# then share its fsync and its PUBACK send (`Ingest._fill_group`).
GROUP_LINGER_S: Final = 0.005
MAX_GROUP_BYTES: Final = 8 << 20  # a group is appended before it grows past this
ERROR_PAUSE_S: Final = 1.0  # after an unexpected error in a loop turn


class IngestStats(msgspec.Struct, kw_only=True):
    received: int = 0
    acked: int = 0  # PUBACKs sent
    groups: int = 0
    spool_full: int = 0  # groups refused by a full spool: retried, nothing acked
    invalid_packets: int = 0  # PUBLISHes the MQTT codec refused: acked, dead-lettered
    deadletters_published: int = 0
    deadletters_unpublished: int = 0  # not valid MQTT as it is, or not sent: counted, logged
    redelivered_rejections: int = 0  # rejected before, sent again by the broker: acked
    internal_errors: int = 0  # a message's handling or a loop turn failed unexpectedly: logged
    pending: int = 0  # messages in the current group, not yet acked


class Ingest:
    def __init__(
        self,
        settings: LinkSettings,
        *,
        password: str | None,
        gateway: str,
        shared_group: str | None,
        pipeline: Pipeline,
        spool: Spool,
        deadletters: DeadLetters,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.link = BrokerLink(
            settings, password=password, subscription=device_subscription(shared_group)
        )
        self._deadletter_topic = deadletter_topic(gateway)
        self._pipeline = pipeline
        self._spool = spool
        self._deadletters = deadletters
        self._rejections = RejectionMemory()
        self._now_ns = now_ns
        self.stats = IngestStats()
        self._lines: list[bytes] = []
        self._group_bytes = 0
        self._acks: list[int] = []  # packet ids of the group's QoS 1 messages, in order
        self._acks_connection = 0  # the link connection they came on
        # a group this large is committed at once: the broker sends at most
        # receive_maximum unacknowledged messages, so it can go on sending meanwhile
        self._full_group = max(1, (settings.receive_maximum or 65_535) // 2)
        self._next_tick = 0
        self._broken: str | None = None
        # The pipeline is not thread-safe: its figures are snapshotted here, on the
        # ingest thread, once a second, for the metrics to read from any thread.
        self.pipeline_stats: PipelineStats = pipeline.stats()

    @property
    def broken(self) -> str | None:
        """Why the ingest stopped acknowledging for good (a spool that can't be written)."""
        return self._broken

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._turn(stop)
            except Exception as exc:  # last resort: the thread and its session go on
                self.stats.internal_errors += 1
                log.error(
                    "ingest_unexpected_error",
                    extra=kv(error=f"{type(exc).__name__}: {exc}"),
                    exc_info=True,
                )
                stop.wait(ERROR_PAUSE_S)
        self._commit(stop)
        self.link.close()

    def _turn(self, stop: threading.Event) -> None:
        """Read what the broker sends, close due aggregate windows, commit the group."""
        self.receive(stop)
        self._fill_group(stop)
        now = self._now_ns()
        if now >= self._next_tick:
            self._next_tick = now + TICK_EVERY_NS
            self._add_lines(self._pipeline.tick(now))
            self.pipeline_stats = self._pipeline.stats()
        self._commit(stop)

    def _fill_group(self, stop: threading.Event) -> None:
        """Read on for up to `GROUP_LINGER_S` while the group is small: at a moderate
        rate a read holds a few messages, and each commit costs an fsync, a send and a
        turn of this loop whatever its size (measured in BENCHMARKS.md, "Gateway
        throughput"). An event waits at most that long more for its PUBACK."""
        deadline = time.monotonic() + GROUP_LINGER_S
        while 0 < self.stats.pending < self._full_group and self.link.status.connected:
            left = deadline - time.monotonic()
            if left <= 0 or stop.is_set():
                return
            self.receive(stop, wait_s=left)

    def receive(self, stop: threading.Event, wait_s: float = TURN_S) -> None:
        """One read of the link, waiting up to ``wait_s`` for one: its messages go into
        the group (not committed yet)."""
        deliveries = self.link.turn(stop, wait_s)
        if not deliveries:
            return
        if self.link.connection != self._acks_connection:
            self._acks = []  # that connection is gone: the broker redelivers its messages
            self._acks_connection = self.link.connection
        stats, acks = self.stats, self._acks
        for message in deliveries:
            stats.received += 1
            stats.pending += 1
            try:
                if isinstance(message, RefusedPublish):
                    self._refused(message)
                else:
                    self._handle(message)
            except Exception as exc:  # noqa: BLE001 - last resort for a bug: count, log, go on
                stats.internal_errors += 1
                log.error(  # never the payload nor the topic: either may carry anything
                    "message_handling_failed",
                    extra=kv(error=type(exc).__name__, at=raised_at(exc)),
                )
            if message.packet_id is not None:  # QoS 1 (QoS 0 has none, and no PUBACK)
                acks.append(message.packet_id)
            if self._group_bytes >= MAX_GROUP_BYTES:
                self._commit(None)
                acks = self._acks

    def _handle(self, message: mqtt5.PublishPacket) -> None:
        topic, payload = message.topic, message.payload
        if message.duplicate and self._rejections.holds(topic, payload):
            self.stats.redelivered_rejections += 1
            return
        outcome = self._pipeline.process(topic, payload, self._now_ns())
        if outcome.verdict is Verdict.REJECTED:
            self._rejected(topic, payload, outcome)
        elif outcome.line is not None:
            line = outcome.line.encode()
            self._lines.append(line)
            self._group_bytes += len(line)

    def _refused(self, message: RefusedPublish) -> None:
        """A PUBLISH the codec refused: kept whole as a dead letter (unless it holds a
        card number), acked with the group."""
        self.stats.invalid_packets += 1
        if message.duplicate and self._rejections.holds(message.topic, message.packet):
            self.stats.redelivered_rejections += 1
            return
        log.warning("invalid_packet", extra=kv(size=len(message.packet), error=message.error))
        outcome = self._pipeline.reject_unreadable(message.topic, message.packet, message.error)
        self._rejected(message.topic, message.packet, outcome)

    def _rejected(self, topic: str, payload: bytes, outcome: Outcome) -> None:
        self._rejections.remember(topic, payload)
        if outcome.keep_payload:  # else a card number: counted, never kept nor forwarded
            reason = outcome.detail
            if outcome.reason:
                reason = f"{outcome.reason}: {reason}"
            self._dead_letter(topic, payload, reason, outcome.reason)

    def _add_lines(self, lines: list[str]) -> None:
        for line in lines:
            encoded = line.encode()
            self._lines.append(encoded)
            self._group_bytes += len(encoded)

    def _commit(self, stop: threading.Event | None) -> None:
        """Append the group to the spool, then acknowledge its messages."""
        if self._broken is not None or not (self._lines or self.stats.pending):
            return
        try:
            self._append_group()
        except SpoolFullError:
            self.stats.spool_full += 1
            if stop is not None:
                stop.wait(0.2)  # the forwarder is draining; the broker holds the rest
            return
        except SpoolError as exc:
            self._broken = str(exc)
            log.critical("spool_failed_acks_stopped", extra=kv(error=self._broken))
            return
        self.stats.acked += self.link.ack(self._acks, self._acks_connection)
        self.stats.groups += 1
        self._lines, self._acks, self._group_bytes = [], [], 0
        self.stats.pending = 0

    def _append_group(self) -> None:
        """Append the group's lines in chunks of at most half a segment.

        A group held back by a full disk grows to ``receive_maximum`` messages;
        appended whole it could need more room than the disk ever frees, or be
        larger than a segment. Chunks that went in are taken off the group, so a
        retry appends only the rest (raises what `Spool.append` raises).
        """
        budget = self._spool.segment_bytes // 2
        if self._group_bytes <= budget:  # the usual case: one append
            self._spool.append(self._lines)
            self._lines, self._group_bytes = [], 0
        while self._lines:
            size = count = 0
            for line in self._lines:
                if count and size + len(line) > budget:
                    break
                size += len(line)
                count += 1
            self._spool.append(self._lines[:count])
            del self._lines[:count]
            self._group_bytes -= size

    def _dead_letter(self, topic: str, payload: bytes, reason: str, code: str | None) -> None:
        self._deadletters.keep(payload, reason=reason, source=topic)
        try:
            error = self.link.publish(
                self._deadletter_topic, payload, [("reason", reason), ("topic", topic)]
            )
        except mqtt_safe.UnpublishableError as exc:
            error = str(exc)
        if error is None:
            self.stats.deadletters_published += 1
            return
        self.stats.deadletters_unpublished += 1
        log.warning(
            "deadletter_not_published", extra=kv(reason=code, size=len(payload), error=error)
        )
