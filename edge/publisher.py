"""The MQTT side of the edge agent: outbox rows -> broker, one bounded window at a time.

One thread runs `MqttPublisher.run`, turning the `MqttLink` (connection,
reconnects with backoff, persistent session) and, between turns, topping the
in-flight window up from the outbox: at most ``inflight_window`` QoS 1
publishes are unacknowledged at any time, so paho never holds a backlog
(DESIGN.md: a paho client handed ~65,000 queued QoS 1 messages stalled
silently). A row leaves the outbox only when its PUBACK arrived (the acks of
one turn are deleted in one transaction), or when it is dead-lettered (below).

The link's client id is the agent's device id; its retained last will says
"offline" on the device's state topic, and a retained "online" follows every
CONNACK; both carry the time of that connect (docs/wire.md, "Timing").
Publishes in flight when the link drops are re-sent by paho on reconnect (DUP
set); after a crash they are leased again from the outbox.
Either way the gateway sees at most a redelivery of the same event.

A PUBACK with a failure reason is the broker refusing that one message.
The row leaves the window at once (`Outbox.defer`), so refused rows never
hold up the others, and is sent again after a backoff (the link's reconnect
backoff, per row). A transient refusal (`TRANSIENT_REFUSALS`) is retried for
as long as it takes. Any other refusal counts a try: after
`MAX_REFUSED_TRIES` the row is dead-lettered: kept in the agent's dead
letters with its topic, device and reason, deleted from the outbox, and not
sent again. A message no broker would take as it is (a packet over the
broker's announced maximum size, an invalid topic: `runtime.mqtt_safe`) is
dead-lettered unsent: Mosquitto would drop the connection for it, and paho
sends a publish again after every reconnect, so it would loop forever. (Any
other drop of the connection is not pinned on a row: it cannot be told from a
network cut.) Tries are counted in memory: after a restart a refused row that
is still queued gets its tries again. At
most `MAX_REFUSED_WAITING` refused rows wait for a retry; past that no new
row is leased until some are settled (seconds), which keeps the outbox
bounded under a flood of refusals. A retried row may arrive after newer rows
of its device (consumers order by seq). Refusals are counted per device
(`PublishStatus.refusals`), logged at most once per device and event every
`REFUSAL_LOG_EVERY_S`, and make the agent degraded (`MqttPublisher.degraded`)
until the broker takes that device's messages again.

An outbox that fails (full disk: an ack cannot be stored) does not stop the
publisher: it keeps the acks, keeps the link, and tries the outbox again
with backoff. The rows behind those acks stay leased, so they are not
published twice by this run, and the window (and paho's queue) stays bounded.
Anything unexpected in a turn (a bug) is logged, counted in ``errors`` and
treated the same way: the thread goes on.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Final, Protocol

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import EdgeMqttSection
from edge.errors import OutboxError
from edge.outbox import Row
from runtime import mqtt_safe
from runtime.backoff import Backoff
from runtime.deadletters import DeadLetters
from runtime.logs import kv
from runtime.mqtt_link import MqttLink
from wire.messages import DeviceState, StateReason, encode
from wire.topics import Stream, device_topic

log = logging.getLogger(__name__)

OUTBOX_RETRY_MIN_S = 0.5
OUTBOX_RETRY_MAX_S = 10.0
MAX_REFUSED_TRIES: Final = 3  # sends of a row the broker refuses for good, then dead letters
MAX_REFUSED_WAITING: Final = 1000  # refused rows awaiting a retry; past it, nothing new is leased
REFUSAL_LOG_EVERY_S: Final = 30.0  # one log line per device and event; the rest: held_back=
NOT_AUTHORIZED: Final = 0x87

# PUBACK reason codes that mean "not now" (MQTT v5, 3.4.2.1): 0x97 quota exceeded (a
# rate or queue quota frees up), 0x91 packet identifier in use (a session glitch; the
# retry gets a fresh id). Every other failure speaks of the message itself or of this
# client's rights (0x87 not authorized, 0x90 topic name invalid, 0x99 payload format
# invalid, 0x95 packet too large, 0x83 implementation specific: a plugin's refusal,
# 0x80 unspecified): sent again, it is refused again, so it counts a try. An unknown
# code taken as permanent costs a dead letter; taken as transient, it would keep its
# rows forever.
TRANSIENT_REFUSALS: Final = frozenset({0x91, 0x97})


class Outbox(Protocol):
    """What the publisher needs of edge.outbox.Outbox."""

    def lease(self, limit: int) -> list[Row]: ...
    def lease_again(self, row_ids: list[int]) -> tuple[list[Row], set[int]]: ...
    def ack_many(self, row_ids: list[int]) -> int: ...
    def defer(self, row_ids: list[int]) -> int: ...
    def dead_letter(self, row_ids: list[int]) -> int: ...


class DeviceRefusals(msgspec.Struct, kw_only=True):
    """What the broker refused of one device's messages in this run."""

    refused: int = 0  # PUBACKs with a failure reason, every try counted
    dead_lettered: int = 0  # rows given up on: in the dead letters, never sent again
    last_reason: str = ""
    last_code: int | None = None  # the PUBACK reason code; None: never sent (unpublishable)
    last_topic: str = ""
    refusing: bool = True  # the latest answer for this device was a refusal


