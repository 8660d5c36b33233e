"""Edge agent footprint: RSS, CPU per 1,000 events, and max sustained events/s on one core.

The real agent (``tillpulse edge run``, as the systemd unit starts it) runs as a child
process pinned to core 0; simulated terminals (`firmware_sim.serial_link.SerialFleet`,
one pty each), a real Mosquitto and an MQTT subscriber run in this process and its
children on the other cores. Every event is a payment (high priority: the outbox
fsyncs it before the terminal gets its LinkAck, the default policy that survives
power loss). What counts is what arrives on the subscriber, not what was sent.

The agent speaks TLS to the broker, as in production (``[mqtt.tls] ca_file``: a
test CA made with the ``openssl`` command signs the broker's certificate), so the
OpenSSL a deployed agent carries is in the figures; ``--no-tls`` measures plain TCP.

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
Figures are medians over the rounds. ``--agent PATH`` (repeatable; default: this
checkout) names the agents to measure, their rounds alternating, so a before/after
is measured side by side on a shared machine: a checkout (``python -m tillpulse edge
run`` from its source, e.g. ``git worktree add DIR HEAD~1``) or a venv with tillpulse
installed (``VENV/bin/tillpulse edge run``, byte-compiled as pip installs it: what a
Raspberry Pi runs).

``--part page-cache`` measures what the outbox's bounded SQLite page cache costs in
CPU: process CPU per single put and per drained row over a backlog, at the agent's
`edge.outbox.PAGE_CACHE_KIB` and at SQLite's default (2,000 KiB), rounds alternating.

``--part imports`` breaks the memory down instead: the VmRSS of a fresh
interpreter after each group of imports the agent makes (interpreter, msgspec,
paho, the OpenSSL it loads, pyserial and cobs, sqlite3, our modules).

    .venv/bin/python -m bench.edge_footprint [--rounds 3] [--devices 4] [--dir DIR]
    .venv/bin/python -m bench.edge_footprint --part imports [--agent PATH ...]
    .venv/bin/python -m bench.edge_footprint --part page-cache [--rounds 5] [--dir DIR]
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
from typing import Any, Final

from bench import outbox as outbox_bench
from bench.common import emit, median
from edge.outbox import MIB, PAGE_CACHE_KIB, Outbox
from edge.status import read_status
from firmware_sim.event_engine import Emission
from firmware_sim.serial_link import SerialFleet
from testkit.factories import payment
from testkit.mqtt_collector import Collector
from testkit.servers import LOCALHOST, MosquittoServer, free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
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


@dataclass(frozen=True)
class BrokerAddress:
    """Where the agent connects: the broker's plain listener, or its TLS one."""

    host: str
    port: int
    ca_file: Path | None = None  # TLS: the CA that signed the broker's certificate


def write_config(state: Path, broker: BrokerAddress, ports: list[str]) -> Path:
    path = state / "edge.toml"
    tls = "" if broker.ca_file is None else f'[mqtt.tls]\nca_file = "{broker.ca_file}"\n'
    path.write_text(
        f'[agent]\nsite = "{SITE}"\ndevice = "{AGENT_ID}"\nstate_dir = "{state}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n{tls}'
        + "".join(f'[[serial]]\nport = "{port}"\n' for port in ports)
    )
    return path


def make_pki(directory: Path, host: str) -> tuple[Path, Path, Path]:
    """(CA certificate, broker certificate, broker key): a throwaway CA, by `openssl`."""

    def openssl(command: str, *more: str) -> None:
        subprocess.run(
            ["openssl", *command.split(), *more], cwd=directory, check=True, capture_output=True
        )

    new_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    openssl(f"req -x509 {new_key} -keyout ca.key -out ca.pem -days 2", "-subj", "/CN=test CA")
    openssl(f"req {new_key} -keyout broker.key -out broker.csr", "-subj", f"/CN={host}")
    (directory / "san.ext").write_text(f"subjectAltName = IP:{host}\n")
    openssl(
        "x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
        " -extfile san.ext -out broker.pem"
    )
    return directory / "ca.pem", directory / "broker.pem", directory / "broker.key"


