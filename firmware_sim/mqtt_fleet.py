"""Direct MQTT mode: every simulated device is its own MQTT client, as its agent would be.

One MQTT v5 connection per device (client id = device id, persistent session,
retained last will ``DeviceState(online=False, reason=last-will)``, retained
online state after CONNACK, QoS 1), all driven from one thread by a selector
over non-blocking sockets: no thread per client. The protocol is
firmware_sim.mqtt_session (sans-I/O, on the `mqtt5` codec); this module owns
the sockets and the loop. Per turn it reads each readable socket once, in one
big ``recv`` (all the PUBACKs that arrived), and writes each connection's
out-buffer with one ``send`` (all the publishes the turn queued), so a QoS 1
publish costs a few microseconds of codec work instead of paho's three ``recv``
calls, one ``send`` and the reason-code and properties objects per PUBACK
(BENCHMARKS.md, simulator scale).

Each device has its own queue and at most ``window`` unacknowledged publishes
(or the broker's Receive Maximum, if lower); the whole fleet holds at most
``max_backlog`` queued messages, and `handle` services the network until there
is room again, within ``drain_timeout_s``.

A "last will" change cuts the device's TCP connection without DISCONNECT, so
the broker itself publishes the last will; the next "connected" change
reconnects into the same session and sends again what was in flight. A
"shutdown" change publishes the retained shutdown state; if the device is
powered on again later in the run (a power cycle, firmware_sim.context), it
first waits for its publishes to be acknowledged and disconnects normally (the
broker discards the will), then connects anew.

With ``password``, every device logs in as itself (username = its device id)
with that password, for a broker that binds client ids to usernames
(``use_username_as_clientid``): then no client can take another's session.

A connection the broker refuses, closes or stops answering ends the run with
`MqttSimError` naming the device and the broker: a device that silently stops
publishing would make every later count wrong.
"""

from __future__ import annotations

import logging
import random
import selectors
import socket
import time
from typing import Final

import mqtt5

from firmware_sim.corruption import mangle_payload
from firmware_sim.errors import SimError
from firmware_sim.event_engine import Emission, LinkChange, SimEvent
from firmware_sim.mqtt_session import (
    ClosedByBroker,
    ConnectRefused,
    Phase,
    PublisherSession,
    SessionTimeout,
    reason_text,
)
from firmware_sim.report import RunStats
from runtime.backoff import Backoff
from runtime.cli import EXIT_FAILED
from runtime.logs import kv
from runtime.mqtt_packets import MqttProtocolError
from wire.messages import STREAM_FOR_MESSAGE, DeviceState, PaymentTransaction, StateReason, encode
from wire.topics import Stream, device_topic

log = logging.getLogger(__name__)

MISC_EVERY_S: Final = 1.0  # keepalives and CONNACK deadlines are checked this often
SESSION_EXPIRY_S: Final = 3600
KEEPALIVE_S: Final = 60
CONNACK_TIMEOUT_S: Final = 10.0
SERVICE_EVERY: Final = 4096  # events handed over between two rounds of network I/O
RECV_BYTES: Final = 65_536  # one read takes every PUBACK that arrived (5 bytes each)


class MqttSimError(SimError):
    """The broker cannot be reached, refused a device, or the fleet could not drain in
    time (exit 1)."""

    exit_code = EXIT_FAILED


class _Device:
    """One device's session, its socket (while connected) and its topics."""

    __slots__ = ("device", "session", "site", "sock", "state_topic", "topics", "watching_write")

    def __init__(self, session: PublisherSession, site: str, device: str) -> None:
        self.session = session
        self.site = site
        self.device = device
        self.state_topic = device_topic(site, device, Stream.STATE)
        self.topics: dict[type, str] = {}  # message type -> topic, built once
        self.sock: socket.socket | None = None
        self.watching_write = False


