"""The edge agent end to end: simulated terminals on ptys -> the real agent -> real Mosquitto.

Every test counts what actually arrives on an MQTT subscriber (``tp/v1/dev/#``).
The agent runs as a child process (``python -m edge run``) where process death or
its logs matter, and in-process (`edge.agent.Agent` on a thread) where a test needs
a setting the config schema refuses (a tiny outbox) or the agent's own counters.
Full-disk tests put the state dir on a real small tmpfs (``small_disk_factory``).
"""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from edge import host_health
from edge.agent import Agent
from edge.config import EdgeConfig, OutboxSection, load_edge_config
from edge.outbox import DropReason
from edge.serial_source import SourceStats
from edge.status import AgentStatus, read_status
from firmware_sim.event_engine import SimMessage
from firmware_sim.serial_link import SerialDevice
from testkit.factories import payment as payment_message
from testkit.mqtt_collector import Collector
from testkit.servers import MosquittoServer, wait_until
from tests.conftest import SmallDisk
from wire.messages import (
    STREAM_FOR_MESSAGE,
    HostHealth,
    PaymentTransaction,
    TerminalStatus,
    decode,
    encode,
)
from wire.topics import Stream, device_topic

pytestmark = pytest.mark.integration

SITE = "s0001"
AGENT_ID = "s0001-pi1"
PAN = "5555555555554444"  # Luhn-valid: a card number the device must never get through
TS = 1_764_000_000_000_000_000
ALL_DEVICES = "tp/v1/dev/#"


# -- messages ----------------------------------------------------------------------------


def payment(device: str, seq: int, txn_id: str | None = None) -> PaymentTransaction:
    return payment_message(
        site=SITE, device=device, ts=TS + seq, seq=seq, txn_id=txn_id or f"{device}-t{seq}"
    )


def status(device: str, seq: int, firmware: str = "pos-4.2.1") -> TerminalStatus:
    return TerminalStatus(
        site=SITE,
        device=device,
        ts=TS + seq,
        seq=seq,
        battery_pct=80.0,
        charging=True,
        paper_pct=55.0,
        signal_dbm=-60,
        temperature_c=31.5,
        tamper=False,
        firmware=firmware,
        offline_queue=0,
        uptime_s=3600 + seq,
    )


# -- a terminal on a pty -------------------------------------------------------------------


class Terminal:
    """A `SerialDevice` driven from its own thread: reads LinkAcks, flushes, re-sends.

    `SerialDevice` is not thread-safe, so every use goes through one lock.
    `pause_reading` stops reading acknowledgements (they stay on the line), as
    a terminal that is unplugged before it saw them.
    """

    def __init__(self, device: str, *, retransmit_s: float = 2.0) -> None:
        self.device = device
        self.link = SerialDevice(device, retransmit_s=retransmit_s, queue_limit=100_000)
        self.port = self.link.port
        self.sent: dict[tuple[Stream, int], SimMessage] = {}  # by stream and seq
        self.closed = False
        self._lock = threading.Lock()
        self._reading = threading.Event()
        self._reading.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drive, name=f"terminal:{device}", daemon=True)
        self._thread.start()

    def _drive(self) -> None:
        while not self._stop.is_set():
            if self._reading.is_set():
                readable, _, _ = select.select([self.link.fileno()], [], [], 0.01)
            else:
                readable = []
                self._stop.wait(0.01)
            with self._lock:
                if readable and self._reading.is_set():
                    self.link.on_readable()
                self.link.flush()
                self.link.retransmit(time.monotonic())

    def send(self, *messages: SimMessage) -> None:
        with self._lock:
            for message in messages:
                self.sent.setdefault((STREAM_FOR_MESSAGE[type(message)], message.seq), message)
                self.link.send(message)

    def payments(self, first: int, count: int) -> None:
        self.send(*(payment(self.device, seq) for seq in range(first, first + count)))

    def corrupt_next(self, frames: int) -> None:
        with self._lock:
            self.link.corrupt_next(frames)

    def inject_noise(self, bursts: int) -> None:
        with self._lock:
            self.link.inject_noise(bursts)

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    @property
    def unacked(self) -> int:
        with self._lock:
            return self.link.unacked

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.link.close()
        self.closed = True


