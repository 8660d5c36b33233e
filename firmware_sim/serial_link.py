"""The firmware side of a real serial link: a device speaking wire framing over a pty.

`SerialDevice` opens a pseudo-terminal pair in raw mode and plays the device
on the master side; the edge agent opens ``device.port`` (the slave path)
with pyserial. Link contract (wire.messages.LinkAck): the agent answers each
device message with a framed ``LinkAck(device, stream, seq)`` once it is
durable; the device keeps each payment until a payment ack with its seq
arrives (a device counts each stream on its own, so a status ack with the same
seq releases nothing) and sends it again after ``retransmit_s`` (at most
``queue_limit`` unacknowledged: the terminal's offline queue); status and
sensor samples are never re-sent, and are dropped (and counted) if the line is
backed up.

Damage on demand: `corrupt_next` corrupts the next n frames, `inject_noise`
puts bursts of noise on the line. Each is built to be rejected by the
receiver's `FrameDecoder` as exactly one bad frame, and counted here.

`SerialFleet` is the `Sink` that drives one `SerialDevice` per simulated device
from one thread with a selector.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import selectors
import sys
import termios
import time
import tty
from collections import OrderedDict
from typing import Final

from firmware_sim.corruption import corrupt_frame, noise_burst
from firmware_sim.errors import LinkError
from firmware_sim.event_engine import LinkChange, SimEvent, SimMessage
from runtime.logs import kv
from wire.errors import MessageDecodeError
from wire.framing import FrameDecoder, encode_frame
from wire.messages import LinkAck, PaymentTransaction, decode_as, encode
from wire.topics import Stream

log = logging.getLogger(__name__)

READ_SIZE: Final = 65536
MAX_PENDING_BYTES: Final = 256 * 1024  # line backed up: samples beyond this are dropped


class SerialDevice:
    """One device's end of a pty serial link (not thread-safe: one thread drives it)."""

    def __init__(
        self,
        device: str,
        *,
        retransmit_s: float = 2.0,
        queue_limit: int = 500,
        seed: int = 0,
    ) -> None:
        self.device = device
        self.retransmit_s = retransmit_s
        self.queue_limit = queue_limit
        try:
            self._master, self._slave = os.openpty()
        except OSError as exc:
            raise LinkError(f"cannot open a pty for {device}: {exc}") from exc
        tty.setraw(self._slave)  # no echo, no line editing, no CR/LF translation
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._rng = random.Random(f"{seed}:serial:{device}")
        self._decoder = FrameDecoder()
        # unacknowledged payments by their seq (the payment stream's counter), oldest first
        self._unacked: OrderedDict[int, tuple[bytes, float]] = OrderedDict()
        self._pending = bytearray()
        self._corrupt_budget = 0
        self.frames_sent = 0
        self.frames_corrupted = 0
        self.noise_bursts = 0
        self.retransmits = 0
        self.acks = 0
        self.samples_dropped = 0
        self.bad_replies = 0

    def fileno(self) -> int:
        return self._master

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    @property
    def has_room(self) -> bool:
        return len(self._unacked) < self.queue_limit

    @property
    def wants_write(self) -> bool:
        return bool(self._pending)

    @property
    def idle(self) -> bool:
        """Nothing left to write, nothing unread by the agent, nothing unacknowledged."""
        return not self._pending and not self._unacked and self._unread() == 0

    def _unread(self) -> int:
        """Bytes on the line the agent has not read yet (the slave side's input queue)."""
        queued = fcntl.ioctl(self._slave, termios.FIONREAD, b"\0\0\0\0")
        return int.from_bytes(queued, sys.byteorder)

    def send(self, message: SimMessage, *, corrupt: bool = False) -> None:
        """Frame and send ``message``; a payment is kept until acknowledged."""
        payload = encode(message)
        is_payment = isinstance(message, PaymentTransaction)
        if not is_payment and len(self._pending) > MAX_PENDING_BYTES:
            self.samples_dropped += 1
            return
        if corrupt or self._corrupt_budget > 0:
            self._corrupt_budget = max(0, self._corrupt_budget - 1)
            self.frames_corrupted += 1
            frame = corrupt_frame(payload, self._rng)
        else:
            frame = encode_frame(payload)
        if isinstance(message, PaymentTransaction):
            self._unacked[message.seq] = (payload, time.monotonic())
            self._unacked.move_to_end(message.seq)  # a duplicate send restarts its timer
        self._write(frame)

    def corrupt_next(self, frames: int) -> None:
        """Corrupt the next ``frames`` frames sent (first sends and re-sends alike)."""
        self._corrupt_budget += frames

    def inject_noise(self, bursts: int = 1) -> None:
        for _ in range(bursts):
            self.noise_bursts += 1
            self._pending += noise_burst(self._rng)
        self.flush()

    def flush(self) -> None:
        """Write what the line takes now (the pty buffer is finite)."""
        while self._pending:
            try:
                written = os.write(self._master, self._pending)
            except BlockingIOError:
                return
            del self._pending[:written]

    def on_readable(self) -> None:
        """Read acknowledgements from the agent."""
        try:
            data = os.read(self._master, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        for payload in self._decoder.feed(data):
            try:
                reply = decode_as(payload, LinkAck)
            except MessageDecodeError:
                self.bad_replies += 1
                continue
            if reply.device == self.device:
                self.acks += 1
                if reply.stream is Stream.PAYMENT:  # samples are not kept: nothing to release
                    self._unacked.pop(reply.seq, None)
            else:
                self.bad_replies += 1

    def retransmit(self, now: float) -> None:
        """Send again every payment unacknowledged for ``retransmit_s``."""
        for seq, (payload, sent_at) in list(self._unacked.items()):
            if now - sent_at < self.retransmit_s:
                break  # oldest first: the rest are younger
            self.retransmits += 1
            self._unacked[seq] = (payload, now)
            self._unacked.move_to_end(seq)
            if self._corrupt_budget > 0:
                self._corrupt_budget -= 1
                self.frames_corrupted += 1
                self._write(corrupt_frame(payload, self._rng))
            else:
                self._write(encode_frame(payload))

    def next_retransmit(self) -> float | None:
        for _, sent_at in self._unacked.values():
            return sent_at + self.retransmit_s
        return None

    def close(self) -> None:
        os.close(self._master)
        os.close(self._slave)

    def _write(self, frame: bytes) -> None:
        self.frames_sent += 1
        self._pending += frame
        self.flush()


class SerialFleet:
    """A `Sink` that sends each device's events over its own pty link.

    Connection changes are the agent's business (its MQTT link), not the serial
    line's, so they are not sent; payments taken offline arrive flagged as such.
    """

    def __init__(
        self,
        devices: list[str],
        *,
        retransmit_s: float = 2.0,
        queue_limit: int = 500,
        drain_timeout_s: float = 30.0,
        seed: int = 0,
    ) -> None:
        self.devices = {
            name: SerialDevice(name, retransmit_s=retransmit_s, queue_limit=queue_limit, seed=seed)
            for name in devices
        }
        self.drain_timeout_s = drain_timeout_s
        self._selector = selectors.DefaultSelector()
        for device in self.devices.values():
            self._selector.register(device, selectors.EVENT_READ, device)

    def ports(self) -> dict[str, str]:
        return {name: device.port for name, device in self.devices.items()}

    def handle(self, event: SimEvent) -> None:
        if isinstance(event, LinkChange):
            return
        device = self.devices[event.message.device]
        if not device.has_room:  # the terminal's store is full: wait for the agent
            log.warning(
                "serial_store_full",
                extra=kv(device=device.device, unacked=device.unacked, port=device.port),
            )
            while not device.has_room:
                self._service(0.1)
        device.send(event.message, corrupt=event.corrupt)

    def idle_until(self, deadline: float) -> None:
        while (now := time.monotonic()) < deadline:
            self._service(deadline - now)

    def close(self) -> None:
        deadline = time.monotonic() + self.drain_timeout_s
        try:
            while not all(d.idle for d in self.devices.values()):
                if time.monotonic() >= deadline:
                    waiting = {n: d.unacked for n, d in self.devices.items() if d.unacked}
                    raise LinkError(f"payments still unacknowledged at close: {waiting}")
                self._service(0.05)
        finally:
            self._selector.close()
            for device in self.devices.values():
                log.info(
                    "serial_link_closed",
                    extra=kv(
                        device=device.device,
                        frames_sent=device.frames_sent,
                        corrupted=device.frames_corrupted,
                        noise_bursts=device.noise_bursts,
                        retransmits=device.retransmits,
                        acks=device.acks,
                        samples_dropped=device.samples_dropped,
                    ),
                )
                device.close()

    def _service(self, timeout: float) -> None:
        now = time.monotonic()
        due = [t for d in self.devices.values() if (t := d.next_retransmit()) is not None]
        if due:
            timeout = max(0.0, min(timeout, min(due) - now))
        for device in self.devices.values():
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if device.wants_write else 0)
            self._selector.modify(device, events, device)
        for key, mask in self._selector.select(timeout):
            device = key.data
            if mask & selectors.EVENT_READ:
                device.on_readable()
            if mask & selectors.EVENT_WRITE:
                device.flush()
        now = time.monotonic()
        for device in self.devices.values():
            device.retransmit(now)
