"""How far one simulator process goes in direct MQTT mode, counted at a real Mosquitto.

Two figures, each from a fresh local Mosquitto (testkit.servers.MosquittoServer,
``sys_interval 1``) per round, the simulator running in this process through
``firmware_sim.run_loop.run`` into ``firmware_sim.mqtt_fleet.MqttFleet`` exactly
as ``tillpulse sim fleet --mqtt`` does:

* **connections**: N terminals (default 10,000), each its own MQTT client and
  TCP connection, at real-time pace (accel 1) for a bounded simulated time
  starting on a busy weekday noon. Reported: connections the broker held
  (``$SYS/broker/clients/connected``), how late events went out relative to
  their real-time schedule (connect phase included and excluded), and
  publishes vs PUBACKs vs what the broker received.
* **rate**: a smaller fleet published as fast as possible (accel 0) with QoS 1:
  events/s as counted by the broker (``$SYS/broker/publish/messages/received``)
  over the wall time of the run (connect and drain included). The default
  simulated day (414,101 publishes) lasts several seconds since the fleet speaks
  MQTT through mqtt5; the former default of 6 h (90,500 publishes,
  ``--rate-duration 6h``) now takes about one, too short for a steady rate or
  for a ``$SYS`` update of the connection count.

Each round also reports the CPU time per publish of the simulator (this process:
event generation and the MQTT clients) and of the broker (from ``/proc``, Linux
only), which move far less than the rates when other work shares the cores.

Counted at the broker, never from what was sent: a round passes only if every
publish was acknowledged and the broker's count matches. Mosquitto's
``publish/messages/received`` leaves retained PUBLISHes out (it tests the
command byte with the RETAIN bit still set), so it must equal the publishes
minus the retained device states (online after CONNACK, shutdown at the end),
and those are checked on their own: after the run the broker must hold a
retained ``shutdown`` state for every device. Every
round runs under a wall-clock deadline (SIGALRM): a stalled publisher (a broker
that stops acknowledging, a broken in-flight window: DESIGN.md, traps) fails the
bench with the counts at the moment it stopped, instead of hanging.

The soft open-files limit is raised to the hard limit if the connection part
needs it (the broker, a child, inherits it) and Mosquitto's ``max_connections``
is set to fit; the figures name both.

    .venv/bin/python -m bench.sim_scale [--part all|connections|rate] [--rounds 3]
        [--terminals 10000] [--hold 2m] [--rate-terminals 200 --rate-sensors 50]
        [--rate-duration 1d] [--window 20] [--max-inflight 100]

Figures are medians over the rounds; one JSON line on stdout (bench.common.emit),
progress per round on stderr; exit 1 with the reason if a round fails.
``targets_met``: 10,000 connections held with every count matching and no event
more than 1 s late once connected (after the first 30 simulated seconds);
20,000 events/s received by the broker.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console

from bench.common import emit, median
from firmware_sim.event_engine import SimEvent
from firmware_sim.mqtt_fleet import MqttFleet
from firmware_sim.report import RunStats
from firmware_sim.run_loop import run
from firmware_sim.run_setup import SimSettings, build_simulation
from runtime.durations import parse_duration
from testkit.servers import MosquittoServer, wait_until
from wire.messages import DeviceState, decode_as
from wire.timestamps import NS_PER_S, parse_iso
from wire.topics import DEVICE_PREFIX, Stream

RECEIVED_TOPIC: Final = "$SYS/broker/publish/messages/received"
CONNECTED_TOPIC: Final = "$SYS/broker/clients/connected"
BUSY_START: Final = "2026-11-23T12:00:00Z"  # a Monday noon: shops open, payments flow
QUIET_START: Final = "2026-11-23T00:00:00Z"  # the start the docs' figures used
FDS_PER_CONNECTION: Final = 1
FD_HEADROOM: Final = 200  # listener, logs, persistence, the bench's own files
WARMUP_S: Final = 30.0  # simulated seconds excluded from the "steady" lag (connecting)

console = Console(stderr=True)


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (``/proc``; None elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, TypeError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name: state is field 3
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BenchFailure(RuntimeError):
    """A round did not reach its end in time, or the broker's count did not match."""