@dataclass(frozen=True)
class AgentBuild:
    """Where the agent under test comes from: a checkout, or a venv it is installed in."""

    path: Path

    @property
    def installed(self) -> bool:
        return (self.path / "bin" / "tillpulse").exists()

    def python(self, *args: str, cwd: Path, **popen: Any) -> subprocess.Popen[bytes]:
        """Its interpreter running ``args``: a checkout's source comes first on sys.path."""
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        if self.installed:
            return subprocess.Popen(
                [self.path / "bin" / "python", *args], cwd=cwd, env=env, **popen
            )
        env["PYTHONPATH"] = str(self.path)
        return subprocess.Popen([sys.executable, *args], cwd=self.path, env=env, **popen)

    def tillpulse(self, *args: str, cwd: Path, **popen: Any) -> subprocess.Popen[bytes]:
        """``tillpulse ARGS`` as the systemd unit runs it: the venv's console script (its
        command line costs memory too), or ``python -m tillpulse`` in a checkout."""
        if not self.installed:
            return self.python("-m", "tillpulse", *args, cwd=cwd, **popen)
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        return subprocess.Popen([self.path / "bin" / "tillpulse", *args], cwd=cwd, env=env, **popen)


def one_round(
    broker: MosquittoServer, address: BrokerAddress, args: argparse.Namespace, build: AgentBuild
) -> tuple[Phase, Phase, float, int]:
    """(slow phase, max phase, peak RSS MiB, outbox depth at the end) of a fresh agent."""
    state = Path(tempfile.mkdtemp(prefix="edge-footprint-", dir=args.dir))
    fleet = SerialFleet(
        [f"{SITE}-pos{n}" for n in range(1, args.devices + 1)],
        retransmit_s=30.0,
        queue_limit=args.queue,
    )
    config = write_config(state, address, list(fleet.ports().values()))
    with (
        Collector(broker.host, broker.port, "tp/v1/dev/+/+/payment") as collector,
        (state / "agent.log").open("wb") as log,
    ):
        agent = build.tillpulse(
            "edge",
            "run",
            "--config",
            str(config),
            cwd=state,
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

    def all_arrived() -> bool:
        traffic.service()  # a loaded machine runs late: the last frames may still be unsent
        return probe.collector.count() >= traffic.sent

    wait_until(
        all_arrived,
        30,
        message=lambda: f"{probe.collector.count()} of {traffic.sent} payments arrived",
    )
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


# (row, imports, OpenSSL kept out). Each row is a fresh interpreter importing what
# the rows above it import, and its own; the last row imports what `edge run` imports,
# in its order (the order alone moves RSS by ~0.5 MB). Keeping OpenSSL out is for
# measuring only: paho 2.2 imports ssl and hashlib, and needs ssl even without TLS.
IMPORT_STEPS: Final = (
    ("interpreter (python -c pass, with the venv's site)", (), True),
    ("+ msgspec", ("msgspec",), True),
    (
        "+ paho-mqtt (urllib.request deferred where edge run defers it), OpenSSL kept out",
        ("paho.mqtt.client",),
        True,
    ),
    ("+ OpenSSL: hashlib and ssl, which paho imports", ("hashlib", "ssl"), False),
    ("+ pyserial, cobs", ("serial", "cobs.cobs"), False),
    ("+ sqlite3", ("sqlite3",), False),
)
AGENT_IMPORTS: Final = ["edge.cli", "edge.agent"]
_OPENSSL: Final = ("_hashlib", "_ssl", "ssl")
# As `edge run` does first, where the build has it: paho's unused urllib.request deferred.
_PROBE: Final = """
import importlib, sys
if sys.argv[1]:  # not for the bare interpreter's row
    try:
        from edge.unused_imports import load_on_first_use
    except ImportError:
        pass
    else:
        load_on_first_use()
for name in sys.argv[2:]:
    sys.modules[name] = None
for name in sys.argv[1].split(","):
    if name:
        importlib.import_module(name)
print(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
"""


def import_rss_kib(
    build: AgentBuild, modules: list[str], *, block_openssl: bool, flags: tuple[str, ...] = ()
) -> int:
    """VmRSS of a fresh interpreter of ``build`` once it imported ``modules``."""
    blocked = _OPENSSL if block_openssl else ()
    with tempfile.TemporaryDirectory() as cwd:
        probe = build.python(
            *flags,
            "-c",
            _PROBE,
            ",".join(modules),
            *blocked,
            cwd=Path(cwd),
            stdout=subprocess.PIPE,
        )
        out, _ = probe.communicate(timeout=60)
    if probe.returncode != 0:
        raise RuntimeError(f"the import probe of {build.path} failed")
    return int(out)


def import_breakdown(args: argparse.Namespace, builds: list[AgentBuild]) -> None:
    def rss_mib(
        build: AgentBuild, modules: list[str], block: bool, flags: tuple[str, ...] = ()
    ) -> float:
        runs = [
            import_rss_kib(build, modules, block_openssl=block, flags=flags)
            for _ in range(args.rounds)
        ]
        return round(median(runs) / 1024, 1)

    def breakdown(build: AgentBuild) -> dict[str, dict[str, float]]:
        rows = {"interpreter without site (python -S -c pass)": rss_mib(build, [], True, ("-S",))}
        costs: dict[str, float] = {}
        imported: list[str] = []
        previous: float | None = None
        for label, modules, block in IMPORT_STEPS:
            imported += modules
            rows[label] = mib = rss_mib(build, imported, block)
            if previous is not None:
                costs[label] = round(mib - previous, 1)
            previous = mib
        label = "+ our modules: all that `edge run` imports"
        rows[label] = mib = rss_mib(build, AGENT_IMPORTS, False)
        costs[label] = round(mib - (previous or 0.0), 1)
        return {"rss_mib_after": rows, "cost_mib": costs}

    emit(
        "edge_footprint_imports",
        {"builds": {str(build.path): breakdown(build) for build in builds}, "rounds": args.rounds},
    )


SQLITE_DEFAULT_CACHE_KIB: Final = 2000


def outbox_cpu_us(directory: str | None, cache_kib: int, backlog: int) -> tuple[float, float]:
    """(CPU us per single high-priority put, per drained row) on top of ``backlog`` rows."""
    with (
        tempfile.TemporaryDirectory(prefix="edge-footprint-cache-", dir=directory) as state,
        Outbox(Path(state) / "outbox.db", max_bytes=4096 * MIB, page_cache_kib=cache_kib) as box,
    ):
        for first in range(1, backlog + 1, 500):
            box.put_many(
                [outbox_bench.payment(seq) for seq in range(first, min(first + 500, backlog + 1))]
            )
        singles = [outbox_bench.payment(seq) for seq in range(backlog + 1, backlog + 2001)]
        start = time.process_time()
        for entry in singles:
            box.put(entry.topic, entry.payload, entry.priority, entry.device, entry.seq)
        put_us = (time.process_time() - start) / len(singles) * 1e6
        start, drained = time.process_time(), 0
        while rows := box.lease(256):
            drained += box.ack_many([row.row_id for row in rows])
        return put_us, (time.process_time() - start) / drained * 1e6


def page_cache_cost(args: argparse.Namespace) -> None:
    sizes = {"agent": PAGE_CACHE_KIB, "sqlite_default": SQLITE_DEFAULT_CACHE_KIB}
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in sizes}
    for _ in range(args.rounds):
        for name, kib in sizes.items():
            runs[name].append(outbox_cpu_us(args.dir, kib, args.cache_backlog))
    figures: dict[str, object] = {"backlog_rows": args.cache_backlog, "rounds": args.rounds}
    for name, kib in sizes.items():
        figures[name] = {
            "cache_kib": kib,
            "put_cpu_us": round(median([put for put, _ in runs[name]]), 1),
            "drain_cpu_us_per_row": round(median([drain for _, drain in runs[name]]), 2),
            "put_cpu_us_rounds": [round(put, 1) for put, _ in runs[name]],
        }
    emit("edge_footprint_page_cache", figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("run", "imports", "page-cache"), default="run")
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
    parser.add_argument(
        "--no-tls", dest="tls", action="store_false", help="the agent on plain TCP (default: TLS)"
    )
    parser.add_argument("--cache-backlog", type=int, default=50_000, help="rows (page-cache)")
    parser.add_argument(
        "--agent",
        metavar="PATH",
        action="append",
        type=Path,
        help="a checkout or a venv with tillpulse installed (repeatable; default: this checkout)",
    )
    args = parser.parse_args()
    builds = [AgentBuild(path.resolve()) for path in args.agent or [ROOT]]
    if args.part == "imports":
        import_breakdown(args, builds)
        return
    if args.part == "page-cache":
        page_cache_cost(args)
        return
    logging.getLogger("firmware_sim").setLevel(logging.ERROR)  # "store full" is the throttle

    others = set(range(os.cpu_count() or 1)) - {AGENT_CORE}
    if others:
        os.sched_setaffinity(0, others)  # terminals, broker, subscriber: off the agent's core
    rounds: dict[AgentBuild, list[tuple[Phase, Phase, float, int]]] = {b: [] for b in builds}
    with tempfile.TemporaryDirectory(prefix="edge-footprint-mqtt-") as workdir:
        tls_config, tls_port, ca_file = "", None, None
        if args.tls:
            tls_port = free_port()
            ca_file, cert_file, key_file = make_pki(Path(workdir), LOCALHOST)
            tls_config = (
                f"listener {tls_port} {LOCALHOST}\ncafile {ca_file}\n"
                f"certfile {cert_file}\nkeyfile {key_file}\n"
            )
        with MosquittoServer(Path(workdir), extra_config=tls_config) as broker:
            address = BrokerAddress(broker.host, tls_port or broker.port, ca_file)
            for _ in range(args.rounds):
                for build in builds:
                    rounds[build].append(one_round(broker, address, args, build))

    emit(
        "edge_footprint",
        {
            "shape": "payment/1 over serial ptys, fsync before LinkAck, agent pinned to 1 core",
            "devices": args.devices,
            "tls": args.tls,
            "rounds": args.rounds,
            "agents": {str(build.path): summary(rounds[build]) for build in builds},
            "agent_cpus": sorted({AGENT_CORE}),
            "other_cpus": sorted(others),
        },
    )


