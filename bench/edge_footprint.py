"""Edge agent footprint: RSS, CPU per 1,000 events, and max sustained events/s on one core.

The real agent (``python -m edge run``) runs as a child process pinned to core 0;
simulated terminals (`firmware_sim.serial_link.SerialFleet`, one pty each), a real
Mosquitto and an MQTT subscriber run in this process and its children on the other
cores. Every event is a payment (high priority: the outbox fsyncs it before the
terminal gets its LinkAck, the default policy that survives power loss). What counts
is what arrives on the subscriber, not what was sent.

Each round starts a fresh agent (fresh state dir in ``--dir``: put it on the disk the
agent will use, fsync cost is the disk's) and measures two phases:

* ``slow``: ``--slow-rate`` events/s (default 10) for ``--slow-s`` seconds;
* ``max``: the terminals send as fast as the whole path keeps up: at most
  ``--backlog`` events sent but not yet arrived on MQTT (so the outbox cannot grow
  without bound, and what is measured is sustainable), each terminal holding at
  most ``--queue`` unacknowledged payments; measured over ``--max-s`` seconds after
  a warm-up.

RSS is VmRSS (steady, at the end of each phase) and VmHWM (peak) from
/proc/<pid>/status; CPU is utime + stime from /proc/<pid>/stat over the phase.
Figures are medians over the rounds.

    .venv/bin/python -m bench.edge_footprint [--rounds 3] [--devices 4] [--dir DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import emit, median
from edge.status import read_status
from firmware_sim.event_engine import Emission
from firmware_sim.serial_link import SerialFleet
from testkit.factories import payment
from testkit.mqtt_collector import Collector
from testkit.servers import MosquittoServer, wait_until

SITE = "s0001"
AGENT_ID = "s0001-pi1"
AGENT_CORE = 0
SERVICE_EVERY = 20  # events sent between two reads of the terminals' acks
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    """The agent's counters at one moment."""

    at: float
    arrived: int
    cpu_s: float
    rest_cpu_s: float  # this process (terminals, subscriber) and the broker
    rss_kib: int
    peak_kib: int


@dataclass(frozen=True)
class Phase:
    events_per_s: float
    cpu_ms_per_1000: float
    core_busy: float  # agent CPU seconds per wall second: 1.0 is its core saturated
    rest_busy: float  # the same for terminals + subscriber + broker, on the other cores
    rss_mib: float


class Traffic:
    """Numbered payments, round-robin over the terminals of a `SerialFleet`."""

    def __init__(self, fleet: SerialFleet) -> None:
        self.fleet = fleet
        self.devices = sorted(fleet.devices)
        self.sent = 0

    def send(self, count: int) -> None:
        for _ in range(count):
            device = self.devices[self.sent % len(self.devices)]
            seq = self.sent // len(self.devices) + 1
            message = payment(site=SITE, device=device, seq=seq, txn_id=f"{device}-t{seq}")
            self.fleet.handle(Emission(0, message))
            self.sent += 1

    def service(self) -> None:
        """Read acks and flush the lines once, without waiting."""
        self.fleet.idle_until(time.monotonic() + 0.0005)


def cpu_s(pid: int | str) -> float:
    """utime + stime of a process: /proc/<pid>/stat fields 14 and 15 (after the comm)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass(frozen=True)
class Probe:
    """Where the figures come from: the agent's /proc entries, the subscriber, the broker."""

    agent_pid: int
    collector: Collector
    broker_pid: int

    def sample(self) -> Sample:
        status = dict(
            line.split(":", 1)
            for line in Path(f"/proc/{self.agent_pid}/status").read_text().splitlines()
        )
        return Sample(
            at=time.monotonic(),
            arrived=self.collector.count(),
            cpu_s=cpu_s(self.agent_pid),
            rest_cpu_s=cpu_s("self") + cpu_s(self.broker_pid),
            rss_kib=int(status["VmRSS"].split()[0]),
            peak_kib=int(status["VmHWM"].split()[0]),
        )


def phase(start: Sample, end: Sample) -> Phase:
    events = max(1, end.arrived - start.arrived)
    used = end.cpu_s - start.cpu_s
    wall = end.at - start.at
    return Phase(
        events_per_s=events / wall,
        cpu_ms_per_1000=used / events * 1e6,
        core_busy=used / wall,
        rest_busy=(end.rest_cpu_s - start.rest_cpu_s) / wall,
        rss_mib=end.rss_kib / 1024,
    )


def write_config(state: Path, broker: MosquittoServer, ports: list[str]) -> Path:
    path = state / "edge.toml"
    path.write_text(
        f'[agent]\nsite = "{SITE}"\ndevice = "{AGENT_ID}"\nstate_dir = "{state}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        + "".join(f'[[serial]]\nport = "{port}"\n' for port in ports)
    )
    return path


