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

The clients are a thin subclass of paho's (`_Client`): buffered reads, writes
joined per turn, and PUBACKs decoded without per-message objects; with
``SERVICE_EVERY`` events handed over between two rounds of network I/O that
roughly halves the CPU per QoS 1 publish (bench/sim_scale.py).

A "last will" change cuts the device's TCP connection without DISCONNECT, so
the broker itself publishes the last will; the next "connected" change
reconnects into the same session.

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
from runtime.logs import kv
from wire.messages import STREAM_FOR_MESSAGE, DeviceState, PaymentTransaction, StateReason, encode
from wire.topics import Stream, device_topic

log = logging.getLogger(__name__)

MISC_EVERY_S: Final = 1.0
SESSION_EXPIRY_S: Final = 3600
KEEPALIVE_S: Final = 60
CONNACK_TIMEOUT_S: Final = 10.0
SERVICE_EVERY: Final = 4096  # events handed over between two rounds of network I/O (see _Client)
RECV_CHUNK: Final = 65_536
SEND_CHUNK: Final = 65_536  # bytes of queued packets joined into one send
_PUBLISH: Final = 0x30
_DISCONNECT: Final = 0xE0


class MqttSimError(SimError):
    """The broker cannot be reached, or the fleet could not drain in time."""


_NO_PROPERTIES: Final = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]
_PUBACK_REASONS: dict[int, ReasonCode] = {}  # reason byte -> a shared ReasonCode


def _puback_reason(value: int) -> ReasonCode:
    reason = _PUBACK_REASONS.get(value)
    if reason is None:
        reason = ReasonCode(PacketTypes.PUBACK, identifier=value)
        _PUBACK_REASONS[value] = reason
    return reason