class PublishStatus(msgspec.Struct, kw_only=True):
    published: int = 0  # sends, retries of refused rows included
    acked: int = 0
    refused: int = 0  # PUBACKs with a failure reason (e.g. not authorised), every try
    dead_lettered: int = 0  # rows refused for good: in the dead letters, out of the outbox
    inflight: int = 0
    errors: int = 0  # unexpected failures of a turn: logged, retried with backoff
    last_ack_unix: float | None = None
    refusals: dict[str, DeviceRefusals] = {}  # by device: those refused at least once


class _Refused(msgspec.Struct):  # a struct, not a dataclass: see edge.outbox.Entry
    """A row the broker refused, until it is delivered or dead-lettered."""

    backoff: Backoff  # spaces its retries
    tries: int = 0  # permanent refusals so far


class _Throttle:
    """At most one log line per key every ``every_s`` seconds; counts those held back."""

    def __init__(self, every_s: float) -> None:
        self._every_s = every_s
        self._next: dict[tuple[str, str], float] = {}  # monotonic
        self._held: dict[tuple[str, str], int] = {}

    def admit(self, key: tuple[str, str]) -> int | None:
        """None: hold this line back; else how many of ``key`` were held back before it."""
        now = time.monotonic()
        if now < self._next.get(key, 0.0):
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._next[key] = now + self._every_s
        return self._held.pop(key, 0)


