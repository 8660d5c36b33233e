"""The whole local pipeline for one demo run, started, watched and stopped in order.

    Mosquitto, influxd   servers on free ports, data in <state>/ (testkit.servers)
                         Mosquitto on 127.0.0.1 with accounts only, client id =
                         username, so nothing can take another's session: the
                         gateway's, the cloud jobs', the demo's own watcher's, and
                         one per simulated device (its device id; one shared
                         password), which its edge agent uses for a serial terminal;
                         the ACL rendered from the demo's device registry
                         (<state>/registry.toml, `broker.acl`): each device may
                         publish only under its own id at its own site
    gateway              ``python -m gateway run``: MQTT -> InfluxDB (v1 sink)
    history              ``python -m tillpulse.demo.fleet_process --quiet``: the quiet day before,
                         as fast as possible over MQTT; the model is trained on it
                         (`cloud.jobs.schedule.train_model`)
    fleet                ``python -m tillpulse.demo.fleet_process``: the demo day, accelerated
      ├─ N terminals on ptys ─▶ an edge agent each (``python -m edge run``) ─▶ MQTT
      └─ the rest ────────────▶ MQTT, each device its own client
    cloud detection      in this process: `cloud.jobs.schedule.make_detection`, and
                         `cloud.jobs.schedule.run_range` as simulated windows are delivered

The simulated clock runs ``accel`` times faster than the wall clock, so
detection cannot follow the wall clock (`cloud.jobs.schedule.run_live`). It follows
what the pipeline has delivered instead: the fleet reports, a few times a
second, the simulated time it has reached and how many events it has sent by
then; a window is detected once InfluxDB holds at least as many events as the
fleet had sent when it got past the window's end, and ``lag_s`` wall seconds
have passed since (slack for events that overtake each other). So a slow
gateway delays detection instead of making it miss data.

When the fleet is done the demo waits until InfluxDB holds every event the
fleet sent, detects the last windows, and scores the alerts against the
fleet's ground truth (`cloud.evaluation.scoring`); `Demo.close` stops everything in
reverse order.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import queue
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import msgspec

from broker.acl import render_acl
from broker.registry import Registry, parse_registry
from cloud.config import CloudConfig, CloudMqttSection, CloudSection, QuerySection
from cloud.evaluation.scoring import Report, evaluate
from cloud.jobs.cycle import CycleReport
from cloud.jobs.schedule import make_detection, make_outputs, run_range, train_model
from cloud.reading.window import Shard
from edge.status import read_status
from firmware_sim.fleet_layout import DeviceKind, build_fleet
from runtime.config_sections import InfluxSection
from testkit.servers import (
    InfluxDB1Server,
    MosquittoServer,
    ServerError,
    ServerHTTPError,
    free_port,
    http_request,
    wait_until,
)
from tillpulse.demo import defaults, watch
from tillpulse.demo.fleet_process import FleetMessage
from tillpulse.demo.processes import Child
from tillpulse.demo.trading_day import day_length_ns, day_start_ns
from wire.labels import GroundTruthLabel, read_labels
from wire.messages import Alert, encode
from wire.timestamps import NS_PER_DAY, NS_PER_S

DATABASE: Final = "tillpulse"
WINDOW_S: Final = 300
MARKER: Final = ".tillpulse-demo"  # in a state directory the demo made (and may wipe)
TICK_S: Final = 0.25
QUERY_EVERY_S: Final = 1.0
STARTUP_TIMEOUT_S: Final = 30.0
HISTORY_STATUS_EVERY_S: Final = 600.0  # training needs payments; heartbeats only now and then
LABELS: Final = {"fleet": "labels.jsonl", "history": "history-labels.jsonl"}  # ground truth
GATEWAY_ID: Final = "demo-gw"  # also its broker account
CLOUD_ACCOUNT: Final = "demo-cloud"  # the cloud jobs' broker account and client id
WATCH_ACCOUNT: Final = "demo-watch"  # the live view's online/offline subscriber
DEVICES_SECRET: Final = "devices"  # the simulated devices' shared password, in secrets/


class DemoError(ServerError):
    """The demo cannot go on; the message says why (and where the logs are)."""


@dataclass(frozen=True, slots=True)
class DemoSettings:
    terminals: int = defaults.TERMINALS
    sensors: int = defaults.SENSORS
    serial: int = defaults.SERIAL
    duration_s: float = defaults.DURATION_S
    seed: int = defaults.SEED
    state_dir: Path = defaults.STATE_DIR
    lag_s: float = 1.0  # and at least this long (wall) after the fleet got past a window's end
    drain_timeout_s: float = 90.0  # after the fleet is done: until every event is stored
    start_ns: int = field(default_factory=day_start_ns)
    sim_ns: int = field(default_factory=day_length_ns)

    @property
    def accel(self) -> float:
        return self.sim_ns / NS_PER_S / self.duration_s

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.sim_ns


@dataclass(slots=True)
class Snapshot:
    """What the live view shows; figures that are not known yet are None."""

    sim_ns: int
    progress: float  # share of the simulated day done
    accel: float
    wall_s: float
    phase: str
    sent: int = 0
    stored: int | None = None
    online: int = 0
    offline: int = 0
    terminals: int = 0
    payments_per_s: float | None = None  # simulated seconds, over the last detected window
    approval: float | None = None
    latency_p95_ms: float | None = None
    spool: int | None = None
    outbox: int | None = None
    alerts: list[Alert] = field(default_factory=list)  # the latest few
    alert_count: int = 0


@dataclass(frozen=True, slots=True)
class DemoResult:
    settings: DemoSettings
    sent: dict[str, int]  # by simulator message type
    stored: dict[str, int]
    samples_dropped: int
    history_events: int  # the quiet day before, stored and trained on
    labels: list[GroundTruthLabel]
    alerts: list[Alert]
    report: Report
    wall_s: float

    @property
    def counts_match(self) -> bool:
        return self.sent == self.stored and self.samples_dropped == 0

    @property
    def all_detected(self) -> bool:
        return not self.report.missed

    @property
    def ok(self) -> bool:
        return self.counts_match and self.all_detected


class View:
    """What the pipeline reports to while it runs (the live view, plain lines, or nothing)."""

    def phase(self, text: str) -> None:
        """A start-up or shut-down step."""

    def update(self, snapshot: Snapshot) -> None:
        """The latest figures, a few times a second."""

    def alert(self, alert: Alert) -> None:
        """An alert the cloud jobs just raised."""


def prepare_state_dir(path: Path) -> Path:
    """Empty the state directory of the previous run (only one the demo made); absolute."""
    state = path.resolve()
    if state.exists() and any(state.iterdir()):
        if not (state / MARKER).exists():
            raise DemoError(
                f"{state} is not empty and was not made by the demo: choose another --state-dir"
            )
        shutil.rmtree(state)
    (state / "logs").mkdir(parents=True, exist_ok=True)
    (state / MARKER).write_text("made by `tillpulse demo`; emptied on every run\n")
    return state


class FleetLink:
    """The fleet child's JSON lines, read by a thread: ready, progress, done."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.ready: queue.Queue[FleetMessage] = queue.Queue()
        self.latest: FleetMessage | None = None
        self.done: FleetMessage | None = None
        # (monotonic time, simulated time reached, events sent by then)
        self._history: collections.deque[tuple[float, int, int]] = collections.deque()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name="fleet-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        decoder = msgspec.json.Decoder(FleetMessage)
        for line in self.child.stdout:
            message = decoder.decode(line)
            with self._lock:
                if message.kind == "ready":
                    self.ready.put(message)
                    continue
                self.latest = message
                sent = sum(message.events.get(name, 0) for name in watch.STORED_AS)
                self._history.append((time.monotonic(), message.sim_ns, sent))
                if message.kind == "done":
                    self.done = message

    def delivered_up_to(self, stored: int, before: float, default: int) -> int:
        """The simulated time up to which the pipeline has delivered everything: the
        newest progress report that is older than monotonic time ``before`` and whose
        events sent, ``stored`` (events stored now) covers."""
        reached = default
        with self._lock:
            while len(self._history) > 1 and _covered(self._history[1], stored, before):
                self._history.popleft()
            if self._history and _covered(self._history[0], stored, before):
                reached = self._history[0][1]
        return reached

    def go(self) -> None:
        self.child.stdin.write(b"go\n")
        self.child.stdin.flush()


