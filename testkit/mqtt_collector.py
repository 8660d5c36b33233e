"""A real MQTT subscriber for tests: counts and keeps what actually arrives."""

from __future__ import annotations

import threading
import uuid
from types import TracebackType
from typing import Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from testkit.servers import wait_until


class Collector:
    """Subscribes to ``topic_filter`` at QoS 1 and records every message in arrival order.

    ``session_expiry_s`` > 0 makes it a persistent session (clean_start False), so the
    broker queues for it while it is away or restarting.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic_filter: str,
        *,
        client_id: str | None = None,
        session_expiry_s: int = 0,
    ) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []  # topic, payload, retained
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"collector-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_filter, qos=1)
        self._client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self._client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = session_expiry_s
        self._client.connect(
            host, port, clean_start=session_expiry_s == 0, properties=properties, keepalive=10
        )
        self._client.loop_start()
        wait_until(self._subscribed.is_set, 10, message=f"subscription to {topic_filter}")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def snapshot(self) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return list(self.messages)

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def wait_for_count(self, expected: int, timeout: float = 30.0) -> None:
        wait_until(
            lambda: self.count() >= expected,
            timeout,
            message=lambda: f"{self.count()} of {expected} messages arrived",
        )

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def publish_all(
    host: str,
    port: int,
    messages: list[tuple[str, bytes]],
    *,
    window: int = 200,
    timeout: float = 120.0,
) -> None:
    """Publish every (topic, payload) at QoS 1 through a bounded in-flight window and
    return once the broker acknowledged all of them (DESIGN.md: never hand paho an
    unbounded backlog)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"publisher-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    client.max_inflight_messages_set(window)
    acked = threading.Semaphore(0)
    client.on_publish = lambda c, u, mid, rc, p: acked.release()
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        in_flight = 0
        for topic, payload in messages:
            if in_flight >= window:
                assert acked.acquire(timeout=timeout), "broker stopped acknowledging"
                in_flight -= 1
            client.publish(topic, payload, qos=1)
            in_flight += 1
        for _ in range(in_flight):
            assert acked.acquire(timeout=timeout), "broker stopped acknowledging"
    finally:
        client.loop_stop()
        client.disconnect()