class MqttPublisher:
    def __init__(
        self,
        config: EdgeMqttSection,
        *,
        site: str,
        device: str,
        outbox: Outbox,
        deadletters: DeadLetters,
        password: str | None = None,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._window = config.inflight_window
        self._site = site
        self._device = device
        self._outbox = outbox
        self._deadletters = deadletters
        self._now_ns = now_ns
        self._connect_ns = now_ns()  # of the latest connect; set again before each
        self.status = PublishStatus()
        self._inflight: dict[int, Row] = {}  # paho mid -> outbox row
        self._delivered: list[int] = []  # row ids whose PUBACK arrived, not yet acked
        self._dead: list[int] = []  # row ids dead-lettered, not yet deleted from the outbox
        self._refused: dict[int, _Refused] = {}  # by row id: waiting for a retry or in flight
        self._due: list[tuple[float, int]] = []  # heap of (monotonic, row id): retries waiting
        self._retry_s = (config.reconnect_min_s, config.reconnect_max_s)
        self._rng = random.Random()
        self._log_throttle = _Throttle(REFUSAL_LOG_EVERY_S)
        self._outbox_backoff = Backoff(OUTBOX_RETRY_MIN_S, OUTBOX_RETRY_MAX_S)
        self._outbox_retry_at = 0.0  # monotonic; after a failed outbox call
        self._state_topic = device_topic(site, device, Stream.STATE)
        self.link = MqttLink(
            config.link_settings(device, max_inflight=config.inflight_window),
            password=password,
            will=self._will_for_next_connect,
            on_connected=self._say_online,
        )
        self.link.client.on_publish = self._on_publish

    def run(self, stop: threading.Event) -> None:
        """Publish until ``stop`` is set; then say "offline" and disconnect cleanly."""
        while not stop.is_set():
            try:
                self._turn(stop)
            except Exception as exc:  # last resort: log, count, go on after a pause
                self.status.errors += 1
                log.error(
                    "publisher_unexpected_error",
                    extra=kv(error=f"{type(exc).__name__}: {exc}"),
                    exc_info=True,
                )
                self._outbox_retry_at = time.monotonic() + self._outbox_backoff.next_delay()
        self._shutdown()

    def _turn(self, stop: threading.Event) -> None:
        connected = self.link.turn(stop)
        if time.monotonic() < self._outbox_retry_at:
            return
        try:
            self._settle()
            if connected:
                self._fill_window()
        except OutboxError as exc:
            self._outbox_failed(exc)
        else:
            self._outbox_backoff.reset()

    def _outbox_failed(self, exc: OutboxError) -> None:
        """Try the outbox again later (the acks are kept); log once per outage."""
        if self._outbox_backoff.attempt == 0:
            log.warning(
                "outbox_unavailable", extra=kv(error=str(exc), acks_pending=len(self._delivered))
            )
        self._outbox_retry_at = time.monotonic() + self._outbox_backoff.next_delay()

    def _fill_window(self) -> None:
        room = self._window - len(self._inflight)
        if room > 0 and self._due:
            room -= self._send_again(room)
        if room > 0 and len(self._refused) < MAX_REFUSED_WAITING:
            for row in self._outbox.lease(room):
                self._send(row)
        self.status.inflight = len(self._inflight)

    def _send_again(self, room: int) -> int:
        """Send refused rows whose retry is due, up to ``room``; returns how many were sent."""
        now = time.monotonic()
        due: list[int] = []
        while self._due and self._due[0][0] <= now and len(due) < room:
            due.append(heapq.heappop(self._due)[1])
        if not due:
            return 0
        try:
            rows, gone = self._outbox.lease_again(due)
        except OutboxError:
            for row_id in due:
                heapq.heappush(self._due, (now, row_id))
            raise
        for row_id in gone:  # a sample dropped meanwhile (TTL, bound)
            del self._refused[row_id]
        for row_id in set(due) - gone - {row.row_id for row in rows}:
            heapq.heappush(self._due, (now, row_id))  # no room in the outbox's window yet
        for row in rows:
            self._send(row)
        return len(rows)

    def _send(self, row: Row) -> None:
        try:
            info = mqtt_safe.publish(
                self.link.client,
                row.topic,
                row.payload,
                qos=1,
                max_packet_bytes=self.link.max_packet_bytes,
            )
        except mqtt_safe.UnpublishableError as exc:
            self._outbox.defer([row.row_id])
            self._note_refusal(row, str(exc), None)
            self._give_up(row, str(exc), sent="never")
            return
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            # Queued inside paho and sent on reconnect: still tracked by mid.
            log.warning("publish_deferred", extra=kv(topic=row.topic, rc=int(info.rc)))
        self._inflight[info.mid] = row
        self.status.published += 1

    def _settle(self) -> None:
        """Delete the delivered and the dead-lettered rows, one outbox transaction each;
        kept for the next turn on `OutboxError`."""
        if self._delivered:
            self._outbox.ack_many(self._delivered)
            self.status.acked += len(self._delivered)
            self.status.last_ack_unix = time.time()
            self._delivered = []
        if self._dead:
            self._outbox.dead_letter(self._dead)
            self._dead = []

    def _shutdown(self) -> None:
        if self.link.client.is_connected():
            info = self.link.client.publish(
                self._state_topic, self._state(False, StateReason.SHUTDOWN), qos=1, retain=True
            )
            self.link.close(flush=info.is_published)
        try:
            self._settle()
        except OutboxError as exc:  # delivered (or refused) again after the restart
            log.warning("acks_not_stored", extra=kv(rows=len(self._delivered), error=str(exc)))
        log.info("publisher_stopped", extra=kv(inflight=len(self._inflight)))

    def _will_for_next_connect(self) -> tuple[str, bytes]:
        """The last will and the "online" state of one connection carry the same time,
        its connect time: the cloud takes a will as newer than the online it ends."""
        self._connect_ns = self._now_ns()
        return self._state_topic, self._state(False, StateReason.LAST_WILL, self._connect_ns)

    def _say_online(self, client: mqtt.Client, session_present: bool) -> None:
        online = self._state(True, StateReason.CONNECTED, self._connect_ns)
        client.publish(self._state_topic, online, qos=1, retain=True)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        row = self._inflight.pop(mid, None)
        self.status.inflight = len(self._inflight)
        if row is None:
            return  # our own state message
        if reason.is_failure:
            self._outbox.defer([row.row_id])  # no window slot while it waits
            self._refused_by_broker(row, reason)
            return
        self._delivered.append(row.row_id)
        self._refused.pop(row.row_id, None)  # a retry got through
        refusals = self.status.refusals.get(row.device)
        if refusals is not None:
            refusals.refusing = False

    def _refused_by_broker(self, row: Row, reason: ReasonCode) -> None:
        """Count a refusal; send the row again after its backoff, or give it up."""
        code = reason.value
        self._note_refusal(row, str(reason), code)
        self.status.refused += 1
        self.status.refusals[row.device].refused += 1
        refused = self._refused.get(row.row_id)
        if refused is None:
            refused = self._refused[row.row_id] = _Refused(Backoff(*self._retry_s, rng=self._rng))
        transient = code in TRANSIENT_REFUSALS
        if not transient:
            refused.tries += 1
        tries = f"{refused.tries}/{MAX_REFUSED_TRIES}"
        if refused.tries >= MAX_REFUSED_TRIES:
            self._give_up(row, str(reason), code=f"0x{code:02X}", tries=tries)
            return
        delay = refused.backoff.next_delay()
        heapq.heappush(self._due, (time.monotonic() + delay, row.row_id))
        self._log(
            logging.WARNING,
            "publish_refused",
            row,
            reason=str(reason),
            code=f"0x{code:02X}",
            tries=tries,
            transient=transient,
            retry_in_s=round(delay, 2),
        )

    def _note_refusal(self, row: Row, reason: str, code: int | None) -> None:
        refusals = self.status.refusals.get(row.device)
        if refusals is None:
            refusals = self.status.refusals[row.device] = DeviceRefusals()
        refusals.refusing = True
        refusals.last_reason, refusals.last_code, refusals.last_topic = reason, code, row.topic

    def _give_up(self, row: Row, reason: str, **detail: str) -> None:
        """Keep a deferred row in the dead letters; it leaves the outbox next turn."""
        self._refused.pop(row.row_id, None)
        details = " ".join(f"{key}={value}" for key, value in detail.items())
        if not self._deadletters.keep(
            row.payload,
            reason=f"publish refused: {reason} ({details} device={row.device})",
            source=row.topic,
        ):
            # Not kept (the disk refuses it): a row is better queued than lost. It stays
            # deferred, out of the window, and is sent again after a restart.
            self._log(logging.ERROR, "publish_not_deadlettered", row, reason=reason, **detail)
            return
        self._dead.append(row.row_id)
        self.status.dead_lettered += 1
        refusals = self.status.refusals[row.device]
        refusals.dead_lettered += 1
        self._log(
            logging.ERROR,
            "publish_deadlettered",
            row,
            reason=reason,
            **detail,
            dead_lettered=refusals.dead_lettered,
        )

    def _log(self, level: int, event: str, row: Row, **fields: object) -> None:
        """One line per device and event every REFUSAL_LOG_EVERY_S: a device whose every
        message is refused must not flood the journal."""
        held_back = self._log_throttle.admit((event, row.device))
        if held_back is not None:
            log.log(
                level,
                event,
                extra=kv(topic=row.topic, device=row.device, **fields, held_back=held_back),
            )

    def degraded(self) -> list[str]:
        """One reason per device whose latest message the broker refused; [] if none."""
        return [
            self._refusal_reason(device, refusals)
            for device, refusals in list(self.status.refusals.items())  # another thread's
            if refusals.refusing
        ]

    def _refusal_reason(self, device: str, refusals: DeviceRefusals) -> str:
        what = f'("{refusals.last_reason}" on {refusals.last_topic})'
        kept = (
            f" {refusals.dead_lettered} rows dead-lettered so far, kept in"
            f" {self._deadletters.directory} and not sent again"
        )
        if refusals.last_code is None:
            return f"a message of device {device} cannot be sent to this broker {what}:{kept}"
        refused = f"the broker refuses publishes for device {device} {what}"
        if refusals.last_code in TRANSIENT_REFUSALS:
            return f"{refused} for now: its rows are kept and sent again with backoff"
        if refusals.last_code == NOT_AUTHORIZED:
            fix = (
                f"add the device to agent {self._device}'s [[agent]] entry in the broker"
                " registry and run `tillpulse broker provision` (its queued rows then go"
                " through)"
            )
        else:
            fix = "the broker's log says why"
        return f"{refused}: {fix}. A row refused {MAX_REFUSED_TRIES} times is given up:{kept}"

    def _state(self, online: bool, reason: StateReason, ts_ns: int | None = None) -> bytes:
        return encode(
            DeviceState(
                site=self._site,
                device=self._device,
                ts=self._now_ns() if ts_ns is None else ts_ns,
                online=online,
                reason=reason,
            )
        )