class BrokerCounters:
    """The broker's own $SYS counters, followed by one extra client (a thread)."""

    def __init__(self, broker: MosquittoServer) -> None:
        self._lock = threading.Lock()
        self.received = -1
        self.connected = -1
        self.max_connected = 0
        self.updated_at = 0.0  # monotonic time of the last received-count update
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-sys", protocol=mqtt.MQTTv311
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe([(RECEIVED_TOPIC, 0), (CONNECTED_TOPIC, 0)])
        self.client.loop_start()
        wait_until(self._subscribed.is_set, timeout=10, message="no SUBACK for $SYS")
        wait_until(lambda: self.received >= 0, timeout=10, message="no $SYS counters")
        self.baseline = self.received  # the probe's and this client's own traffic: none

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        value = int(msg.payload)
        with self._lock:
            if msg.topic == RECEIVED_TOPIC:
                self.received = value
                self.updated_at = time.monotonic()
            else:
                self.connected = value - 1  # not counting this client
                self.max_connected = max(self.max_connected, self.connected)

    def received_since_start(self) -> int:
        with self._lock:
            return self.received - self.baseline

    def settle(self, expected: int, since: float, timeout: float = 15.0) -> int:
        """The broker's count once a $SYS update computed after ``since`` arrived and it
        reached ``expected`` (or the deadline passed: then whatever it says)."""
        with suppress(AssertionError):
            wait_until(
                lambda: self.updated_at > since + 0.1 and self.received_since_start() >= expected,
                timeout=timeout,
                interval=0.05,
            )
        return self.received_since_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained_states(broker: MosquittoServer, expected: int, timeout: float = 30.0) -> Counter[str]:
    """The retained DeviceState the broker holds per device, counted by reason."""
    lock = threading.Lock()
    reasons: dict[str, str] = {}

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            state = decode_as(bytes(msg.payload), DeviceState)
            with lock:
                reasons[state.device] = state.reason.value

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-retained", protocol=mqtt.MQTTv311
    )
    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.subscribe(f"{DEVICE_PREFIX}/+/+/{Stream.STATE}", qos=0)
    client.loop_start()
    try:
        with suppress(AssertionError):  # fewer than expected: the caller's check says so
            wait_until(lambda: len(reasons) >= expected, timeout=timeout, interval=0.05)
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        return Counter(reasons.values())


class FleetProbe:
    """A Sink wrapper: at accel > 0, how late each event is handed to the fleet vs its
    real-time slot; once the round's deadline has passed, ``close`` does not wait for
    a drain that is not coming (the failure is the deadline's, reported at once)."""

    def __init__(self, inner: MqttFleet, start_ns: int, accel: float) -> None:
        self.inner = inner
        self.start_ns = start_ns
        self.accel = accel
        self.t0 = time.monotonic()
        self.lags: list[float] = []
        self.steady_max = 0.0
        self.handed_over_s = 0.0
        self.abandoned = False

    def handle(self, event: SimEvent) -> None:
        if self.accel > 0:
            offset_s = (event.at_ns - self.start_ns) / NS_PER_S
            lag = time.monotonic() - (self.t0 + offset_s / self.accel)
            self.lags.append(lag)
            if offset_s >= WARMUP_S and lag > self.steady_max:
                self.steady_max = lag
        self.inner.handle(event)

    def idle_until(self, deadline: float) -> None:
        self.inner.idle_until(deadline)

    def close(self) -> None:
        self.handed_over_s = time.monotonic() - self.t0
        if not self.abandoned:
            self.inner.close()


