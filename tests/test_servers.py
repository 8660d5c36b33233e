"""The server fixtures themselves, checked the way the pipeline will use them.

Mosquitto: a bounded in-flight window of QoS 1 publishes arrives complete; a
persistent session keeps its queue over a broker restart (and over the default
``max_queued_messages`` of 1000); a small queue limit really drops. influxd: line
protocol over /write reads back over /query and survives SIGKILL; auth works.
VictoriaMetrics: /api/v2/write (raw and via influxdb-client) reads back via export,
old timestamps included. Every stop leaves no process behind.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from testkit.servers import (
    BinaryNotFoundError,
    InfluxDB1Server,
    ManagedServer,
    MosquittoServer,
    ServerFactory,
    ServerHTTPError,
    ServerStartError,
    VictoriaMetricsServer,
    WaitTimeoutError,
    pid_exists,
    wait_until,
)

pytestmark = pytest.mark.integration

TIMEOUT = 20.0  # generous deadline for any one condition; normally met in well under 1 s


# ------------------------------------------------------------------ MQTT test client


@dataclass
class Subscriber:
    """What a test client saw: payloads received, CONNACK flags, SUBACKs."""

    received: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    connected: threading.Event = field(default_factory=threading.Event)
    subscribed: threading.Event = field(default_factory=threading.Event)
    session_present: bool | None = None

    def count(self) -> int:
        with self.lock:
            return len(self.received)

    def payloads(self) -> list[bytes]:
        with self.lock:
            return list(self.received)


@contextmanager
def mqtt_client(
    server: MosquittoServer,
    client_id: str,
    *,
    clean_start: bool = True,
    session_expiry: int | None = None,
    subscribe: str | None = None,
    max_inflight: int = 50,
) -> Iterator[tuple[mqtt.Client, Subscriber]]:
    """A connected MQTT v5 client (network loop running); disconnects on exit.

    ``max_inflight`` bounds paho's own QoS 1 window (it can only be set before connecting).
    """
    state = Subscriber()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )

    def on_connect(
        c: mqtt.Client, u: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, p: Any
    ) -> None:
        assert not rc.is_failure, f"CONNACK {rc}"
        state.session_present = flags.session_present
        state.connected.set()

    def on_subscribe(c: mqtt.Client, u: Any, mid: int, rcs: list[ReasonCode], p: Any) -> None:
        assert all(not rc.is_failure for rc in rcs), f"SUBACK {rcs}"
        state.subscribed.set()

    def on_message(c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
        with state.lock:
            state.received.append(bytes(message.payload))

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.max_inflight_messages_set(max_inflight)
    properties = None
    if session_expiry is not None:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = session_expiry
    client.connect(
        server.host, server.port, keepalive=30, clean_start=clean_start, properties=properties
    )
    client.loop_start()
    try:
        assert state.connected.wait(TIMEOUT), f"no CONNACK for {client_id}"
        if subscribe is not None:
            client.subscribe(subscribe, qos=1)
            assert state.subscribed.wait(TIMEOUT), f"no SUBACK for {client_id}"
        yield client, state
    finally:
        client.disconnect()
        client.loop_stop()


def publish_window(client: mqtt.Client, topic: str, payloads: list[bytes], window: int) -> None:
    """Publish at QoS 1 with at most ``window`` messages un-acknowledged (DESIGN.md:
    paho stalls silently when far too many are queued), then wait for every PUBACK."""
    slots = threading.BoundedSemaphore(window)
    acked: list[int] = []

    def on_publish(c: mqtt.Client, u: Any, mid: int, rc: ReasonCode, p: Any) -> None:
        acked.append(mid)
        slots.release()

    client.on_publish = on_publish
    for payload in payloads:
        assert slots.acquire(timeout=TIMEOUT), f"no PUBACK within {TIMEOUT}s"
        info = client.publish(topic, payload, qos=1)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, mqtt.error_string(info.rc)
    wait_until(
        lambda: len(acked) == len(payloads),
        TIMEOUT,
        message=lambda: f"{len(acked)} of {len(payloads)} publishes acknowledged",
    )


def numbered(n: int) -> list[bytes]:
    return [str(i).encode() for i in range(n)]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ------------------------------------------------------------------------- Mosquitto


def test_mosquitto_delivers_2000_qos1_messages_through_a_bounded_window(
    mosquitto: MosquittoServer,
) -> None:
    topic = f"tests/{unique('burst')}"
    sent = numbered(2000)
    with (
        mqtt_client(mosquitto, unique("sub"), subscribe=topic) as (_, sub),
        mqtt_client(mosquitto, unique("pub")) as (pub, _),
    ):
        publish_window(pub, topic, sent, window=50)
        wait_until(
            lambda: sub.count() >= len(sent),
            TIMEOUT,
            message=lambda: f"subscriber got {sub.count()} of {len(sent)}",
        )
    assert sorted(sub.payloads(), key=int) == sent  # all of them, each exactly once


def test_mosquitto_persistent_session_survives_restart(mosquitto: MosquittoServer) -> None:
    topic = f"tests/{unique('persist')}"
    client_id = unique("gateway")
    sent = numbered(1500)  # more than Mosquitto's default max_queued_messages (1000)
    with mqtt_client(
        mosquitto, client_id, clean_start=False, session_expiry=3600, subscribe=topic
    ) as (_, first):
        assert first.session_present is False
    # the subscriber is offline: the broker queues for its session
    with mqtt_client(mosquitto, unique("pub")) as (pub, _):
        publish_window(pub, topic, sent, window=50)

    port, old_pid = mosquitto.port, mosquitto.pid
    mosquitto.restart()  # SIGTERM: the broker saves its database on exit
    assert old_pid is not None
    assert not pid_exists(old_pid)
    assert mosquitto.port == port
    assert mosquitto.db_path.is_file()

    with mqtt_client(mosquitto, client_id, clean_start=False, session_expiry=3600) as (_, again):
        assert again.session_present is True
        wait_until(
            lambda: again.count() >= len(sent),
            TIMEOUT,
            message=lambda: f"reconnected subscriber got {again.count()} of {len(sent)}",
        )
    assert sorted(again.payloads(), key=int) == sent


def test_mosquitto_kill_loses_what_was_not_saved(mosquitto: MosquittoServer) -> None:
    """SIGKILL keeps only the last save (``save()`` = SIGUSR1; else autosave, 30 min)."""
    topic = f"tests/{unique('crash')}"
    client_id = unique("gateway")
    with mqtt_client(mosquitto, client_id, clean_start=False, session_expiry=3600, subscribe=topic):
        pass
    with mqtt_client(mosquitto, unique("pub")) as (pub, _):
        publish_window(pub, topic, [b"saved-%d" % i for i in range(100)], window=50)
        mosquitto.save()
        publish_window(pub, topic, [b"unsaved-%d" % i for i in range(50)], window=50)
    mosquitto.kill()
    mosquitto.restart()
    with mqtt_client(mosquitto, client_id, clean_start=False, session_expiry=3600) as (pub, sub):
        assert sub.session_present is True
        publish_window(pub, topic, [b"marker"], window=1)  # goes to the back of the queue
        wait_until(lambda: b"marker" in sub.payloads(), TIMEOUT, message="no marker")
    assert sorted(sub.payloads()) == sorted([b"saved-%d" % i for i in range(100)] + [b"marker"])


def test_mosquitto_max_queued_messages_is_applied(
    mosquitto_factory: ServerFactory[MosquittoServer],
) -> None:
    """The trap the deliberate setting avoids: past the limit, messages just vanish."""
    broker = mosquitto_factory(max_queued_messages=50)
    assert "max_queued_messages 50\n" in broker.config_path.read_text()
    topic = f"tests/{unique('small-queue')}"
    client_id = unique("slow")
    with mqtt_client(broker, client_id, clean_start=False, session_expiry=600, subscribe=topic):
        pass
    with mqtt_client(broker, unique("pub")) as (pub, _):
        publish_window(pub, topic, numbered(200), window=20)  # all 200 acked by the broker
        with mqtt_client(broker, client_id, clean_start=False, session_expiry=600) as (_, sub):
            # queued messages are sent before newer ones: wait for a marker sent now
            publish_window(pub, topic, [b"marker"], window=1)
            wait_until(lambda: b"marker" in sub.payloads(), TIMEOUT, message="no marker")
    queued = [p for p in sub.payloads() if p != b"marker"]
    assert 50 <= len(queued) < 200, len(queued)  # dropped silently, acked all the same


def test_mosquitto_bad_config_fails_with_the_log_tail(tmp_path: Path) -> None:
    broker = MosquittoServer(tmp_path / "bad", extra_config="no_such_option 42")
    with pytest.raises(ServerStartError, match="no_such_option") as excinfo:
        broker.start()
    assert "exited with code" in str(excinfo.value)
    assert not broker.is_running
    assert broker.pid is not None
    assert not pid_exists(broker.pid)


def test_missing_binary_names_the_apt_package(tmp_path: Path) -> None:
    class NotInstalled(VictoriaMetricsServer):
        binary = "tillpulse-no-such-server"
        apt_package = "tillpulse-server-pkg"

    with pytest.raises(BinaryNotFoundError, match="apt-get install tillpulse-server-pkg"):
        NotInstalled(tmp_path / "missing").start()


def test_start_retries_on_a_new_port_when_the_free_port_was_taken(tmp_path: Path) -> None:
    broker = MosquittoServer(tmp_path / "clash")
    taken = broker.port
    with socket.socket() as squatter:  # somebody else got "our" free port first
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with broker:
            assert broker.port != taken
            assert broker.probe_connect()
    assert "Address already in use" in broker.log_path.read_text()


# ---------------------------------------------------------------------- InfluxDB 1.x


def test_influxdb_write_query_and_data_survive_kill(influxdb: InfluxDB1Server) -> None:
    influxdb.create_database("tillpulse")
    base = 1_700_000_000_000_000_000
    lines = [
        f"payment,terminal=t{i % 3},site=s1 amount={i}.25,seq={i}i {base + i * 1000}"
        for i in range(100)
    ]
    influxdb.write(lines, db="tillpulse")  # POST /write, 204
    q = "SELECT amount, seq, terminal FROM payment ORDER BY time"
    expected = [[base + i * 1000, i + 0.25, i, f"t{i % 3}"] for i in range(100)]
    assert influxdb.series_values(q, "tillpulse") == expected

    pid, port = influxdb.pid, influxdb.port
    influxdb.kill()
    assert pid is not None
    assert not pid_exists(pid)
    assert not influxdb.is_running
    influxdb.restart()
    assert influxdb.port == port
    assert influxdb.pid != pid
    assert influxdb.series_values(q, "tillpulse") == expected


def test_influxdb_auth(influxdb_factory: ServerFactory[InfluxDB1Server]) -> None:
    server = influxdb_factory(auth=True)
    server.create_database("secure")  # as admin
    server.write("m v=1 1", db="secure")
    with pytest.raises(ServerHTTPError) as anonymous:
        server.query("SHOW DATABASES", auth=False)
    assert anonymous.value.status == 401
    with pytest.raises(ServerHTTPError) as wrong:
        server.write("m v=2 2", db="secure", auth=(server.admin_user, "wrong"))
    assert wrong.value.status == 401
    server.restart()  # the admin user is kept (and re-creating it is a no-op)
    assert server.series_values("SELECT v FROM m", "secure") == [[1, 1.0]]


def test_influxd_config_is_what_influxd_reads(influxdb_session: InfluxDB1Server) -> None:
    text = influxdb_session.config_path.read_text()
    assert f'bind-address = "127.0.0.1:{influxdb_session.rpc_port}"' in text
    assert f'bind-address = "127.0.0.1:{influxdb_session.port}"' in text
    answer = influxdb_session.query("SHOW DATABASES")
    assert "error" not in answer["results"][0]


# -------------------------------------------------------------------- VictoriaMetrics


def test_victoriametrics_v2_write_reads_back_via_export(
    victoriametrics: VictoriaMetricsServer,
) -> None:
    now_ms = time.time_ns() // 1_000_000
    old_ms = 1_000_000_000_000  # 2001: kept only because retention is 100y
    victoriametrics.write_v2(
        [
            f"pos_txn,terminal=t1,site=s1 amount=12.5,count=3i {now_ms * 1_000_000}",
            f"pos_txn,terminal=t1,site=s1 amount=7.25,count=4i {(now_ms + 1) * 1_000_000}",
            f"pos_txn,terminal=t2,site=s1 amount=1 {old_ms * 1_000_000}",
        ],
        org="tillpulse",
        bucket="payments",
    )
    rows = victoriametrics.wait_for_export(
        '{__name__=~"pos_txn_.*"}', lambda rows: sum(len(r["values"]) for r in rows) == 5
    )
    got = {
        (r["metric"]["__name__"], r["metric"]["terminal"]): list(
            zip(r["timestamps"], r["values"], strict=True)
        )
        for r in rows
    }
    assert got == {
        ("pos_txn_amount", "t1"): [(now_ms, 12.5), (now_ms + 1, 7.25)],
        ("pos_txn_count", "t1"): [(now_ms, 3), (now_ms + 1, 4)],
        ("pos_txn_amount", "t2"): [(old_ms, 1)],
    }


def test_victoriametrics_accepts_influxdb_client_v2_writes(
    victoriametrics_session: VictoriaMetricsServer,
) -> None:
    measurement = unique("sink").replace("-", "_")
    now_ns = time.time_ns() // 1_000_000 * 1_000_000
    with InfluxDBClient(url=victoriametrics_session.url, token="unused", org="tillpulse") as c:
        c.write_api(write_options=SYNCHRONOUS).write(
            bucket="tillpulse", record=f"{measurement},terminal=t9 temp=21.5 {now_ns}"
        )
    rows = victoriametrics_session.wait_for_export(f'{{__name__="{measurement}_temp"}}')
    assert [(r["metric"]["terminal"], r["values"]) for r in rows] == [("t9", [21.5])]


# ------------------------------------------------------------------ process hygiene


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(MosquittoServer, id="mosquitto"),
        pytest.param(InfluxDB1Server, id="influxd"),
        pytest.param(VictoriaMetricsServer, id="victoria-metrics"),
    ],
)
def test_stop_and_kill_leave_no_process(
    tmp_path: Path, make: Callable[[Path], ManagedServer]
) -> None:
    server = make(tmp_path / "server")
    with server:
        first = server.pid
        assert first is not None
        assert pid_exists(first)
    assert not server.is_running
    assert server.returncode == 0  # a clean shutdown on SIGTERM
    assert not pid_exists(first)  # and reaped

    server.start()
    second = server.pid
    assert second is not None
    assert second != first
    server.kill()
    assert server.returncode == -signal.SIGKILL
    assert not pid_exists(second)
    with socket.socket() as probe:  # and the port is free again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(server.address)


_fixture_pids: dict[str, int] = {}


def test_fixtures_start_servers(
    mosquitto: MosquittoServer,
    influxdb: InfluxDB1Server,
    victoriametrics: VictoriaMetricsServer,
) -> None:
    for server in (mosquitto, influxdb, victoriametrics):
        assert server.is_running
        assert server.pid is not None
        _fixture_pids[server.binary] = server.pid
    assert len({mosquitto.port, influxdb.port, influxdb.rpc_port, victoriametrics.port}) == 4


def test_fixture_teardown_left_no_process() -> None:
    """Runs after test_fixtures_start_servers (file order): its servers must be gone."""
    if not _fixture_pids:
        pytest.skip("needs test_fixtures_start_servers to run first in this process")
    alive = {name: pid for name, pid in _fixture_pids.items() if pid_exists(pid)}
    assert not alive


def test_session_servers_answer(
    mosquitto_session: MosquittoServer,
    influxdb_session: InfluxDB1Server,
    victoriametrics_session: VictoriaMetricsServer,
) -> None:
    assert mosquitto_session.probe_connect()
    assert influxdb_session.query("SHOW DATABASES")["results"]
    assert victoriametrics_session.export('{__name__="no_such_metric"}') == []


def test_wait_until_returns_the_value_or_fails_with_the_message() -> None:
    calls: list[int] = []

    def third_time_lucky() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    assert wait_until(third_time_lucky, timeout=5, interval=0.001) == 3
    with pytest.raises(WaitTimeoutError, match="still 0 items"):
        wait_until(lambda: False, timeout=0.05, message=lambda: "still 0 items")
    with pytest.raises(AssertionError):  # a failed wait is a test failure, not an error
        wait_until(lambda: None, timeout=0.01)