def one_round(broker: MosquittoServer, args: argparse.Namespace) -> tuple[Phase, Phase, float, int]:
    """(slow phase, max phase, peak RSS MiB, outbox depth at the end) of a fresh agent."""
    state = Path(tempfile.mkdtemp(prefix="edge-footprint-", dir=args.dir))
    fleet = SerialFleet(
        [f"{SITE}-pos{n}" for n in range(1, args.devices + 1)],
        retransmit_s=30.0,
        queue_limit=args.queue,
    )
    config = write_config(state, broker, list(fleet.ports().values()))
    with (
        Collector(broker.host, broker.port, "tp/v1/dev/+/+/payment") as collector,
        (state / "agent.log").open("wb") as log,
    ):
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        os.sched_setaffinity(agent.pid, {AGENT_CORE})
        try:
            wait_until(
                lambda: (state / "agent.log").read_bytes().count(b"serial_opened") == args.devices,
                30,
                message="agent did not open its ports",
            )
            traffic = Traffic(fleet)
            assert broker.pid is not None
            probe = Probe(agent.pid, collector, broker.pid)
            slow = measure_slow(traffic, probe, args)
            fast = measure_max(traffic, probe, args)
            depth = read_status(state).outbox.depth_high
            peak = probe.sample().peak_kib / 1024
            fleet.close()  # waits until every payment sent is acknowledged
        finally:
            agent.terminate()
            agent.wait(timeout=30)
            shutil.rmtree(state)
    return slow, fast, peak, depth


def measure_slow(traffic: Traffic, probe: Probe, args: argparse.Namespace) -> Phase:
    interval = 1.0 / args.slow_rate
    start = probe.sample()
    next_at = time.monotonic()
    for _ in range(int(args.slow_rate * args.slow_s)):
        traffic.send(1)
        next_at += interval
        traffic.fleet.idle_until(next_at)
    probe.collector.wait_for_count(traffic.sent, timeout=30)
    return phase(start, probe.sample())


def measure_max(traffic: Traffic, probe: Probe, args: argparse.Namespace) -> Phase:
    def run_for(seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            if traffic.sent - probe.collector.count() < args.backlog:
                traffic.send(SERVICE_EVERY)
            traffic.service()

    run_for(args.warmup_s)
    start = probe.sample()
    run_for(args.max_s)
    return phase(start, probe.sample())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--devices", type=int, default=4, help="terminals, one pty each")
    parser.add_argument("--queue", type=int, default=500, help="unacked payments per terminal")
    parser.add_argument(
        "--backlog", type=int, default=2000, help="events sent but not yet arrived, at most"
    )
    parser.add_argument("--slow-rate", type=float, default=10.0)
    parser.add_argument("--slow-s", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--max-s", type=float, default=10.0)
    parser.add_argument("--dir", default=None, help="where the agent's state dir goes")
    args = parser.parse_args()
    logging.getLogger("firmware_sim").setLevel(logging.ERROR)  # "store full" is the throttle

    others = set(range(os.cpu_count() or 1)) - {AGENT_CORE}
    if others:
        os.sched_setaffinity(0, others)  # terminals, broker, subscriber: off the agent's core
    with (
        tempfile.TemporaryDirectory(prefix="edge-footprint-mqtt-") as workdir,
        MosquittoServer(Path(workdir)) as broker,
    ):
        rounds = [one_round(broker, args) for _ in range(args.rounds)]

    slow = [r[0] for r in rounds]
    fast = [r[1] for r in rounds]
    emit(
        "edge_footprint",
        {
            "shape": "payment/1 over serial ptys, fsync before LinkAck, agent pinned to 1 core",
            "devices": args.devices,
            "rounds": args.rounds,
            "max_events_per_s": round(median([p.events_per_s for p in fast])),
            "max_events_per_s_rounds": [round(p.events_per_s) for p in fast],
            "max_cpu_ms_per_1000_events": round(median([p.cpu_ms_per_1000 for p in fast]), 1),
            "max_agent_core_busy": round(median([p.core_busy for p in fast]), 2),
            "max_rest_busy": round(median([p.rest_busy for p in fast]), 2),
            "max_rss_mib": round(median([p.rss_mib for p in fast]), 1),
            "slow_events_per_s": round(median([p.events_per_s for p in slow]), 1),
            "slow_cpu_ms_per_1000_events": round(median([p.cpu_ms_per_1000 for p in slow]), 1),
            "slow_agent_core_busy": round(median([p.core_busy for p in slow]), 3),
            "slow_rss_mib": round(median([p.rss_mib for p in slow]), 1),
            "peak_rss_mib": round(median([r[2] for r in rounds]), 1),
            "outbox_depth_at_end": [r[3] for r in rounds],
            "agent_cpus": sorted({AGENT_CORE}),
            "other_cpus": sorted(others),
        },
    )


if __name__ == "__main__":
    main()