def _covered(report: tuple[float, int, int], stored: int, before: float) -> bool:
    wall, _, sent = report
    return wall <= before and sent <= stored


class Demo:
    """One run: `run` starts everything and returns the result; `close` stops what runs."""

    def __init__(self, settings: DemoSettings, view: View) -> None:
        self.settings = settings
        self.view = view
        self.state = settings.state_dir.resolve()
        self.mosquitto: MosquittoServer | None = None
        self.influx: InfluxDB1Server | None = None
        self.children: list[Child] = []  # in start order; stopped in reverse
        self.watcher: watch.StateWatcher | None = None
        self.alerts: list[Alert] = []
        self.watch_account = (WATCH_ACCOUNT, secrets.token_urlsafe(24))  # in this process only
        fleet = build_fleet(settings.seed, settings.terminals, settings.sensors)
        self.terminal_ids = frozenset(
            d.device_id for d in fleet.devices if d.kind is DeviceKind.TERMINAL
        )
        self.site_of = {d.device_id: d.site.site_id for d in fleet.devices}

    # -- the run ---------------------------------------------------------------------

    def run(self) -> DemoResult:
        started = time.monotonic()
        s = self.settings
        influx = self._start_servers()
        metrics_url = self._start_gateway()
        config = self._cloud_config()
        history_events = self._train(config)
        fleet, ports = self._start_fleet("fleet")
        agent_dirs = self._start_agents(ports)
        assert self.mosquitto is not None
        self.watcher = watch.StateWatcher(
            self.mosquitto.host,
            self.mosquitto.port,
            s.start_ns,
            account=self.watch_account,
        )
        detection = make_detection(config, Shard(), require_model=True)
        outputs = make_outputs(config)
        monitor = _Monitor(self, influx, metrics_url, agent_dirs, started)
        try:
            self.view.phase("running the simulated day")
            fleet.go()
            due = s.start_ns
            while fleet.done is None:
                self._check_children()
                stored_now = monitor.show(fleet, due, "running")
                due = fleet.delivered_up_to(stored_now, time.monotonic() - s.lag_s, due)
                run_range(detection, outputs, s.start_ns, due, self._on_cycle)
                time.sleep(TICK_S)
            done = fleet.done
            self.view.phase("draining: waiting until InfluxDB holds every event sent")
            stored = self._drain(fleet, done, s.start_ns, s.end_ns, monitor)
            run_range(detection, outputs, s.start_ns, s.end_ns, self._on_cycle)
            monitor.show(fleet, s.end_ns, "done", stored=stored)
        finally:
            outputs.close()
            detection.reader.close()
        labels = read_labels(self.state / LABELS["fleet"])
        report = evaluate(
            self.alerts,
            labels,
            window_s=WINDOW_S,
            terminal_hours=s.terminals * s.sim_ns / NS_PER_S / 3600,
        )
        return DemoResult(
            settings=s,
            sent={name: done.events.get(name, 0) for name in watch.STORED_AS},
            stored=stored,
            samples_dropped=done.samples_dropped,
            history_events=history_events,
            labels=labels,
            alerts=list(self.alerts),
            report=report,
            wall_s=time.monotonic() - started,
        )

    def close(self) -> None:
        """Stop everything this run started, newest first; safe to call more than once."""
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        while self.children:
            self.children.pop().stop()
        for server in (self.influx, self.mosquitto):
            if server is not None:
                server.stop()

    def __enter__(self) -> Demo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- steps -----------------------------------------------------------------------

    def _start_servers(self) -> InfluxDB1Server:
        self.view.phase("starting Mosquitto and influxd")
        devices = self._password(DEVICES_SECRET)
        services = {name: self._password(name) for name in (GATEWAY_ID, CLOUD_ACCOUNT)}
        acl = self.state / "mosquitto" / "acl"
        acl.parent.mkdir(parents=True, exist_ok=True)
        acl.write_text(render_acl(self._registry()))
        self.mosquitto = MosquittoServer(
            self.state / "mosquitto",
            extra_config=f"acl_file {acl}",
            accounts={
                **dict.fromkeys(self.site_of, devices),
                **services,
                WATCH_ACCOUNT: self.watch_account[1],
            },
        )
        self.mosquitto.start()
        self.influx = InfluxDB1Server(self.state / "influxdb")
        self.influx.start()
        self.influx.create_database(DATABASE)
        return self.influx

    def _registry(self) -> Registry:
        """The demo's device registry, kept as <state>/registry.toml: every simulated
        device is an agent of its own (as its edge agent is for a serial terminal)."""
        sites = sorted(set(self.site_of.values()))
        text = "".join(f'[[site]]\nid = "{site}"\nname = "simulated {site}"\n' for site in sites)
        agents = self.site_of.items()
        text += "".join(f'[[agent]]\nid = "{device}"\nsite = "{site}"\n' for device, site in agents)
        text += f'[[gateway]]\nid = "{GATEWAY_ID}"\n[[cloud]]\nid = "{CLOUD_ACCOUNT}"\n'
        text += f'[[monitor]]\nid = "{WATCH_ACCOUNT}"\n'
        path = self.state / "registry.toml"
        path.write_text(text)
        return parse_registry(text, str(path))

    def _start_gateway(self) -> str:
        self.view.phase("starting the gateway")
        assert self.mosquitto is not None and self.influx is not None
        http = f"127.0.0.1:{free_port()}"
        config = self.state / "gateway.toml"
        config.write_text(
            f'[gateway]\nid = "{GATEWAY_ID}"\nstate_dir = "{self.state / "gateway"}"\n'
            f'[mqtt]\nhost = "{self.mosquitto.host}"\nport = {self.mosquitto.port}\n'
            f'username = "{GATEWAY_ID}"\npassword_file = "{self._password_file(GATEWAY_ID)}"\n'
            f'[influxdb]\ndialect = "v1"\nurl = "{self.influx.url}"\ndatabase = "{DATABASE}"\n'
            f'[http]\nlisten = "{http}"\n'
        )
        child = self._child("gateway", "gateway", ["run", "--config", str(config)])
        self._wait(
            lambda: _healthy(f"http://{http}/healthz"),
            "the gateway is not healthy",
            child,
        )
        return f"http://{http}/metrics"

    def _train(self, config: CloudConfig) -> int:
        """A quiet trading day the day before, through the same pipeline, to train on:
        what is usual for each terminal and acquirer, and which cards are normally
        used at several sites (a family's, a fleet's), which velocity fraud is not.
        Returns the events stored for it."""
        s = self.settings
        self.view.phase("loading the quiet day before through the pipeline, to train on")
        history, _ = self._start_fleet("history")
        history.go()
        while history.done is None:
            self._check_children()
            time.sleep(TICK_S)
        history.child.wait(timeout=STARTUP_TIMEOUT_S)
        self.children.remove(history.child)
        start = s.start_ns - NS_PER_DAY
        stored = self._drain(history, history.done, start, start + s.sim_ns)
        sent = {name: history.done.events.get(name, 0) for name in watch.STORED_AS}
        if stored != sent:
            raise DemoError(f"the training day was not stored completely: sent {sent}, {stored}")
        self.view.phase(f"training the model on {sum(stored.values()):,} events")
        train_model(config, start, start + s.sim_ns, config.model_path)
        return sum(stored.values())

    def _start_fleet(self, name: Literal["history", "fleet"]) -> tuple[FleetLink, dict[str, str]]:
        """Start a fleet child, the demo day or (``history``) the quiet day before at full
        speed with a heartbeat every `HISTORY_STATUS_EVERY_S`; returns it and its ptys."""
        assert self.mosquitto is not None
        s = self.settings
        args = [
            *("--terminals", str(s.terminals), "--sensors", str(s.sensors), "--seed", str(s.seed)),
            *("--duration-ns", str(s.sim_ns), "--labels", str(self.state / LABELS[name])),
            *("--mqtt", f"{self.mosquitto.host}:{self.mosquitto.port}"),
            *("--mqtt-password-file", str(self._password_file(DEVICES_SECRET))),
        ]
        if name == "history":
            args += ["--start-ns", str(s.start_ns - NS_PER_DAY), "--serial", "0", "--accel", "0"]
            args += ["--quiet", "--status-every", str(HISTORY_STATUS_EVERY_S)]
        else:
            args += ["--start-ns", str(s.start_ns), "--serial", str(s.serial)]
            args += ["--accel", f"{s.accel:.6f}"]
        child = self._child(name, "tillpulse.demo.fleet_process", args, pipes=True)
        link = FleetLink(child)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            with contextlib.suppress(queue.Empty):
                return link, link.ready.get(timeout=0.1).ports
            child.check_running()
            if time.monotonic() >= deadline:
                raise DemoError(f"the {name} fleet did not start; log {child.log_path}")

    def _start_agents(self, ports: dict[str, str]) -> list[Path]:
        """One edge agent per serial terminal, as on its Raspberry Pi; returns their state
        directories once each has opened its port and connected to the broker."""
        self.view.phase(f"starting {len(ports)} edge agents on the serial terminals")
        assert self.mosquitto is not None
        agents: list[tuple[Child, Path]] = []
        for device, port in ports.items():
            state_dir = self.state / "agents" / device
            config = self.state / "agents" / f"{device}.toml"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(
                f'[agent]\nsite = "{self.site_of[device]}"\ndevice = "{device}"\n'
                f'state_dir = "{state_dir}"\n'
                f'[mqtt]\nhost = "{self.mosquitto.host}"\nport = {self.mosquitto.port}\n'
                f'username = "{device}"\n'
                f'password_file = "{self._password_file(DEVICES_SECRET)}"\n'
                f'[[serial]]\nport = "{port}"\n'
            )
            child = self._child(f"edge-{device}", "edge", ["run", "--config", str(config)])
            agents.append((child, state_dir))
        for child, state_dir in agents:
            ready = functools.partial(_agent_ready, state_dir)
            self._wait(ready, "the edge agent did not open its port and connect", child)
        state_dirs = [state_dir for _, state_dir in agents]
        return state_dirs

    def _cloud_config(self) -> CloudConfig:
        assert self.influx is not None and self.mosquitto is not None
        return CloudConfig(
            cloud=CloudSection(state_dir=str(self.state / "cloud"), window_s=WINDOW_S),
            query=QuerySection(url=self.influx.url, database=DATABASE),
            influxdb=InfluxSection(dialect="v1", url=self.influx.url, database=DATABASE),
            mqtt=CloudMqttSection(
                host=self.mosquitto.host,
                port=self.mosquitto.port,
                client_id=CLOUD_ACCOUNT,
                username=CLOUD_ACCOUNT,
                password_file=str(self._password_file(CLOUD_ACCOUNT)),
            ),
        )

    def _drain(
        self,
        fleet: FleetLink,
        done: FleetMessage,
        start_ns: int,
        end_ns: int,
        monitor: _Monitor | None = None,
    ) -> dict[str, int]:
        """Wait until InfluxDB holds, for ``[start, end)``, every event the fleet sent
        (or `drain_timeout_s` passed); returns what it holds, by message type."""
        assert self.influx is not None
        sent = {name: done.events.get(name, 0) for name in watch.STORED_AS}
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while True:
            self._check_children()
            stored = watch.stored_counts(self.influx, DATABASE, start_ns, end_ns)
            if monitor is not None:
                monitor.show(fleet, end_ns, "draining", stored=stored)
            if stored == sent or time.monotonic() >= deadline:
                return stored
            time.sleep(0.5)

    def _on_cycle(self, report: CycleReport) -> None:
        if report.alerts:
            with (self.state / "alerts.jsonl").open("ab") as out:  # for `tillpulse cloud evaluate`
                out.writelines(encode(alert) + b"\n" for alert in report.alerts)
        for alert in report.alerts:
            self.alerts.append(alert)
            self.view.alert(alert)

    # -- helpers ---------------------------------------------------------------------

    def _password_file(self, account: str) -> Path:
        return self.state / "secrets" / account

    def _password(self, account: str) -> str:
        """A new random password for a broker account, also written to its 0600 file,
        where the process that logs in with it reads it."""
        password = secrets.token_urlsafe(24)
        path = self._password_file(account)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        return password

    def _child(self, name: str, module: str, args: list[str], *, pipes: bool = False) -> Child:
        child = Child(name, module, args, self.state / "logs" / f"{name}.log", pipes=pipes)
        self.children.append(child)
        return child

    def _check_children(self) -> None:
        """Raise if a child ended early (a fleet ends, with 0, once it is done)."""
        for child in self.children:
            if child.name not in LABELS or child.process.poll() != 0:
                child.check_running()

    def _wait(self, predicate: Callable[[], bool], what: str, child: Child) -> None:
        def ready() -> bool:
            child.check_running()
            return predicate()

        try:
            wait_until(ready, STARTUP_TIMEOUT_S, interval=0.1, message=what)
        except AssertionError as exc:
            raise DemoError(f"{exc}; log {child.log_path}:\n{child.log_tail()}") from None