class MqttFleet:
    """A `Sink` that publishes every device's events through the device's own connection."""

    def __init__(
        self,
        host: str,
        port: int,
        stats: RunStats,
        *,
        window: int = 20,
        max_backlog: int = 50_000,
        drain_timeout_s: float = 60.0,
        connect_timeout_s: float = 30.0,
        seed: int = 0,
        password: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._password = password
        self.window = window
        self.max_backlog = max_backlog
        self.drain_timeout_s = drain_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._stats = stats
        self._devices: dict[str, _Device] = {}
        self._selector = selectors.DefaultSelector()
        self._backlog = 0  # queued + in flight, fleet-wide
        self._dirty: set[_Device] = set()  # connections with bytes to send
        self._handled = 0
        self._broken = False  # nothing will drain: close() only tears down
        self._next_misc = time.monotonic() + MISC_EVERY_S
        self._rng = random.Random(f"{seed}:mqtt")

    # -- Sink -------------------------------------------------------------------------

    def handle(self, event: SimEvent) -> None:
        if isinstance(event, LinkChange):
            self._link_change(event)
        else:
            self._enqueue_emission(event)
        self._handled += 1
        if self._handled % SERVICE_EVERY == 0:
            self._service(0.0)
        if self._backlog >= self.max_backlog:
            deadline = time.monotonic() + self.drain_timeout_s
            while self._backlog >= self.max_backlog:
                if time.monotonic() >= deadline:
                    raise self._failure(
                        f"the broker acknowledged nothing for {self.drain_timeout_s}s"
                        f" ({self._backlog} publishes waiting): stalled or gone"
                    )
                self._service(MISC_EVERY_S)

    def idle_until(self, deadline: float) -> None:
        while (now := time.monotonic()) < deadline:
            self._service(min(deadline - now, MISC_EVERY_S))

    def close(self) -> None:
        """Wait until every queued message is acknowledged, then disconnect everyone."""
        try:
            if not self._broken:  # else the broker is not there: nothing will drain
                self._drain_and_disconnect()
        finally:
            for device in self._devices.values():
                self._close_socket(device)
            self._selector.close()

    def _drain_and_disconnect(self) -> None:
        deadline = time.monotonic() + self.drain_timeout_s
        while self._backlog > 0 or self._connecting():
            if time.monotonic() >= deadline:
                raise self._failure(
                    f"{self._backlog} messages still unacknowledged after {self.drain_timeout_s}s"
                )
            self._service(0.1)
        for device in self._devices.values():
            if device.session.phase is Phase.ONLINE:
                device.session.disconnect()
                self._dirty.add(device)
        # the broker closes each connection once it has read the DISCONNECT (and drops the will)
        while any(d.sock is not None for d in self._devices.values()):
            if time.monotonic() >= deadline:
                break
            self._service(0.1)

    # -- events -----------------------------------------------------------------------

    def _enqueue_emission(self, emission: Emission) -> None:
        message = emission.message
        device = self._devices[message.device]
        topic = device.topics.get(type(message))
        if topic is None:
            stream = STREAM_FOR_MESSAGE[type(message)]
            topic = device.topics[type(message)] = device_topic(
                message.site, message.device, stream
            )
        payload = encode(message)
        if emission.corrupt:
            self._enqueue(device, topic, mangle_payload(payload, self._rng))
            if not isinstance(message, PaymentTransaction):
                return  # a damaged sample is lost; a payment is sent again
        self._enqueue(device, topic, payload)

    def _enqueue(self, device: _Device, topic: str, payload: bytes, retain: bool = False) -> None:
        device.session.queue.append((topic, payload, retain))
        self._backlog += 1
        self._pump(device)

    def _pump(self, device: _Device) -> None:
        published = device.session.pump()
        if published:
            self._stats.published += published
            self._dirty.add(device)

    def _link_change(self, change: LinkChange) -> None:
        device = self._devices.get(change.device)
        if change.reason is StateReason.CONNECTED:
            if device is None:
                device = self._devices[change.device] = self._new_device(change)
            elif device.sock is not None:  # powered on after a clean shutdown
                self._disconnect(device)
            self._connect(device, change)
        elif device is not None and change.reason is StateReason.LAST_WILL:
            self._cut(device)
        elif device is not None:
            # a clean stop, after everything queued: the agent says so itself, then
            # disconnects in close()
            self._enqueue(device, device.state_topic, encode(change.state()), retain=True)

    def _new_device(self, change: LinkChange) -> _Device:
        session = PublisherSession(
            change.device,
            window=self.window,
            keepalive_s=KEEPALIVE_S,
            session_expiry_s=SESSION_EXPIRY_S,
            connack_timeout_s=CONNACK_TIMEOUT_S,
            username=None if self._password is None else change.device,
            password=self._password,
        )
        return _Device(session, change.site, change.device)

    def _connect(self, device: _Device, change: LinkChange) -> None:
        will = DeviceState(
            site=change.site,
            device=change.device,
            ts=change.at_ns,
            online=False,
            reason=StateReason.LAST_WILL,
        )
        # the online state goes first once CONNACK arrives
        device.session.queue.appendleft((device.state_topic, encode(change.state()), True))
        self._backlog += 1
        sock = self._open_socket()
        sock.setblocking(False)
        # the out-buffer already batches a turn's packets: Nagle would only delay them
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        device.sock = sock
        device.watching_write = False
        self._selector.register(sock, selectors.EVENT_READ, device)
        device.session.connect(
            mqtt5.Will(
                device.state_topic, payload=encode(will), qos=mqtt5.QoS.AT_LEAST_ONCE, retain=True
            ),
            time.monotonic(),
        )
        # CONNECT goes out at once, while the broker accepts the connection: held for
        # the next turn, thousands reach it in one burst (10,000 connects took 10-18 s
        # that way instead of 3-5 s)
        self._dirty.add(device)
        self._flush()

    def _open_socket(self) -> socket.socket:
        """A TCP connection to the broker; one still starting (or restarting) is waited
        for, a bounded time."""
        deadline = time.monotonic() + self.connect_timeout_s
        backoff = Backoff(0.5, 5.0)
        self._broken = True  # until connected: if this never returns, close() has nothing to drain
        while True:
            try:
                sock = socket.create_connection(
                    (self.host, self.port), timeout=min(CONNACK_TIMEOUT_S, self.connect_timeout_s)
                )
                self._broken = False
                return sock
            except OSError as exc:
                delay = backoff.next_delay()
                if time.monotonic() + delay > deadline:
                    raise MqttSimError(
                        f"the broker at {self.host}:{self.port} is unreachable"
                        f" ({exc.strerror or exc}; tried for {self.connect_timeout_s:g}s):"
                        " start it, or check the address (--mqtt) and the firewall"
                    ) from exc
                log.warning(
                    "broker_unreachable",
                    extra=kv(
                        broker=f"{self.host}:{self.port}",
                        error=exc.strerror or str(exc),
                        retry_in_s=round(delay, 1),
                    ),
                )
                time.sleep(delay)

    def _cut(self, device: _Device) -> None:
        """Drop the TCP connection without DISCONNECT: the broker fires the last will.

        A will exists only once the broker accepted the connection, so a device
        still waiting for its CONNACK (possible when running as fast as possible)
        gets it first. The PUBACKs that already arrived are counted; what is still
        in flight is sent again after the reconnect."""
        while device.session.phase is Phase.CONNECTING:
            self._service(0.05)  # bounded: the CONNACK deadline raises
        sock = device.sock
        if sock is None:
            return
        sock.shutdown(socket.SHUT_RDWR)
        while True:
            try:
                data = sock.recv(RECV_BYTES)
            except OSError:  # nothing more (or reset): the connection is gone anyway
                break
            if not data:
                break
            self._received(device, data)
        device.session.lost()
        self._close_socket(device)
        log.info("device_cut_off", extra=kv(device=device.device))

    def _disconnect(self, device: _Device) -> None:
        """Once everything the device queued is acknowledged, DISCONNECT normally."""
        session = device.session
        deadline = time.monotonic() + self.drain_timeout_s
        while not session.idle or session.phase is Phase.CONNECTING:
            if time.monotonic() >= deadline:
                raise self._failure(
                    f"device {device.device}: {len(session.queue) + session.inflight} publishes"
                    f" unacknowledged after {self.drain_timeout_s}s"
                )
            self._service(0.05)
        session.disconnect()
        self._dirty.add(device)
        while device.sock is not None:  # the broker closes it once it has read DISCONNECT
            if time.monotonic() >= deadline:
                raise self._failure(f"device {device.device}: DISCONNECT not done in time")
            self._service(0.05)

    # -- the loop ---------------------------------------------------------------------

    def _service(self, timeout: float) -> None:
        self._flush()
        for key, mask in self._selector.select(timeout):
            device: _Device = key.data
            if mask & selectors.EVENT_READ:
                self._read(device)
            if mask & selectors.EVENT_WRITE:
                self._dirty.add(device)
        self._flush()
        now = time.monotonic()
        if now >= self._next_misc:
            self._next_misc = now + MISC_EVERY_S
            self._check_timers(now)

    def _read(self, device: _Device) -> None:
        sock = device.sock
        if sock is None:  # closed earlier in this turn
            return
        try:
            data = sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError as exc:
            self._closed(device, exc.strerror or str(exc))
            return
        if not data:
            self._closed(device, "connection closed")
            return
        self._received(device, data)
        self._pump(device)
        if device.session.out:  # also what a CONNACK had sent again, with the window full
            self._dirty.add(device)

    def _received(self, device: _Device, data: bytes) -> None:
        try:
            acknowledged, refused = device.session.receive(data)
        except ConnectRefused as exc:
            # not authorised, banned, a bad client id: retrying cannot help, so the run ends
            who = (
                f"the login of username {device.device}"
                if self._password is not None
                else f"device {device.device} (no username and password given)"
            )
            raise self._failure(
                f"the broker at {self.host}:{self.port} refused {who}: {reason_text(exc.reason)}:"
                " check the devices' password and the broker's accounts"
            ) from None
        except ClosedByBroker as exc:
            raise self._lost(device, f"DISCONNECT {reason_text(exc.reason)}") from None
        except MqttProtocolError as exc:
            raise self._failure(
                f"the broker at {self.host}:{self.port} sent device {device.device} {exc}:"
                " check that --mqtt names an MQTT v5 broker"
            ) from None
        if acknowledged or refused:
            self._stats.acknowledged += acknowledged
            self._stats.refused += refused
            self._backlog -= acknowledged + refused

    def _flush(self) -> None:
        """One ``send`` per connection with bytes waiting; watch for writability only
        while a socket is full."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        now = time.monotonic()
        for device in dirty:
            sock = device.sock
            out = device.session.out
            if sock is None or not out:
                continue
            try:
                sent = sock.send(out)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise self._lost(device, exc.strerror or str(exc)) from exc
            if sent:
                del out[:sent]
                device.session.sent(now)
            wants = bool(out)
            if wants != device.watching_write:
                device.watching_write = wants
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if wants else 0)
                self._selector.modify(sock, events, device)

    def _check_timers(self, now: float) -> None:
        for device in self._devices.values():
            if device.sock is None:
                continue
            try:
                device.session.check_timers(now)
            except SessionTimeout as exc:
                raise self._failure(
                    f"the broker at {self.host}:{self.port} stopped answering device"
                    f" {device.device} ({exc}): is it overloaded, or at its max_connections?"
                ) from None
            if device.session.out:
                self._dirty.add(device)

    def _connecting(self) -> bool:
        return any(d.session.phase is Phase.CONNECTING for d in self._devices.values())

    def _close_socket(self, device: _Device) -> None:
        if device.sock is None:
            return
        self._selector.unregister(device.sock)
        device.sock.close()
        device.sock = None

    def _closed(self, device: _Device, why: str) -> None:
        """The broker closed the connection: as asked after our DISCONNECT, else a failure."""
        if device.session.phase is not Phase.OFFLINE:
            raise self._lost(device, why)
        self._close_socket(device)

    def _lost(self, device: _Device, why: str) -> MqttSimError:
        connecting = device.session.phase is Phase.CONNECTING
        return self._failure(
            f"the broker at {self.host}:{self.port} dropped the connection of device"
            f" {device.device}{' before its CONNACK' if connecting else ''} ({why}):"
            " see the broker's log (max_connections? its client id taken over?)"
        )

    def _failure(self, text: str) -> MqttSimError:
        """The run cannot go on: close() will tear down instead of waiting for a drain."""
        self._broken = True
        return MqttSimError(text)
