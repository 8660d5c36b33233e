"""One serial device -> the outbox, with a LinkAck back once each event is durable.

A `SerialSource` owns one port (one device). It reads whatever arrives,
feeds `wire.framing.FrameDecoder`, decodes each frame as a `wire.messages`
message and stores it in the outbox; only then does it answer the device with
a framed `LinkAck(device, stream, seq)` (a device counts each stream on its
own, so the stream is part of what is acknowledged), so a payment the agent
has not made durable is still held, and re-sent, by the terminal. Payments go
in at high priority (never dropped); status and sensor samples at low priority.

Bad input never stops the port: corrupt frames are counted by the decoder; a
frame that is not a valid message (wire.messages refuses oversized and deeply
nested ones before parsing) is counted and kept in the dead-letter file
(`runtime.deadletters`); a payload carrying a card number is counted and logged
without its digits, and not kept anywhere: every frame is scanned raw
(`wire.pci.payload_contains_pan`) before it may be kept, whatever failed first.
Anything unexpected while handling a frame is counted (``errors``), logged, and
the frame kept on the same terms; the port goes on with the next frame. A
device that disappears (USB unplugged) is reopened with capped backoff until it
comes back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

import msgspec
import serial

from edge.errors import OutboxFullError
from edge.outbox import Entry, PutOutcome, PutResult, priority_for
from runtime.backoff import Backoff
from runtime.deadletters import DeadLetters
from runtime.logs import kv
from wire import pci
from wire.errors import MessageDecodeError, PanDetectedError
from wire.framing import FrameDecoder, FrameStats, encode_frame
from wire.messages import (
    STREAM_FOR_MESSAGE,
    LinkAck,
    PaymentTransaction,
    SensorReading,
    TerminalStatus,
    decode,
    encode,
)
from wire.topics import Stream, device_topic

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.1
REOPEN_MIN_S = 0.2
REOPEN_MAX_S = 10.0
SerialMessage = PaymentTransaction | TerminalStatus | SensorReading


class Outbox(Protocol):
    def put_many(self, entries: Sequence[Entry]) -> list[PutResult]: ...


class SourceStats(msgspec.Struct, kw_only=True):
    port: str
    open: bool = False
    opens: int = 0
    stored: int = 0
    duplicates: int = 0  # re-sent by the device, already in the outbox: acked again
    dropped: int = 0  # low-priority samples refused by a full outbox (counted there too)
    invalid: int = 0  # frames that are not valid messages (kept as dead letters)
    pci_refused: int = 0  # payloads with a card number: counted, never kept
    wrong_site: int = 0
    backpressure: int = 0  # outbox full: not acked, the device re-sends later
    ack_timeouts: int = 0  # LinkAcks the device did not read in time (it re-sends)
    errors: int = 0  # frames whose handling failed unexpectedly (logged, kept if allowed)
    frames: FrameStats | None = None


class SerialSource:
    def __init__(
        self,
        port: str,
        baudrate: int,
        *,
        site: str,
        outbox: Outbox,
        deadletters: DeadLetters,
        open_port: Callable[[str, int], serial.Serial] | None = None,
    ) -> None:
        self._port = port
        self._baudrate = baudrate
        self._site = site
        self._outbox = outbox
        self._deadletters = deadletters
        self._open_port = open_port or _open_serial
        self._decoder = FrameDecoder()
        self.stats = SourceStats(port=port)

    def run(self, stop: threading.Event) -> None:
        backoff = Backoff(REOPEN_MIN_S, REOPEN_MAX_S)
        while not stop.is_set():
            try:
                link = self._open_port(self._port, self._baudrate)
            except (serial.SerialException, OSError) as exc:
                if backoff.attempt == 0:  # once per outage, not once per retry
                    log.warning("serial_unavailable", extra=kv(port=self._port, error=str(exc)))
                stop.wait(backoff.next_delay())
                continue
            backoff.reset()
            self._pump(link, stop)

    def _pump(self, link: serial.Serial, stop: threading.Event) -> None:
        self.stats.open = True
        self.stats.opens += 1
        self._decoder = FrameDecoder()  # a reopened port starts mid-stream
        log.info("serial_opened", extra=kv(port=self._port, baudrate=self._baudrate))
        try:
            while not stop.is_set():
                data = link.read(max(1, link.in_waiting))
                acks = self.handle_frames(self._decoder.feed(data))
                if acks:
                    self._send_acks(link, acks)
                self.stats.frames = self._decoder.stats
        except (serial.SerialException, OSError) as exc:
            log.warning("serial_lost", extra=kv(port=self._port, error=str(exc)))
        finally:
            self.stats.open = False
            link.close()

    def _send_acks(self, link: serial.Serial, acks: bytes) -> None:
        """Write LinkAcks; a device slow to read them is slow, not gone.

        Closing and reopening the port would discard what the device sent
        meanwhile (pyserial flushes the input on open) for nothing: the messages
        are stored already, and a payment whose ack did not get through is sent
        again by the device and acknowledged then.
        """
        try:
            link.write(acks)
        except serial.SerialTimeoutException:
            self.stats.ack_timeouts += 1
            log.warning("serial_ack_timeout", extra=kv(port=self._port, bytes=len(acks)))

    def handle_frames(self, payloads: list[bytes]) -> bytes:
        """Store the messages of one read in one outbox transaction (one fsync).

        Returns the framed LinkAcks to send back, one per stored (or already
        stored) message; nothing for rejected frames, and nothing at all when
        the outbox is full, so the device keeps its payments and re-sends them.
        """
        entries = [entry for entry in map(self._entry, payloads) if entry is not None]
        if not entries:
            return b""
        try:
            results = self._outbox.put_many([entry for entry, _ in entries])
        except OutboxFullError as exc:
            self.stats.backpressure += len(entries)
            log.warning(
                "outbox_full", extra=kv(port=self._port, frames=len(entries), error=str(exc))
            )
            return b""
        acks = []
        for (entry, stream), result in zip(entries, results, strict=True):
            if result.outcome is PutOutcome.STORED:
                self.stats.stored += 1
            elif result.outcome is PutOutcome.DUPLICATE:
                self.stats.duplicates += 1
            else:
                self.stats.dropped += 1
            assert entry.seq is not None  # every serial message carries one
            ack = LinkAck(device=entry.device, stream=stream, seq=entry.seq)
            acks.append(encode_frame(encode(ack)))
        return b"".join(acks)

    def _entry(self, payload: bytes) -> tuple[Entry, Stream] | None:
        """The outbox entry for one frame and its stream, or None (counted, kept if allowed)."""
        try:
            return self._decoded_entry(payload)
        except Exception as exc:  # last resort: no frame may stop the port
            self.stats.errors += 1
            reason = f"unexpected {type(exc).__name__} handling the frame: {exc}"
            log.exception("frame_error", extra=kv(port=self._port))
            self._reject(payload, reason)
            return None

    def _decoded_entry(self, payload: bytes) -> tuple[Entry, Stream] | None:
        try:
            message = decode(payload)
        except PanDetectedError as exc:
            self._refuse_card_number(str(exc))
            return None
        except MessageDecodeError as exc:
            self._reject(payload, str(exc))
            return None
        if not isinstance(message, SerialMessage):
            self._reject(payload, f"{type(message).__name__} is not sent over serial")
            return None
        if message.site != self._site:
            self.stats.wrong_site += 1
            self._reject(payload, f"site {message.site!r} is not this agent's {self._site!r}")
            return None
        stream = STREAM_FOR_MESSAGE[type(message)]
        topic = device_topic(message.site, message.device, stream)
        return Entry(topic, payload, priority_for(stream), message.device, message.seq), stream

    def _reject(self, payload: bytes, reason: str) -> None:
        """Count a frame and keep it as a dead letter, unless its raw bytes hold a card number.

        The decoder refuses a card number before parsing, but a frame can fail
        a limit (nesting) or something unexpected before that scan ran.
        """
        if pci.payload_contains_pan(payload):
            self._refuse_card_number("a rejected frame holds a card number; not kept")
            return
        self.stats.invalid += 1
        self._deadletters.keep(payload, reason=reason, source=self._port)
        log.warning("invalid_frame", extra=kv(port=self._port, reason=reason))

    def _refuse_card_number(self, reason: str) -> None:
        self.stats.pci_refused += 1
        log.error("pci_refused", extra=kv(port=self._port, reason=reason))


def _open_serial(port: str, baudrate: int) -> serial.Serial:
    return serial.Serial(port, baudrate, timeout=READ_TIMEOUT_S, write_timeout=1.0)