class _Client(mqtt.Client):
    """paho's client with its per-message hot paths made cheaper (bench/sim_scale.py).

    * Reads are buffered: paho reads every packet with three ``recv`` calls (type
      byte, length byte, body); here one ``recv`` of up to 64 KiB serves them all.
      Whoever drives the loop must call `loop_read` again while `buffered` is true:
      data already read out of the socket does not make it readable again.
    * Writes are joined: paho sends every queued packet with its own ``send``;
      here the QoS 1 PUBLISHes (and other packets that need nothing done once
      written) queued in one turn go out in one ``send``. DISCONNECT and QoS 0
      packets, which paho acts on once written, still go through paho.
    * A PUBACK without properties (MQTT v5: 2 bytes for success, 3 with a reason
      code; Mosquitto answers 0x10 "no matching subscribers" when nobody listens)
      is decoded without building a ReasonCode and a Properties object per
      message; the callback gets shared ones. Anything else goes through paho.
    """

    _rbuf: bytes = b""
    _rpos: int = 0

    def buffered(self) -> bool:
        return self._rpos < len(self._rbuf)

    def drop_buffer(self) -> None:
        self._rbuf = b""
        self._rpos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(RECV_CHUNK)
            if len(data) <= bufsize:  # includes b"": the connection is gone
                self._rbuf = b""
                return data
            self._rbuf = data
            self._rpos = 0
        start = self._rpos
        self._rpos = end = min(start + bufsize, len(self._rbuf))
        return self._rbuf[start:end]

    def _packet_write(self) -> MQTTErrorCode:
        queued = self._out_packet
        if len(queued) > 1:
            batch: list[Any] = []
            size = 0
            for packet in queued:
                command = packet["command"] & 0xF0
                if command == _DISCONNECT or (command == _PUBLISH and packet["qos"] == 0):
                    break
                batch.append(packet)
                size += packet["to_process"]
                if size >= SEND_CHUNK:
                    break
            if len(batch) > 1:
                data = b"".join(p["packet"][p["pos"] :] for p in batch)
                try:
                    written = self._sock_send(data)
                except (AttributeError, ValueError):
                    return MQTTErrorCode.MQTT_ERR_SUCCESS  # as paho: no socket
                except BlockingIOError:
                    return MQTTErrorCode.MQTT_ERR_AGAIN
                except OSError:
                    return MQTTErrorCode.MQTT_ERR_CONN_LOST
                with self._msgtime_mutex:
                    self._last_msg_out = mqtt.time_func()
                for packet in batch:
                    if written < packet["to_process"]:  # the socket is full
                        packet["pos"] += written
                        packet["to_process"] -= written
                        return MQTTErrorCode.MQTT_ERR_AGAIN
                    written -= packet["to_process"]
                    queued.popleft()
        return super()._packet_write()

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        size = len(packet)
        if cmd != "PUBACK" or not 2 <= size <= 3 or self._protocol != mqtt.MQTTv5:
            return super()._handle_pubackcomp(cmd)
        mid = (packet[0] << 8) | packet[1]
        reason = _puback_reason(packet[2] if size == 3 else 0)
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, reason, _NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS


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

    def __init__(self, client: _Client, site: str, device: str) -> None:
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
        seed: int = 0,
        password: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._password = password
        self.window = window
        self.max_backlog = max_backlog
        self.drain_timeout_s = drain_timeout_s
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
            self._connect(device, change)
        elif device is not None and change.reason is StateReason.LAST_WILL:
            self._cut(device)
        elif device is not None:
            # a clean stop, after everything queued: the agent says so itself, then
            # disconnects in close()
            self._enqueue(device, device.state_topic, encode(change.state()), retain=True)

    def _new_client(self, change: LinkChange) -> _Device:
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=change.device,
            protocol=mqtt.MQTTv5,
        )
        if self._password is not None:
            client.username_pw_set(change.device, self._password)
        device = _Device(client, change.site, change.device)
        client.user_data_set(device)
        client.max_inflight_messages_set(self.window)
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
        try:
            device.client.connect(
                self.host,
                self.port,
                keepalive=KEEPALIVE_S,
                clean_start=False,
                properties=properties,
            )
        except OSError as exc:
            self._broken = True
            raise MqttSimError(
                f"device {device.device} cannot connect to {self.host}:{self.port}: {exc}"
            ) from exc

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
        device.client.loop_read()  # paho sees the connection gone and closes its socket
        device.connected = False
        log.info("device_cut_off", extra=kv(device=device.device))

    def _pump(self, device: _Device) -> None:
        """Publish from the device's queue while its window has room."""
        if not device.connected:
            return
        client = device.client
        queue = device.queue
        while queue and device.inflight < self.window:
            topic, payload, retain = queue.popleft()
            # QoS 1: paho keeps the message until PUBACK, also across a reconnect
            client.publish(topic, payload, qos=1, retain=retain)
            device.inflight += 1
            self._stats.published += 1

    # -- the loop ---------------------------------------------------------------------

    def _service(self, timeout: float) -> None:
        self._flush()
        for key, mask in self._selector.select(timeout):
            device: _Device = key.data
            if mask & selectors.EVENT_READ:
                client = device.client
                client.loop_read()
                while client.buffered() and client.socket() is not None:
                    client.loop_read()
            if mask & selectors.EVENT_WRITE:
                self._dirty.add(device)
        self._flush()
        now = time.monotonic()
        if now >= self._next_misc:
            self._next_misc = now + MISC_EVERY_S
            for device in self._devices.values():
                device.client.loop_misc()

    def _flush(self) -> None:
        """Write what paho queued for each client; watch for writability only while a
        socket is full. paho queues instead of writing because ``on_socket_register_write``
        is set: the writes of a burst of events then go out together."""
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
            log.warning("connect_refused", extra=kv(device=device.device, reason=str(reason)))
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
        device.client.drop_buffer()
        device.watching_write = False
        self._selector.register(sock, selectors.EVENT_READ, device)

    def _on_socket_close(self, client: mqtt.Client, device: _Device, sock: Any) -> None:
        device.client.drop_buffer()
        self._selector.unregister(sock)

    def _on_register_write(self, client: mqtt.Client, device: _Device, sock: Any) -> None:
        self._dirty.add(device)  # written in the next _flush, together with the others
