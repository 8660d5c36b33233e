"""Direct MQTT mode: every simulated device is its own MQTT client, as its agent would be.

One paho-mqtt client per device (MQTT v5, client id = device id, persistent
session, retained last will ``DeviceState(online=False, reason=last-will)``,
retained online state after CONNACK, QoS 1), all driven from one thread by a
selector over their sockets (paho's external-loop API: ``loop_read``,
``loop_write``, ``loop_misc`` and the socket callbacks): no thread per client.

Each device has its own queue and at most ``window`` unacknowledged publishes
(PUBACKs are counted in ``on_publish``): a paho client holding tens of
thousands of QoS 1 messages stalls silently (DESIGN.md, traps). The whole
fleet holds at most ``max_backlog`` queued messages; `handle` services the
network until there is room again.

Only paho's public API is used: the clients are plain ``paho.mqtt.client.Client``
objects, no subclass and no private attribute (tests/firmware_sim/test_mqtt_fleet.py
checks it). What keeps the CPU per QoS 1 publish down (bench/sim_scale.py):

* paho's own in-flight limit is off (``max_inflight_messages_set(0)``): with it,
  every PUBACK makes paho walk all the client's stored messages looking for a
  queued one to send. The window is this module's (``_pump`` publishes only
  while a device has fewer than ``window`` unacknowledged), and paho's queue
  limit (``max_queued_messages_set(window + 1)``: in ``on_publish`` paho still
  holds the message just acknowledged) turns a broken window into an error
  instead of a silent pile-up.
* Writes are deferred (``on_socket_register_write``) and done in one pass per
  turn for every client with packets queued, ``SERVICE_EVERY`` events being
  handed over between two rounds of network I/O.

The price of the public API, measured against the former subclass that
overrode paho's socket reads and writes and its PUBACK decoding: paho reads
every packet with three ``recv`` calls, sends every packet with its own
``send``, and builds a ``ReasonCode`` and a ``Properties`` object per PUBACK
(BENCHMARKS.md, simulator scale).

A "last will" change cuts the device's TCP connection without DISCONNECT, so
the broker itself publishes the last will; the next "connected" change
reconnects into the same session. A "shutdown" change publishes the retained
shutdown state; if the device is powered on again later in the run (a power
cycle, firmware_sim.context), its client first waits for its publishes to be
acknowledged and disconnects normally (the broker discards the will), then
connects anew.

With ``password``, every device logs in as itself (username = its device id)
with that password, for a broker that binds client ids to usernames
(``use_username_as_clientid``): then no client can take another's session.
"""

from __future__ import annotations

import logging
import random
import selectors
import socket
import time
from collections import deque
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware_sim.corruption import mangle_payload
from firmware_sim.errors import SimError
from firmware_sim.event_engine import Emission, LinkChange, SimEvent
from firmware_sim.report import RunStats
from runtime.backoff import Backoff
from runtime.cli import EXIT_FAILED
from runtime.logs import kv
from wire.messages import STREAM_FOR_MESSAGE, DeviceState, PaymentTransaction, StateReason, encode
from wire.topics import Stream, device_topic

log = logging.getLogger(__name__)

MISC_EVERY_S: Final = 1.0
SESSION_EXPIRY_S: Final = 3600
KEEPALIVE_S: Final = 60
CONNACK_TIMEOUT_S: Final = 10.0
SERVICE_EVERY: Final = 4096  # events handed over between two rounds of network I/O


class MqttSimError(SimError):
    """The broker cannot be reached, refused a device, or the fleet could not drain in
    time (exit 1)."""

    exit_code = EXIT_FAILED


class _Device:
    """One device's MQTT client and its own queue of (topic, payload, retain)."""

    __slots__ = (
        "client",
        "connected",
        "device",
        "inflight",
        "queue",
        "site",
        "state_topic",
        "topics",
        "watching_write",
    )

    def __init__(self, client: mqtt.Client, site: str, device: str) -> None:
        self.client = client
        self.site = site
        self.device = device
        self.state_topic = device_topic(site, device, Stream.STATE)
        self.topics: dict[type, str] = {}  # message type -> topic, built once
        self.queue: deque[tuple[str, bytes, bool]] = deque()
        self.inflight = 0
        self.connected = False
        self.watching_write = False