# -- the agent and its world --------------------------------------------------------------


class AgentProcess:
    """``tillpulse edge run --config FILE`` as the systemd unit runs it (through
    ``python -m tillpulse``: the console script's code); stderr to a file.
    ``python_flags`` go to the interpreter (e.g. ``-X importtime``, also logged there)."""

    def __init__(self, config: Path, *python_flags: str) -> None:
        self.log_path = config.parent / "agent.log"
        command = ["tillpulse", "edge", "run", "--config", str(config)]
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()  # the log of this run starts here
            self.process = subprocess.Popen(
                [sys.executable, *python_flags, "-m", *command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def log(self) -> str:
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")


class AgentThread:
    """The agent in this process, on a thread; stopped cleanly by `close`."""

    def __init__(self, config: EdgeConfig) -> None:
        self.agent = Agent(config)
        self._thread = threading.Thread(target=self.agent.run, name="agent", daemon=True)
        self._thread.start()
        wait_until(
            lambda: all(source.stats.open for source in self.agent.sources),
            20,
            message="serial ports not opened",
        )

    @property
    def source(self) -> SourceStats:
        return self.agent.sources[0].stats

    def close(self) -> None:
        self.agent.stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the agent did not stop"


class Rig:
    """One test's world: a broker, terminals on ptys, the agent's config file, agents."""

    def __init__(self, directory: Path, broker: MosquittoServer) -> None:
        self.broker = broker
        self.config = directory / "edge.toml"
        self.state = directory / "state"
        self.terminals: list[Terminal] = []
        self.agents: list[AgentProcess] = []

    def terminal(self, number: int = 1, *, retransmit_s: float = 2.0) -> Terminal:
        made = Terminal(f"{SITE}-pos{number}", retransmit_s=retransmit_s)
        self.terminals.append(made)
        return made

    def configure(self, *ports: str, health_interval_s: float = 3600) -> EdgeConfig:
        """Write the agent's config file (one ``[[serial]]`` per port) and load it."""
        self.config.write_text(
            f'[agent]\nsite = "{SITE}"\ndevice = "{AGENT_ID}"\nstate_dir = "{self.state}"\n'
            f'[mqtt]\nhost = "{self.broker.host}"\nport = {self.broker.port}\nkeepalive_s = 5\n'
            "reconnect_min_s = 0.05\nreconnect_max_s = 0.5\n"
            f"[health]\ninterval_s = {health_interval_s}\n"
            + "".join(f'[[serial]]\nport = "{port}"\n' for port in ports)
        )
        return load_edge_config(self.config)

    def start_agent(self, *python_flags: str) -> AgentProcess:
        """Start the agent process and wait until it opened every port: pyserial flushes
        the line on open, so a sample sent before then is lost (a payment is re-sent)."""
        ports = len(load_edge_config(self.config).serial)
        agent = AgentProcess(self.config, *python_flags)
        self.agents.append(agent)
        wait_until(
            lambda: agent.log().count("event=serial_opened") >= ports,
            20,
            interval=0.05,
            message=lambda: f"serial ports not opened; log:\n{agent.log()}",
        )
        return agent

    def subscribe(self, client_id: str | None = None, session_expiry_s: int = 0) -> Collector:
        return Collector(
            self.broker.host,
            self.broker.port,
            ALL_DEVICES,
            client_id=client_id,
            session_expiry_s=session_expiry_s,
        )

    def edge_status(self, *flags: str) -> subprocess.CompletedProcess[str]:
        """``tillpulse edge status`` as a user runs it."""
        return subprocess.run(
            [sys.executable, "-m", "edge", "status", "--config", str(self.config), *flags],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def status_file(self) -> AgentStatus | None:
        """The agent's last status, or None before it wrote one (or caught mid-write:
        on a full disk the agent overwrites it in place)."""
        try:
            return read_status(self.state)
        except (FileNotFoundError, msgspec.DecodeError):
            return None

    def wait_for_status(self, what: str, check: Callable[[AgentStatus], bool]) -> AgentStatus:
        """Wait (the agent writes its status every 2 s) until ``check(status)`` holds."""

        def ready() -> AgentStatus | None:
            current = self.status_file()
            return current if current is not None and check(current) else None

        found = wait_until(
            ready, 15, interval=0.1, message=lambda: f"{what}; status: {self.status_file()}"
        )
        assert found is not None
        return found

    def close(self) -> None:
        for agent in self.agents:
            if agent.process.poll() is None:
                agent.kill()
        for terminal in self.terminals:
            if not terminal.closed:
                terminal.close()


@pytest.fixture
def small_state_dir(rig: Rig, small_disk_factory: Callable[..., SmallDisk]) -> SmallDisk:
    """The rig's state dir on a 4 MiB tmpfs of its own: small enough to fill, big enough
    that SQLite's WAL (checkpointed at ~4 MB) never restarts, so a full disk fails writes."""
    disk = small_disk_factory(size_bytes=4 << 20)
    rig.state = disk.path / "state"
    return disk


@pytest.fixture
def rig(tmp_path: Path, mosquitto: MosquittoServer) -> Iterator[Rig]:
    made = Rig(tmp_path, mosquitto)
    yield made
    made.close()


# -- what arrived ----------------------------------------------------------------------------


def arrived(sub: Collector, device: str, stream: Stream) -> list[bytes]:
    """Payloads on ``device``'s ``stream`` topic, in arrival order (duplicates included)."""
    topic = device_topic(SITE, device, stream)
    return [payload for t, payload, _ in sub.snapshot() if t == topic]


def seqs(payloads: list[bytes]) -> list[int]:
    return [msgspec.json.decode(payload)["seq"] for payload in payloads]


def first_seqs(payloads: list[bytes]) -> list[int]:
    """The seq of each payload's first arrival, in arrival order."""
    return list(dict.fromkeys(seqs(payloads)))


def wait_for_seqs(sub: Collector, terminal: Terminal, stream: Stream, wanted: set[int]) -> None:
    def missing() -> set[int]:
        return wanted - set(seqs(arrived(sub, terminal.device, stream)))

    wait_until(
        lambda: not missing(),
        60,
        interval=0.05,
        message=lambda: f"{terminal.device} {stream}: {len(missing())} of {len(wanted)} missing",
    )


def wait_acked(terminal: Terminal) -> None:
    wait_until(
        lambda: terminal.unacked == 0,
        30,
        message=lambda: f"{terminal.device}: {terminal.unacked} payments not acknowledged",
    )


def assert_only_redeliveries(sub: Collector, terminal: Terminal) -> int:
    """Every payload on the payment topic is a payment the terminal sent, byte for byte;
    returns how many arrived more than once."""
    payloads = arrived(sub, terminal.device, Stream.PAYMENT)
    for payload in payloads:
        assert payload == encode(terminal.sent[Stream.PAYMENT, msgspec.json.decode(payload)["seq"]])
    return len(payloads) - len(set(payloads))


# -- tests -----------------------------------------------------------------------------------


def test_payments_and_status_flow_end_to_end_and_are_acknowledged(rig: Rig) -> None:
    terminals = [rig.terminal(1), rig.terminal(2)]
    rig.configure(*(t.port for t in terminals))
    with rig.subscribe() as sub:
        rig.start_agent()
        for terminal in terminals:  # each stream numbered by its own counter
            for seq in range(1, 46):
                terminal.send(payment(terminal.device, seq))
                if seq % 3 == 0:
                    terminal.send(status(terminal.device, seq // 3))
        for terminal in terminals:
            wait_for_seqs(sub, terminal, Stream.PAYMENT, set(range(1, 46)))
            wait_for_seqs(sub, terminal, Stream.STATUS, set(range(1, 16)))
            wait_acked(terminal)
        health = device_topic(SITE, AGENT_ID, Stream.HEALTH)
        wait_until(lambda: any(t == health for t, _, _ in sub.snapshot()), 10, message="no health")
        messages = sub.snapshot()

    for topic, payload, _ in messages:
        message = decode(payload)  # every payload is a valid wire message
        if isinstance(message, PaymentTransaction | TerminalStatus):
            stream = Stream.PAYMENT if isinstance(message, PaymentTransaction) else Stream.STATUS
            assert topic == device_topic(SITE, message.device, stream)
    for terminal in terminals:
        payloads = arrived(sub, terminal.device, Stream.PAYMENT) + arrived(
            sub, terminal.device, Stream.STATUS
        )
        assert sorted(set(payloads)) == sorted(map(encode, terminal.sent.values()))
        assert terminal.link.acks >= 60 and terminal.link.bad_replies == 0


def test_an_agent_sharing_its_terminals_id_keeps_every_stream_whole(rig: Rig) -> None:
    """The agent's HostHealth and its terminal's payments and heartbeats under one
    (site, device): each stream counts on its own and each arrives whole. The terminal's
    first payments are damaged on the line while its heartbeats with the same seqs get
    through: their acks name the status stream, so the payments are held and re-sent."""
    terminal = Terminal(AGENT_ID, retransmit_s=0.3)  # the Pi's id is the terminal's too
    rig.terminals.append(terminal)
    running = AgentThread(rig.configure(terminal.port, health_interval_s=0.2))
    try:
        with rig.subscribe() as sub:
            terminal.corrupt_next(3)
            terminal.payments(1, 3)  # damaged: the agent never sees them
            terminal.send(*(status(terminal.device, seq) for seq in range(1, 4)))
            terminal.payments(4, 3)
            wait_for_seqs(sub, terminal, Stream.STATUS, {1, 2, 3})
            wait_for_seqs(sub, terminal, Stream.PAYMENT, set(range(1, 7)))
            wait_acked(terminal)
            wait_until(lambda: len(arrived(sub, AGENT_ID, Stream.HEALTH)) >= 3, 15)
    finally:
        running.close()
    health = first_seqs(arrived(sub, AGENT_ID, Stream.HEALTH))
    assert health == list(range(health[0], health[0] + len(health)))  # its own counter, no gaps
    assert sorted(first_seqs(arrived(sub, AGENT_ID, Stream.PAYMENT))) == list(range(1, 7))
    assert terminal.link.retransmits >= 3 and terminal.link.bad_replies == 0
    assert_only_redeliveries(sub, terminal)


def test_a_broker_outage_loses_nothing_and_keeps_each_devices_order(rig: Rig) -> None:
    terminals = [rig.terminal(1), rig.terminal(2)]
    rig.configure(*(t.port for t in terminals))
    with rig.subscribe("sub-outage", session_expiry_s=300) as sub:
        rig.start_agent()
        for terminal in terminals:
            terminal.payments(1, 600)
        wait_until(lambda: len(arrived(sub, terminals[0].device, Stream.PAYMENT)) >= 100, 30)
        rig.broker.stop()  # mid-stream
        at_stop = len(set(arrived(sub, terminals[0].device, Stream.PAYMENT)))
        for terminal in terminals:
            terminal.payments(601, 400)  # the terminals keep selling meanwhile
        # stored durably by the agent while the broker is away: the terminals are acked
        for terminal in terminals:
            wait_acked(terminal)
        rig.broker.restart()
        for terminal in terminals:
            wait_for_seqs(sub, terminal, Stream.PAYMENT, set(range(1, 1001)))

    assert at_stop < 600  # the broker went away with payments still to deliver
    for terminal in terminals:
        order = first_seqs(arrived(sub, terminal.device, Stream.PAYMENT))
        assert order == sorted(order) == list(range(1, 1001))
        assert_only_redeliveries(sub, terminal)


def test_sigkill_mid_stream_loses_nothing_and_only_redelivers_the_same_events(rig: Rig) -> None:
    terminal = rig.terminal(retransmit_s=1.0)
    rig.configure(terminal.port)
    with rig.subscribe() as sub:
        rig.start_agent()
        terminal.payments(1, 1500)
        wait_until(lambda: len(arrived(sub, terminal.device, Stream.PAYMENT)) >= 200, 30)
        rig.agents[0].kill()  # mid-stream: rows stored, some published, some acked to the device
        killed_at = len(set(arrived(sub, terminal.device, Stream.PAYMENT)))
        terminal.payments(1501, 500)  # sold while the agent is down: the terminal keeps them
        rig.start_agent()
        wait_for_seqs(sub, terminal, Stream.PAYMENT, set(range(1, 2001)))
        wait_acked(terminal)

    assert 200 <= killed_at < 1500  # the kill really was mid-stream
    assert assert_only_redeliveries(sub, terminal) < 2000


@pytest.mark.slow  # waits for the status file, written every 2 s
def test_a_full_outbox_drops_oldest_samples_counted_and_keeps_every_payment(rig: Rig) -> None:
    terminal = rig.terminal()
    # 16 kB: below the schema's 1 MiB minimum, so built in-process (constructors don't validate)
    config = msgspec.structs.replace(
        rig.configure(terminal.port), outbox=OutboxSection(max_bytes=16_000)
    )
    with rig.subscribe("sub-full", session_expiry_s=300) as sub:
        rig.broker.stop()
        running = AgentThread(config)
        try:
            for seq in range(1, 221):
                terminal.send(
                    payment(terminal.device, seq) if seq % 11 == 0 else status(terminal.device, seq)
                )
            source = running.source
            wait_until(lambda: source.stored + source.dropped >= 220, 30, message=str(source))
            wait_acked(terminal)
            shown = rig.wait_for_status(
                "all 220 messages stored or dropped",
                lambda s: s.sources[0].stored + s.sources[0].dropped == 220,
            )
            result = rig.edge_status("--json")
            assert result.returncode == 0, result.stderr
            cli = msgspec.json.decode(result.stdout, type=AgentStatus)
            assert cli.outbox.dropped_overflow >= shown.outbox.dropped_overflow > 0
            assert cli.outbox.depth_high == 20 and not cli.link.connected
            rig.broker.restart()
            wait_for_seqs(sub, terminal, Stream.PAYMENT, set(range(11, 221, 11)))
            wait_until(lambda: running.agent.outbox.stats().total_depth == 0, 30)
            dropped = running.agent.outbox.stats().dropped
        finally:
            running.close()
        wait_until(
            lambda: (
                len(arrived(sub, AGENT_ID, Stream.HEALTH))
                + len(arrived(sub, terminal.device, Stream.STATUS))
                + dropped[DropReason.OVERFLOW]
                >= 201
            ),
            10,
        )
        statuses = seqs(arrived(sub, terminal.device, Stream.STATUS))
        health = arrived(sub, AGENT_ID, Stream.HEALTH)

    sent_statuses = [seq for seq in range(1, 221) if seq % 11]
    # oldest first: what survived is the newest statuses, in order, nothing in between
    assert statuses == sent_statuses[len(sent_statuses) - len(statuses) :]
    assert 0 < len(statuses) < 200
    # every low-priority sample (200 statuses, one host-health) either arrived or was counted
    assert len(statuses) + len(health) + dropped[DropReason.OVERFLOW] == 201
    assert dropped[DropReason.EXPIRED] == 0 and terminal.link.samples_dropped == 0
    assert first_seqs(arrived(sub, terminal.device, Stream.PAYMENT)) == list(range(11, 221, 11))


def test_an_unplugged_device_is_reopened_when_it_comes_back(rig: Rig, tmp_path: Path) -> None:
    before = rig.terminal()
    plug = tmp_path / "ttyUSB0"  # what udev's by-id symlink would be
    plug.symlink_to(before.port)
    running = AgentThread(rig.configure(str(plug)))
    source = running.source
    try:
        with rig.subscribe() as sub:
            before.payments(1, 10)
            wait_acked(before)
            before.pause_reading()  # the next acks never reach the terminal...
            before.payments(11, 10)
            wait_until(lambda: source.stored == 20, 10, message=str(source))
            unacked = before.unacked
            plug.unlink()  # ...because it is unplugged: the USB device node disappears
            before.close()
            wait_until(lambda: not source.open, 10, message="the agent did not notice")

            after = rig.terminal()  # plugged back in: a new tty
            plug.symlink_to(after.port)
            wait_until(lambda: source.open and source.opens == 2, 15, message=str(source))
            # the terminal re-sends what was never acknowledged, then sells on
            after.send(*(before.sent[Stream.PAYMENT, seq] for seq in range(11, 21)))
            after.payments(21, 10)
            wait_for_seqs(sub, after, Stream.PAYMENT, set(range(1, 31)))
            wait_acked(after)
    finally:
        running.close()
    assert unacked == 10
    assert source.opens == 2 and after.link.acks == 20
    assert source.duplicates + source.stored == 40


def test_a_terminal_slow_to_read_its_acks_keeps_its_port_and_loses_nothing(rig: Rig) -> None:
    terminal = rig.terminal(retransmit_s=1.0)
    running = AgentThread(rig.configure(terminal.port))
    source = running.source
    try:
        with rig.subscribe() as sub:
            terminal.pause_reading()  # busy: the acks back up on the line
            terminal.payments(1, 1000)
            wait_until(lambda: source.ack_timeouts > 0, 20, message=str(source))
            terminal.resume_reading()
            wait_for_seqs(sub, terminal, Stream.PAYMENT, set(range(1, 1001)))
            wait_acked(terminal)
    finally:
        running.close()
    # not mistaken for an unplugged device: the port was never reopened (which would
    # have flushed whatever the terminal had sent meanwhile)
    assert source.opens == 1
    assert_only_redeliveries(sub, terminal)


def test_corrupt_frames_are_counted_while_good_ones_are_delivered(rig: Rig) -> None:
    terminal = rig.terminal(retransmit_s=0.3)
    running = AgentThread(rig.configure(terminal.port))
    try:
        with rig.subscribe() as sub:
            terminal.corrupt_next(3)  # the first three payments: re-sent intact
            terminal.payments(1, 5)
            terminal.inject_noise(4)
            terminal.send(*(status(terminal.device, seq) for seq in range(6, 11)))
            terminal.corrupt_next(2)
            terminal.payments(11, 10)
            wait_for_seqs(sub, terminal, Stream.PAYMENT, {*range(1, 6), *range(11, 21)})
            wait_for_seqs(sub, terminal, Stream.STATUS, set(range(6, 11)))
            wait_acked(terminal)
            damaged = terminal.link.frames_corrupted + terminal.link.noise_bursts
            shown = rig.wait_for_status(
                f"{damaged} bad frames",
                lambda s: (
                    s.sources[0].frames is not None and s.sources[0].frames.frames_bad == damaged
                ),
            )
    finally:
        running.close()
    assert terminal.link.frames_corrupted == 5 and terminal.link.noise_bursts == 4
    assert shown.sources[0].invalid == 0 and shown.sources[0].pci_refused == 0
    assert_only_redeliveries(sub, terminal)


@pytest.mark.slow  # waits for the status file, written every 2 s
def test_a_card_number_is_refused_counted_and_never_published_logged_or_kept(rig: Rig) -> None:
    terminal = rig.terminal(retransmit_s=60)
    rig.configure(terminal.port)
    with rig.subscribe() as sub:
        agent = rig.start_agent()
        terminal.send(
            payment(terminal.device, 1),
            status(terminal.device, 2, firmware=PAN),
            payment(terminal.device, 3, txn_id=f"t-{PAN}"),
            payment(terminal.device, 4),
        )
        wait_for_seqs(sub, terminal, Stream.PAYMENT, {1, 4})
        shown = rig.wait_for_status("2 refused", lambda s: s.sources[0].pci_refused == 2)
        assert agent.terminate() == 0
        published = sub.snapshot()

    assert shown.sources[0].invalid == 0
    assert terminal.unacked == 1  # the terminal keeps the refused payment: never acked
    assert all(PAN.encode() not in payload for _, payload, _ in published)
    assert {2, 3}.isdisjoint(seqs(arrived(sub, terminal.device, Stream.PAYMENT)))
    log = agent.log()
    assert log.count("pci_refused") == 2 and PAN not in log
    for path in rig.state.rglob("*"):  # dead letters, the outbox and its WAL, the status file
        if path.is_file():
            assert PAN.encode() not in path.read_bytes(), path


@pytest.mark.slow  # waits for the status file, written every 2 s
def test_edge_status_shows_a_running_agent_and_says_when_it_is_not(rig: Rig) -> None:
    terminal = rig.terminal()
    rig.configure(terminal.port)
    with rig.subscribe() as sub:
        agent = rig.start_agent()
        terminal.payments(1, 5)
        wait_for_seqs(sub, terminal, Stream.PAYMENT, set(range(1, 6)))
    rig.wait_for_status("5 delivered", lambda s: s.publishing.acked >= 5 and s.link.connected)

    text = rig.edge_status()
    assert text.returncode == 0, text.stderr
    assert "link       connected" in text.stdout and terminal.port in text.stdout
    assert "stored=5" in text.stdout and "outbox     high=0 low=0" in text.stdout
    as_json = rig.edge_status("--json")
    assert as_json.returncode == 0, as_json.stderr
    shown = msgspec.json.decode(as_json.stdout, type=AgentStatus)
    assert shown.running and shown.link.connected and shown.device == AGENT_ID
    assert shown.outbox.depth_high == 0 and shown.outbox.dropped_overflow == 0
    [port] = shown.sources
    assert (port.port, port.open, port.stored) == (terminal.port, True, 5)

    assert agent.terminate() == 0
    stopped = rig.edge_status()
    assert stopped.returncode == 4 and "STOPPED" in stopped.stdout
    # a killed agent leaves a status that says running; 30 s later it is stale
    last = rig.status_file()
    assert last is not None
    stale = msgspec.structs.replace(last, running=True, written_unix=time.time() - 60)
    (rig.state / "status.json").write_bytes(msgspec.json.encode(stale))
    result = rig.edge_status("--json")
    assert result.returncode == 4 and msgspec.json.decode(result.stdout, type=AgentStatus).running
    assert "STALE" in rig.edge_status().stdout


# -- a full or failing disk ------------------------------------------------------------------


def degraded_by(part: str) -> Callable[[AgentStatus], bool]:
    return lambda s: s.running and any(reason.startswith(f"{part}: ") for reason in s.degraded)


@pytest.mark.slow  # waits for the status file, written every 2 s
def test_a_disk_filling_up_degrades_the_agent_which_recovers_by_itself_losing_nothing(
    rig: Rig, small_state_dir: SmallDisk
) -> None:
    terminal = rig.terminal(retransmit_s=0.5)
    rig.configure(terminal.port)
    with rig.subscribe() as sub:
        agent = rig.start_agent()
        terminal.payments(1, 50)
        wait_for_seqs(sub, terminal, Stream.PAYMENT, set(range(1, 51)))
        wait_acked(terminal)
        rig.wait_for_status("a first status", lambda s: s.running)
        small_state_dir.fill()
        terminal.payments(51, 50)  # sold while the disk is full
        rig.wait_for_status("outbox degraded", degraded_by("outbox"))
        full = rig.edge_status()
        assert full.returncode == 3, full.stderr
        assert "DEGRADED   outbox: " in full.stdout and "disk full" in full.stdout
        assert agent.process.poll() is None and terminal.unacked > 0  # the terminal keeps them

        small_state_dir.free()
        wait_for_seqs(sub, terminal, Stream.PAYMENT, set(range(1, 101)))
        wait_acked(terminal)
        rig.wait_for_status("healthy again", lambda s: s.running and not s.degraded)
        healthy = rig.edge_status()
        assert healthy.returncode == 0 and "DEGRADED" not in healthy.stdout

    assert agent.terminate() == 0
    assert_only_redeliveries(sub, terminal)
    assert "Traceback" not in agent.log()


@pytest.mark.slow  # waits for the status file, written every 2 s
def test_the_agent_starts_on_a_full_disk_degraded_and_delivers_its_outbox(
    rig: Rig, small_state_dir: SmallDisk
) -> None:
    terminal = rig.terminal(retransmit_s=0.5)
    rig.configure(terminal.port)
    with rig.subscribe("sub-full-start", session_expiry_s=300) as sub:
        rig.broker.stop()
        first = rig.start_agent()
        terminal.payments(1, 30)
        wait_acked(terminal)  # in the outbox: the broker is away
        assert first.terminate() == 0  # a clean stop: SQLite removes its WAL and index files
        small_state_dir.fill()
        rig.broker.restart()

        agent = rig.start_agent()  # its serial port opens on the full disk
        wait_for_seqs(sub, terminal, Stream.PAYMENT, set(range(1, 31)))  # drained from it
        terminal.payments(31, 10)
        shown = rig.wait_for_status("outbox degraded", degraded_by("outbox"))
        assert any(reason.startswith("sequence: ") for reason in shown.degraded)
        assert rig.edge_status().returncode == 3
        assert agent.process.poll() is None and terminal.unacked > 0

        small_state_dir.free()
        wait_for_seqs(sub, terminal, Stream.PAYMENT, set(range(1, 41)))
        wait_acked(terminal)
        rig.wait_for_status("healthy again", lambda s: s.running and not s.degraded)

    assert agent.terminate() == 0
    assert_only_redeliveries(sub, terminal)
    assert "Traceback" not in agent.log()


@pytest.mark.slow  # waits for the status file, written every 2 s
def test_a_failing_sequence_file_skips_health_samples_and_the_agent_runs_on(rig: Rig) -> None:
    terminal = rig.terminal()
    rig.configure(terminal.port, health_interval_s=0.2)
    blocker = rig.state / "agent.seq.tmp"  # where the sequence file's next block goes first
    blocker.mkdir(parents=True)
    with rig.subscribe() as sub:
        agent = rig.start_agent()
        terminal.payments(1, 5)
        wait_for_seqs(sub, terminal, Stream.PAYMENT, set(range(1, 6)))
        shown = rig.wait_for_status(
            "samples skipped",
            lambda s: degraded_by("sequence")(s) and s.health_samples_skipped >= 3,
        )
        assert rig.edge_status().returncode == 3
        assert arrived(sub, AGENT_ID, Stream.HEALTH) == []  # no sample with an unreserved seq

        blocker.rmdir()
        wait_until(lambda: len(arrived(sub, AGENT_ID, Stream.HEALTH)) >= 3, 15)
        rig.wait_for_status("healthy again", lambda s: s.running and not s.degraded)
        assert agent.process.poll() is None

    assert agent.terminate() == 0
    assert seqs(arrived(sub, AGENT_ID, Stream.HEALTH))[:3] == [0, 1, 2]
    assert shown.sources[0].stored == 5


def test_an_unexpected_error_in_a_health_sample_is_counted_and_sampling_goes_on(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = rig.terminal()
    calls: list[int] = []
    real_sample = host_health.sample

    def fails_once(**fields: Any) -> HostHealth:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in sampling")
        return real_sample(**fields)

    monkeypatch.setattr(host_health, "sample", fails_once)
    running = AgentThread(rig.configure(terminal.port))
    try:
        wait_until(lambda: len(calls) >= 2, 15, message="no second health sample")
        assert running.agent.health_samples_skipped == 1
        assert not running.agent.stop.is_set()  # no worker died
    finally:
        running.close()


# Modules `edge run` has no use for: other components' libraries, or machinery nothing
# on its path needs. Each would cost memory on every Raspberry Pi (BENCHMARKS.md,
# "Edge agent footprint").
UNNEEDED_BY_THE_AGENT = frozenset(
    {
        *("gateway", "cloud", "firmware_sim", "dashboards", "broker", "testkit"),
        *("runtime.influx_sinks", "influxdb_client", "urllib3", "rich", "sklearn", "numpy"),
        *("asyncio", "concurrent.futures", "multiprocessing", "logging.handlers"),
        # host health reads libc from the process itself: no ldconfig run per sample
        *("ctypes.util", "subprocess"),
        # paho's urllib.request (for PySocks only) and what it brings: edge.unused_imports
        *("urllib.request", "http.client", "email.message", "calendar"),
        # records are msgspec structs; the version is looked up only for --version
        *("dataclasses", "importlib.metadata"),
    }
)


def test_a_running_agent_imports_nothing_it_does_not_use(rig: Rig) -> None:
    terminal = rig.terminal()
    rig.configure(terminal.port)
    with rig.subscribe() as sub:
        agent = rig.start_agent("-X", "importtime")
        terminal.payments(1, 1)
        wait_until(
            lambda: (
                arrived(sub, terminal.device, Stream.PAYMENT)
                and arrived(sub, AGENT_ID, Stream.HEALTH)
            ),
            15,
            message="no payment or no health sample arrived",
        )
    assert agent.terminate() == 0

    imported = {
        line.rpartition("|")[2].strip()
        for line in agent.log().splitlines()
        if line.startswith("import time:")
    }
    assert {"edge.agent", "paho.mqtt.client", "serial", "sqlite3"} <= imported  # what it runs
    assert not imported & UNNEEDED_BY_THE_AGENT, sorted(imported & UNNEEDED_BY_THE_AGENT)