@contextmanager
def deadline(seconds: float, stats: RunStats, probe: FleetProbe, what: str) -> Iterator[None]:
    """Raise BenchFailure in the main thread if the block runs past ``seconds``."""

    def expired(signum: int, frame: FrameType | None) -> None:
        probe.abandoned = True
        raise BenchFailure(
            f"{what}: not finished after {seconds:.0f}s (stalled?): "
            f"published={stats.published} acknowledged={stats.acknowledged}"
        )

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def open_files_limit(needed: int) -> dict[str, Any]:
    """Raise the soft RLIMIT_NOFILE towards ``needed`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise BenchFailure(
            f"open-files limit too low: need {needed}, hard limit {hard} (raise it: ulimit -Hn)"
        )
    return {"soft_before": before, "soft": soft, "hard": hard, "needed": needed}


def one_round(
    *,
    terminals: int,
    sensors: int,
    start: str,
    duration: str,
    accel: float,
    window: int,
    max_inflight: int,
    max_connections: int,
    deadline_s: float,
    status_every: float,
    what: str,
) -> dict[str, Any]:
    settings = SimSettings(
        terminals=terminals,
        sensors=sensors,
        seed=1,
        start_ns=parse_iso(start),
        duration_ns=parse_duration(duration),
        status_every_s=status_every,
        sensor_every_s=status_every,
    )
    simulation = build_simulation(settings)
    extra = f"sys_interval 1\nmax_connections {max_connections}\n"
    with (
        tempfile.TemporaryDirectory(prefix="sim_scale-") as tmp,
        MosquittoServer(
            Path(tmp) / "mqtt",
            max_inflight_messages=max_inflight,
            extra_config=extra,
            ready_timeout=30.0,
        ) as broker,
    ):
        counters = BrokerCounters(broker)
        try:
            stats = RunStats()
            fleet = MqttFleet(broker.host, broker.port, stats, window=window)
            probe = FleetProbe(fleet, settings.start_ns, accel)
            broker_cpu_start = process_cpu_s(broker.pid)
            cpu_start = time.process_time()
            with deadline(deadline_s, stats, probe, what):
                probe.t0 = time.monotonic()
                run(simulation, probe, accel=accel, stats=stats)
            done = time.monotonic()
            sim_cpu_s = time.process_time() - cpu_start
            broker_cpu_end = process_cpu_s(broker.pid)
            held_at_end = counters.max_connected
            # Mosquitto's $SYS count leaves retained PUBLISHes out (it tests the command
            # byte with the RETAIN bit set): the device states are checked on their own
            retained_sent = stats.link_changes.get("connected", 0) + stats.link_changes.get(
                "shutdown", 0
            )
            received = counters.settle(stats.acknowledged - retained_sent, since=done)
            states = retained_states(broker, terminals + sensors)
        finally:
            counters.close()
    result: dict[str, Any] = {
        "clients": terminals + sensors,
        "events": stats.total_events,
        "published": stats.published,
        "acknowledged": stats.acknowledged,
        "broker_received": received,  # not retained
        "retained_sent": retained_sent,
        "broker_retained_shutdown_states": states.get("shutdown", 0),
        "wall_s": round(stats.wall_s, 3),
        "simulated_s": stats.simulated_s,
        "events_per_s": stats.total_events / stats.wall_s,
        "broker_received_per_s": received / stats.wall_s,
        "max_connections_held": held_at_end,
        "sim_cpu_us_per_publish": round(sim_cpu_s / max(stats.published, 1) * 1e6, 1),
    }
    if broker_cpu_start is not None and broker_cpu_end is not None:
        broker_cpu_s = broker_cpu_end - broker_cpu_start
        result["broker_cpu_us_per_publish"] = round(broker_cpu_s / max(stats.published, 1) * 1e6, 1)
    if probe.lags:
        lags = sorted(probe.lags)
        result |= {
            "lag_p50_s": lags[len(lags) // 2],
            "lag_p99_s": lags[int(len(lags) * 0.99)],
            "lag_max_s": lags[-1],
            "lag_max_after_warmup_s": probe.steady_max,
            "handed_over_s": probe.handed_over_s,
        }
    ok = (
        stats.published == stats.acknowledged == received + retained_sent
        and states.get("shutdown", 0) == terminals + sensors
    )
    result["counts_match"] = ok
    console.log(
        f"{what}: {result['clients']:,} clients, {stats.published:,} published, "
        f"{stats.acknowledged:,} acked, broker received {received:,}, "
        f"{stats.wall_s:.1f}s wall, {result['broker_received_per_s']:,.0f}/s, "
        f"sim CPU {result['sim_cpu_us_per_publish']} µs/publish"
        + (f", lag max {result['lag_max_s']:.2f}s" if "lag_max_s" in result else "")
        + (f", steady lag max {probe.steady_max:.3f}s" if probe.lags else "")
    )
    if not ok:
        raise BenchFailure(
            f"{what}: published {stats.published}, acknowledged {stats.acknowledged}, "
            f"broker received {received} + {retained_sent} retained sent, "
            f"retained states at the broker {dict(states)}"
        )
    return result


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [
        k for k, v in rounds[0].items() if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    out: dict[str, Any] = {k: median([r[k] for r in rounds]) for k in keys}
    for key in ("events_per_s", "broker_received_per_s"):
        if key in out:
            out[key] = round(out[key])
            out[f"{key}_runs"] = [round(r[key]) for r in rounds]
    for key in ("sim_cpu_us_per_publish", "broker_cpu_us_per_publish"):
        if key in out:
            out[f"{key}_runs"] = [r[key] for r in rounds]
    for key in [k for k in out if k.startswith("lag_") or k == "handed_over_s"]:
        out[key] = round(out[key], 3)
    out["counts_match"] = all(r["counts_match"] for r in rounds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "connections", "rate"], default="all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--terminals", type=int, default=10_000)
    parser.add_argument("--hold", default="2m", help="simulated (= wall) time at accel 1")
    parser.add_argument("--status-every", type=float, default=60.0)
    parser.add_argument("--rate-terminals", type=int, default=200)
    parser.add_argument("--rate-sensors", type=int, default=50)
    parser.add_argument("--rate-duration", default="1d")
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--max-inflight", type=int, default=100, help="Mosquitto, 0 = unlimited")
    parser.add_argument("--deadline", type=float, default=None, help="seconds per round")
    args = parser.parse_args()

    figures: dict[str, Any] = {
        "window": args.window,
        "broker_max_inflight_messages": args.max_inflight,
    }
    targets: dict[str, bool] = {}
    biggest = args.terminals if args.part in ("all", "connections") else 0
    biggest = max(biggest, args.rate_terminals + args.rate_sensors)
    figures["open_files"] = open_files_limit(biggest * FDS_PER_CONNECTION + FD_HEADROOM)
    max_connections = biggest + 100
    figures["broker_max_connections"] = max_connections

    if args.part in ("all", "connections"):
        hold_s = parse_duration(args.hold) / NS_PER_S
        rounds = [
            one_round(
                terminals=args.terminals,
                sensors=0,
                start=BUSY_START,
                duration=args.hold,
                accel=1.0,
                window=args.window,
                max_inflight=args.max_inflight,
                max_connections=max_connections,
                deadline_s=args.deadline or hold_s + 120.0,
                status_every=args.status_every,
                what=f"connections round {i + 1}/{args.rounds}",
            )
            for i in range(args.rounds)
        ]
        figures["connections"] = {"accel": 1, "start": BUSY_START, **medians(rounds)}
        held = figures["connections"]["max_connections_held"]
        targets["10k_connections_at_pace"] = (
            held >= 10_000
            and figures["connections"]["counts_match"]
            and figures["connections"]["lag_max_after_warmup_s"] < 1.0
        )
    if args.part in ("all", "rate"):
        rounds = [
            one_round(
                terminals=args.rate_terminals,
                sensors=args.rate_sensors,
                start=QUIET_START,
                duration=args.rate_duration,
                accel=0.0,
                window=args.window,
                max_inflight=args.max_inflight,
                max_connections=max_connections,
                deadline_s=args.deadline or 180.0,
                status_every=args.status_every,
                what=f"rate round {i + 1}/{args.rounds}",
            )
            for i in range(args.rounds)
        ]
        figures["rate"] = {"accel": 0, "qos": 1, "start": QUIET_START, **medians(rounds)}
        targets["20k_events_per_s"] = figures["rate"]["broker_received_per_s"] >= 20_000
    figures["targets_met"] = targets
    emit("sim_scale", figures)


if __name__ == "__main__":
    try:
        main()
    except BenchFailure as exc:
        console.print(f"[bold red]sim_scale failed:[/] {exc}")
        raise SystemExit(1) from None