def summary(rounds: list[tuple[Phase, Phase, float, int]]) -> dict[str, object]:
    """The medians of one agent's rounds."""
    slow = [r[0] for r in rounds]
    fast = [r[1] for r in rounds]
    return {
        "max_events_per_s": round(median([p.events_per_s for p in fast])),
        "max_events_per_s_rounds": [round(p.events_per_s) for p in fast],
        "max_cpu_ms_per_1000_events": round(median([p.cpu_ms_per_1000 for p in fast]), 1),
        "max_agent_core_busy": round(median([p.core_busy for p in fast]), 2),
        "max_rest_busy": round(median([p.rest_busy for p in fast]), 2),
        "max_rss_mib": round(median([p.rss_mib for p in fast]), 1),
        "max_rss_mib_rounds": [round(p.rss_mib, 1) for p in fast],
        "slow_events_per_s": round(median([p.events_per_s for p in slow]), 1),
        "slow_cpu_ms_per_1000_events": round(median([p.cpu_ms_per_1000 for p in slow]), 1),
        "slow_agent_core_busy": round(median([p.core_busy for p in slow]), 3),
        "slow_rss_mib": round(median([p.rss_mib for p in slow]), 1),
        "peak_rss_mib": round(median([r[2] for r in rounds]), 1),
        "outbox_depth_at_end": [r[3] for r in rounds],
    }


if __name__ == "__main__":
    main()
