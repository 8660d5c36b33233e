"""What the demo watches while it runs: device states on the broker, the stored data,
the gateway's spool and the edge agents' outboxes."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as mqtt

from edge.status import read_status
from runtime.config_sections import LinkSettings
from runtime.mqtt_link import MqttLink
from testkit.servers import InfluxDB1Server, ServerError, http_request
from wire.errors import MessageDecodeError
from wire.messages import DeviceState, PaymentTransaction, SensorReading, TerminalStatus, decode_as
from wire.points import Measurement
from wire.topics import DEVICE_PREFIX, Stream

# what the simulator counts (message type name) -> where the gateway stores it
STORED_AS: Final = {
    PaymentTransaction.__name__: Measurement.PAYMENT,
    TerminalStatus.__name__: Measurement.TERMINAL_STATUS,
    SensorReading.__name__: Measurement.SENSOR,
}
SPOOL_DEPTH_METRIC: Final = "tillpulse_gateway_spool_depth_lines"


class StateWatcher:
    """Subscribes to every device's retained state topic; who is online right now.

    States older than ``since_ns`` (the retained ones of an earlier run, like the
    training day's clean shutdowns) are not taken into account."""

    def __init__(self, host: str, port: int, since_ns: int, *, account: tuple[str, str]) -> None:
        self._since_ns = since_ns
        self._online: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        username, password = account  # the broker makes the username the client id
        self._link = MqttLink(
            LinkSettings(
                host=host, port=port, client_id=username, username=username, session_expiry_s=0
            ),
            password=password,
            on_connected=self._subscribe,
        )
        self._link.client.on_message = self._on_message
        self._thread = threading.Thread(target=self._run, name="demo-state-watch", daemon=True)
        self._thread.start()

    @staticmethod
    def _subscribe(client: mqtt.Client, session_present: bool) -> None:
        client.subscribe(f"{DEVICE_PREFIX}/+/+/{Stream.STATE}", qos=1)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._link.turn(self._stop)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            state = decode_as(bytes(msg.payload), DeviceState)
        except MessageDecodeError:
            return  # not ours to judge: the gateway dead-letters it
        if state.ts < self._since_ns:
            return
        with self._lock:
            self._online[state.device] = state.online

    def online(self, devices: frozenset[str]) -> tuple[int, int]:
        """(online, offline) among ``devices`` that have said either."""
        with self._lock:
            states = [up for device, up in self._online.items() if device in devices]
        return sum(states), len(states) - sum(states)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._link.close()


def stored_counts(
    influx: InfluxDB1Server, database: str, start_ns: int, end_ns: int
) -> dict[str, int]:
    """Points stored for ``[start, end)`` per simulator message type (each has a ``seq``)."""
    counts: dict[str, int] = {}
    for name, measurement in STORED_AS.items():
        rows = influx.series_values(
            f'SELECT count(seq) FROM "{measurement}" WHERE time >= {start_ns} AND time < {end_ns}',
            database,
        )
        counts[name] = int(rows[0][1]) if rows else 0
    return counts


def payment_kpis(
    influx: InfluxDB1Server, database: str, start_ns: int, end_ns: int
) -> tuple[int, float | None, float | None]:
    """(payments, approval rate, latency p95 ms) stored for ``[start, end)``."""
    rows = influx.series_values(
        "SELECT count(seq), mean(approved), percentile(auth_latency_ms, 95) "
        f'FROM "{Measurement.PAYMENT}" WHERE time >= {start_ns} AND time < {end_ns}',
        database,
    )
    if not rows:
        return 0, None, None
    _, count, approval, p95 = rows[0]
    return int(count), approval, p95


def spool_depth(metrics_url: str) -> int | None:
    """The gateway's spool depth (lines not yet in InfluxDB), None if it does not answer."""
    try:
        _, body = http_request("GET", metrics_url, timeout=2.0)
    except (ServerError, OSError):
        return None
    for line in body.decode().splitlines():
        if line.startswith(SPOOL_DEPTH_METRIC):
            return int(float(line.split()[-1]))
    return None


def outbox_depth(state_dirs: list[Path]) -> int | None:
    """Events waiting in the edge agents' outboxes (their last status files)."""
    total = 0
    for state_dir in state_dirs:
        try:
            status = read_status(state_dir)
        except (OSError, ValueError):
            return None
        total += status.outbox.depth_high + status.outbox.depth_low
    return total
