"""MQTT -> pipeline -> spool, acknowledging a message only once it is durable.

One thread runs `Ingest.run`. It turns the `MqttLink` (MQTT v5, persistent
session, manual acknowledgement, ``receive_maximum`` as flow control) and
subscribes to every device topic, as a shared subscription when a group is
configured, so N gateways split the load with no coordination of ours.

Each message goes through `Pipeline.process` as it arrives. The lines of the
valid ones (duplicates too: re-spooling one is harmless, and its first copy
may be in a group the spool refused) wait in the current group; rejected
messages are kept in the dead letters (except payloads carrying a card
number, which are only counted) and re-published on the dead-letter topic.
After every loop turn the group is committed: one `Spool.append` (one
fsync; a group of more than half a segment in several), then one PUBACK per
message, in arrival order. If the spool is full, nothing is acknowledged:
the group is kept and retried, the broker stops sending once
``receive_maximum`` messages are unacknowledged, and holds the rest in our
session (back-pressure, nothing dropped).

No message can break the link (one that did would lose the PUBACKs queued
behind it and come back forever):
- the dead-letter publish goes through `runtime.mqtt_safe` (reason and
  topic escaped into valid MQTT; a packet past the broker's maximum size is
  not sent); a publish that fails is counted (``deadletters_unpublished``)
  and logged, and takes nothing else with it;
- a rejection sticks: a redelivered message (dup flag) that was rejected
  before (`RejectionMemory`) is acknowledged and counted
  (``redelivered_rejections``), not processed, kept or published again;
- paho's ``on_message`` never raises (paho would re-raise out of its loop and
  end this thread): anything unexpected is counted (``internal_errors``) and
  logged without the payload; so is anything unexpected in the rest of a loop
  turn (closing aggregate windows, committing), after which the loop goes on.
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

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from gateway.errors import SpoolError, SpoolFullError
from gateway.pipeline import Outcome, Pipeline, PipelineStats, Verdict
from gateway.rejections import RejectionMemory
from gateway.spool import Spool
from runtime import mqtt_safe
from runtime.config_sections import LinkSettings
from runtime.deadletters import DeadLetters
from runtime.logs import kv, raised_at
from runtime.mqtt_link import MqttLink
from wire.topics import deadletter_topic, device_subscription

log = logging.getLogger(__name__)

TICK_EVERY_NS: Final = 1_000_000_000  # aggregate windows are closed once a second
MAX_GROUP_BYTES: Final = 8 << 20  # a group is appended before it grows past this
ERROR_PAUSE_S: Final = 1.0  # after an unexpected error in a loop turn


class IngestStats(msgspec.Struct, kw_only=True):
    received: int = 0
    acked: int = 0
    groups: int = 0
    spool_full: int = 0  # groups refused by a full spool: retried, nothing acked
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
        self.link = MqttLink(
            settings, password=password, manual_ack=True, on_connected=self._subscribe
        )
        self._subscription = device_subscription(shared_group)
        self._deadletter_topic = deadletter_topic(gateway)
        self._pipeline = pipeline
        self._spool = spool
        self._deadletters = deadletters
        self._rejections = RejectionMemory()
        self._now_ns = now_ns
        self.stats = IngestStats()
        self._lines: list[bytes] = []
        self._group_bytes = 0
        self._acks: list[tuple[int, int]] = []  # (mid, qos) in arrival order
        self._next_tick = 0
        self._read_burst = settings.receive_maximum or 1
        self._broken: str | None = None
        # The pipeline is not thread-safe: its figures are snapshotted here, on the
        # ingest thread, once a second, for the metrics to read from any thread.
        self.pipeline_stats: PipelineStats = pipeline.stats()
        self.link.client.on_message = self._on_message

    @property
    def broken(self) -> str | None:
        """Why the ingest stopped acknowledging for good (a spool that can't be written)."""
        return self._broken

    def _subscribe(self, client: mqtt.Client, session_present: bool) -> None:
        """Subscribe after every CONNACK (a resumed session keeps it, a new one needs it)."""
        client.subscribe(self._subscription, qos=1)
        log.info("subscribed", extra=kv(topic=self._subscription, resumed=session_present))

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
        self.link.turn(stop, read_burst=self._read_burst)
        now = self._now_ns()
        if now >= self._next_tick:
            self._next_tick = now + TICK_EVERY_NS
            self._add_lines(self._pipeline.tick(now))
            self.pipeline_stats = self._pipeline.stats()
        self._commit(stop)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        """paho's callback: never raises (see the module doc); acks with the group."""
        self.stats.received += 1
        try:
            self._handle(msg)
        except Exception as exc:  # noqa: BLE001 - last resort for a bug: count, log, go on
            self.stats.internal_errors += 1
            log.error(  # never the payload nor the topic: either may carry anything
                "message_handling_failed",
                extra=kv(error=type(exc).__name__, at=raised_at(exc)),
            )
        self._acks.append((msg.mid, msg.qos))
        self.stats.pending = len(self._acks)
        if self._group_bytes >= MAX_GROUP_BYTES:
            self._commit(None)

    def _handle(self, msg: mqtt.MQTTMessage) -> None:
        topic, payload = msg.topic, bytes(msg.payload)
        if msg.dup and self._rejections.holds(topic, payload):
            self.stats.redelivered_rejections += 1
            return
        outcome = self._pipeline.process(topic, payload, self._now_ns())
        if outcome.verdict is Verdict.REJECTED:
            self._rejections.remember(topic, payload)
            self._dead_letter(topic, payload, outcome)
        elif outcome.line is not None:
            self._add_lines([outcome.line])

    def _add_lines(self, lines: list[str]) -> None:
        for line in lines:
            encoded = line.encode("utf-8")
            self._lines.append(encoded)
            self._group_bytes += len(encoded)

    def _commit(self, stop: threading.Event | None) -> None:
        """Append the group to the spool, then acknowledge its messages."""
        if self._broken is not None or not (self._lines or self._acks):
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
        for mid, qos in self._acks:
            self.link.client.ack(mid, qos)
        self.stats.acked += len(self._acks)
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

    def _dead_letter(self, topic: str, payload: bytes, outcome: Outcome) -> None:
        if not outcome.keep_payload:
            return  # a card number: counted by the pipeline, never kept nor forwarded
        reason = f"{outcome.reason}: {outcome.detail}" if outcome.reason else outcome.detail
        self._deadletters.keep(payload, reason=reason, source=topic)
        try:
            info = mqtt_safe.publish(
                self.link.client,
                self._deadletter_topic,
                payload,
                qos=0,
                user_properties=[("reason", reason), ("topic", topic)],
                max_packet_bytes=self.link.max_packet_bytes,
            )
        except mqtt_safe.UnpublishableError as exc:
            error = str(exc)
        else:
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self.stats.deadletters_published += 1
                return
            error = mqtt.error_string(info.rc)
        self.stats.deadletters_unpublished += 1
        log.warning(
            "deadletter_not_published",
            extra=kv(reason=outcome.reason, size=len(payload), error=error),
        )