def _healthy(url: str) -> bool:
    try:
        return http_request("GET", url, timeout=1.0)[0] == 200
    except (ServerHTTPError, OSError):  # 503 while it connects; refused before it listens
        return False


def _agent_ready(state_dir: Path) -> bool:
    try:
        status = read_status(state_dir)
    except (OSError, ValueError):  # not written yet
        return False
    return status.link.connected and all(source.open for source in status.sources)


class _Monitor:
    """Collects a `Snapshot` for the view now and then (queries are not free)."""

    def __init__(
        self,
        demo: Demo,
        influx: InfluxDB1Server,
        metrics_url: str,
        agent_dirs: list[Path],
        started: float,
    ) -> None:
        self.demo = demo
        self.influx = influx
        self.metrics_url = metrics_url
        self.agent_dirs = agent_dirs
        self.started = started
        self._last_query = 0.0
        self._kpis: tuple[int, float | None, float | None] = (0, None, None)
        self._stored = 0
        self._spool: int | None = None
        self._outbox: int | None = None

    def show(
        self, fleet: FleetLink, due_ns: int, phase: str, stored: dict[str, int] | None = None
    ) -> int:
        """Update the view (querying InfluxDB at most every `QUERY_EVERY_S`); returns the
        day's events stored, as of the last query."""
        now = time.monotonic()
        latest = fleet.latest
        settings = self.demo.settings
        if now - self._last_query >= QUERY_EVERY_S or stored is not None:
            self._last_query = now
            window_start = max(settings.start_ns, due_ns - WINDOW_S * NS_PER_S)
            if due_ns > window_start:
                self._kpis = watch.payment_kpis(self.influx, DATABASE, window_start, due_ns)
            counts = stored or watch.stored_counts(
                self.influx, DATABASE, settings.start_ns, settings.end_ns
            )
            self._stored = sum(counts.values())
            self._spool = watch.spool_depth(self.metrics_url)
            self._outbox = watch.outbox_depth(self.agent_dirs)
        count, approval, p95 = self._kpis
        sim_ns = latest.sim_ns if latest is not None else settings.start_ns
        online, offline = (0, 0)
        if self.demo.watcher is not None:
            online, offline = self.demo.watcher.online(self.demo.terminal_ids)
        sent = 0
        if latest is not None:
            sent = sum(latest.events.get(name, 0) for name in watch.STORED_AS)
        self.demo.view.update(
            Snapshot(
                sim_ns=sim_ns,
                progress=(sim_ns - settings.start_ns) / settings.sim_ns,
                accel=settings.accel,
                wall_s=now - self.started,
                phase=phase,
                sent=sent,
                stored=self._stored,
                online=online,
                offline=offline,
                terminals=len(self.demo.terminal_ids),
                payments_per_s=count / WINDOW_S if approval is not None else None,
                approval=approval,
                latency_p95_ms=p95,
                spool=self._spool,
                outbox=self._outbox,
                alerts=self.demo.alerts[-8:],
                alert_count=len(self.demo.alerts),
            )
        )
        return self._stored