class MqttFleet:
    """A `Sink` that publishes every device's events through the device's own client."""

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
        self._refused: MqttSimError | None = None  # a CONNACK refusal, raised by _service
        self._stats = stats
        self._devices: dict[str, _Device] = {}
        self._selector = selectors.DefaultSelector()
        self._backlog = 0  # queued + in flight, fleet-wide
        self._dirty: set[_Device] = set()  # clients with packets queued by paho
        self._handled = 0
        self._broken = False
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
                    raise MqttSimError(
                        f"the broker acknowledged nothing for {self.drain_timeout_s}s"
                        f" ({self._backlog} publishes waiting): stalled or gone"
                    )
                self._service(MISC_EVERY_S)

    def idle_until(self, deadline: float) -> None:
        while (now := time.monotonic()) < deadline:
            self._service(min(deadline - now, MISC_EVERY_S))

    def close(self) -> None:
        """Wait until every queued message is acknowledged, then disconnect everyone."""
        if self._broken:  # the broker is not there: nothing will drain
            self._selector.close()
            return
        deadline = time.monotonic() + self.drain_timeout_s
        while self._backlog > 0 or self._connecting():
            if time.monotonic() >= deadline:
                raise MqttSimError(
                    f"{self._backlog} messages still unacknowledged after {self.drain_timeout_s}s"
                )
            self._service(0.1)
        for device in self._devices.values():
            if device.connected:
                device.client.disconnect()
        while any(d.client.socket() is not None for d in self._devices.values()):
            if time.monotonic() >= deadline:
                break
            self._service(0.1)
        self._selector.close()

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
        device.queue.append((topic, payload, retain))
        self._backlog += 1
        self._pump(device)

    def _link_change(self, change: LinkChange) -> None:
        device = self._devices.get(change.device)
        if change.reason is StateReason.CONNECTED:
            if device is None:
                device = self._devices[change.device] = self._new_client(change)
            elif device.connected:  # powered on after a clean shutdown
                self._disconnect(device)
            self._connect(device, change)
        elif device is not None and change.reason is StateReason.LAST_WILL:
            self._cut(device)
        elif device is not None:
            # a clean stop, after everything queued: the agent says so itself, then
            # disconnects in close()
            self._enqueue(device, device.state_topic, encode(change.state()), retain=True)

    def _new_client(self, change: LinkChange) -> _Device:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=change.device,
            protocol=mqtt.MQTTv5,
        )
        if self._password is not None:
            client.username_pw_set(change.device, self._password)
        device = _Device(client, change.site, change.device)
        client.user_data_set(device)
        client.max_inflight_messages_set(0)  # the window is ours (_pump): see the docstring
        client.max_queued_messages_set(self.window + 1)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        return device

    def _connect(self, device: _Device, change: LinkChange) -> None:
        will = DeviceState(
            site=change.site,
            device=change.device,
            ts=change.at_ns,
            online=False,
            reason=StateReason.LAST_WILL,
        )
        device.client.will_set(device.state_topic, encode(will), qos=1, retain=True)
        # the online state goes first once CONNACK arrives
        device.queue.appendleft((device.state_topic, encode(change.state()), True))
        self._backlog += 1
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        # a broker still starting (or restarting) is waited for, a bounded time
        deadline = time.monotonic() + self.connect_timeout_s
        backoff = Backoff(0.5, 5.0)
        self._broken = True  # until connected: if this never returns, close() has nothing to drain
        while True:
            try:
                device.client.connect(
                    self.host,
                    self.port,
                    keepalive=KEEPALIVE_S,
                    clean_start=False,
                    properties=properties,
                )
                self._broken = False
                return
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
        gets it first."""
        deadline = time.monotonic() + CONNACK_TIMEOUT_S
        while device.client.socket() is not None and not device.connected:
            if time.monotonic() >= deadline:
                raise MqttSimError(f"device {device.device}: no CONNACK in {CONNACK_TIMEOUT_S}s")
            self._service(0.05)
        sock = device.client.socket()
        if not isinstance(sock, socket.socket):
            return
        sock.shutdown(socket.SHUT_RDWR)
        # paho reads what the socket still holds, then sees the connection gone and closes it
        while device.client.socket() is not None:
            device.client.loop_read()
        device.connected = False
        log.info("device_cut_off", extra=kv(device=device.device))

    def _disconnect(self, device: _Device) -> None:
        """Once everything the device queued is acknowledged, DISCONNECT normally."""
        deadline = time.monotonic() + self.drain_timeout_s
        while device.queue or device.inflight:
            if time.monotonic() >= deadline:
                raise MqttSimError(
                    f"device {device.device}: {len(device.queue) + device.inflight} publishes"
                    f" unacknowledged after {self.drain_timeout_s}s"
                )
            self._service(0.05)
        device.client.disconnect()
        while device.client.socket() is not None:
            if time.monotonic() >= deadline:
                raise MqttSimError(f"device {device.device}: DISCONNECT not done in time")
            self._service(0.05)

    def _pump(self, device: _Device) -> None:
        """Publish from the device's queue while its window has room."""
        if not device.connected:
            return
        client = device.client
        queue = device.queue
        while queue and device.inflight < self.window:
            topic, payload, retain = queue.popleft()
            # QoS 1: paho keeps the message until PUBACK, also across a reconnect
            info = client.publish(topic, payload, qos=1, retain=retain)
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:  # the window is broken: a bug
                raise MqttSimError(
                    f"device {device.device}: paho refused a publish, its queue is full"
                    f" ({device.inflight} in flight, window {self.window})"
                )
            device.inflight += 1
            self._stats.published += 1

    # -- the loop ---------------------------------------------------------------------

    def _service(self, timeout: float) -> None:
        self._flush()
        for key, mask in self._selector.select(timeout):
            device: _Device = key.data
            if mask & selectors.EVENT_READ:
                # up to one packet per message paho holds; more stay readable for next turn
                device.client.loop_read()
            if mask & selectors.EVENT_WRITE:
                self._dirty.add(device)
        if self._refused is not None:
            self._broken = True
            raise self._refused
        self._flush()
        now = time.monotonic()
        if now >= self._next_misc:
            self._next_misc = now + MISC_EVERY_S
            for device in self._devices.values():
                device.client.loop_misc()

    def _flush(self) -> None:
        """Write what paho queued for each client; watch for writability only while a
        socket is full. paho queues instead of writing because ``on_socket_register_write``
        is set: the writes of a burst of events then go out in one pass."""
        dirty, self._dirty = self._dirty, set()
        for device in dirty:
            client = device.client
            sock = client.socket()
            if sock is None:
                continue
            client.loop_write()
            wants = client.want_write()
            if wants != device.watching_write:
                device.watching_write = wants
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if wants else 0)
                self._selector.modify(sock, events, device)
        self._dirty.clear()  # only re-registrations by the writes just done

    def _connecting(self) -> bool:
        return any(
            d.client.socket() is not None and not d.connected for d in self._devices.values()
        )

    # -- paho callbacks ---------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, device: _Device, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            # not authorised, banned, a bad client id: retrying cannot help, so the run ends
            who = (
                f"the login of username {device.device}"
                if self._password is not None
                else f"device {device.device} (no username and password given)"
            )
            self._refused = MqttSimError(
                f"the broker at {self.host}:{self.port} refused {who}: {reason}:"
                " check the devices' password and the broker's accounts"
            )
            return
        device.connected = True
        self._pump(device)

    def _on_disconnect(
        self, client: mqtt.Client, device: _Device, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        device.connected = False

    def _on_publish(
        self, client: mqtt.Client, device: _Device, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        device.inflight -= 1
        self._backlog -= 1
        if reason.is_failure:
            self._stats.refused += 1
        else:
            self._stats.acknowledged += 1
        self._pump(device)

    def _on_socket_open(self, client: mqtt.Client, device: _Device, sock: Any) -> None:
        device.watching_write = False
        self._selector.register(sock, selectors.EVENT_READ, device)

    def _on_socket_close(self, client: mqtt.Client, device: _Device, sock: Any) -> None:
        self._selector.unregister(sock)

    def _on_register_write(self, client: mqtt.Client, device: _Device, sock: Any) -> None:
        self._dirty.add(device)  # written in the next _flush, together with the others
