"""`tillpulse demo` end to end, at small scale, against the real servers and processes.

One run of the whole pipeline (Mosquitto, influxd, gateway, edge agents on
ptys, the simulated day, cloud detection): every event the fleet sent is
stored, every injected anomaly is detected, nothing is left running. Then
the command line: Ctrl-C stops everything, a killed demo takes its children
with it, and a directory the demo did not make is never emptied.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.servers import wait_until
from tests.deploy.conftest import NOT_AUTHORIZED, Client
from tillpulse.demo.local_stack import (
    Demo,
    DemoResult,
    DemoSettings,
    Snapshot,
    View,
    prepare_state_dir,
)
from wire.incidents import NOT_IN_THE_DATA, InjectionType
from wire.messages import Alert
from wire.topics import Stream, device_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).parents[2]


class Recorder(View):
    def __init__(self) -> None:
        self.phases: list[str] = []
        self.snapshots: list[Snapshot] = []
        self.alerts: list[Alert] = []

    def phase(self, text: str) -> None:
        self.phases.append(text)

    def update(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)

    def alert(self, alert: Alert) -> None:
        self.alerts.append(alert)


def processes_using(path: Path) -> list[str]:
    """Command lines of running processes that mention ``path`` (configs, data, ptys' labels):
    every process the demo starts does."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile
            continue
        if str(path) in command and state != "Z":
            found.append(f"{entry.name}: {command}")
    return found


def test_the_demo_stores_every_event_and_detects_every_anomaly(tmp_path: Path) -> None:
    state = prepare_state_dir(tmp_path / "demo")
    settings = DemoSettings(
        terminals=20, sensors=5, serial=2, duration_s=30.0, seed=7, state_dir=state
    )
    view = Recorder()
    with Demo(settings, view) as demo:
        result: DemoResult = demo.run()
        pids = [child.pid for child in demo.children]
        assert len(pids) == 4  # gateway, fleet, two edge agents
        assert_devices_publish_only_for_themselves(demo)
    assert processes_using(state) == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()

    assert result.sent == result.stored, (result.sent, result.stored)
    assert all(count > 0 for count in result.sent.values()), result.sent
    assert result.samples_dropped == 0
    assert {label.type for label in result.labels} == {
        InjectionType.TERMINAL_OFFLINE,
        InjectionType.ACQUIRER_OUTAGE,
        InjectionType.CARD_TESTING,
        InjectionType.TAMPER,
    }
    assert [m.label_id for m in result.report.missed] == []
    scored = [row for row in result.report.rows if row.type not in NOT_IN_THE_DATA]
    for row in scored:
        if row.labels:
            assert row.detected == row.labels, row
            assert row.delay is not None and row.delay.max_windows <= 2, row
    assert result.report.overall.false_alerts == 0, result.report.false_alerts
    assert result.ok
    # the live view saw the pipeline at work: terminals online, payments, an alert
    running = [s for s in view.snapshots if s.phase == "running"]
    assert max(s.online for s in running) >= 19  # one may be cut off at that moment
    assert any(s.approval is not None and s.latency_p95_ms is not None for s in running)
    assert view.alerts == result.alerts
    assert (state / "alerts.jsonl").read_bytes().count(b"\n") == len(result.alerts)


def assert_devices_publish_only_for_themselves(demo: Demo) -> None:
    """The demo's broker applies the ACL of its device registry: a simulated device,
    with the password every simulated device has, may not publish for another one."""
    assert demo.mosquitto is not None
    device, other = sorted(demo.site_of)[:2]
    password = (demo.state / "secrets" / "devices").read_text().strip()
    client = Client(demo.mosquitto.port, username=device, password=password)
    try:
        own = client.publish(device_topic(demo.site_of[device], device, Stream.HEALTH), b"{}")
        foreign = client.publish(device_topic(demo.site_of[other], other, Stream.PAYMENT), b"{}")
    finally:
        client.close()
    assert (own.value, foreign.value) == (0, NOT_AUTHORIZED)


def demo_command(state: Path) -> subprocess.Popen[str]:
    """``tillpulse demo`` as a user runs it, small: 10 terminals, one on a pty."""
    args = ["--terminals", "10", "--serial", "1", "--duration", "60s", "--plain"]
    return subprocess.Popen(
        [sys.executable, "-m", "tillpulse", "demo", *args, "--state-dir", str(state)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_the_day(demo: subprocess.Popen[str]) -> list[str]:
    """Read the demo's plain lines until the simulated day runs."""
    assert demo.stdout is not None
    lines: list[str] = []
    for line in demo.stdout:
        lines.append(line)
        if "running the simulated day" in line:
            return lines
    raise AssertionError(f"the demo ended before the day ran:\n{''.join(lines)}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_every_process_the_demo_started(tmp_path: Path, signum: int) -> None:
    state = tmp_path / "demo"
    with demo_command(state) as demo:
        wait_for_the_day(demo)
        assert len(processes_using(state)) >= 5  # servers, gateway, fleet, agent
        demo.send_signal(signum)
        rest, _ = demo.communicate(timeout=60)
    assert demo.returncode == 130, rest
    assert "every process it started is stopped" in rest
    assert processes_using(state) == []


def test_a_killed_demo_takes_its_processes_with_it(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    with demo_command(state) as demo:
        wait_for_the_day(demo)
        demo.kill()  # no clean-up code runs: the parent-death signal does it
        demo.communicate(timeout=30)
    wait_until(
        lambda: processes_using(state) == [],
        20,
        interval=0.1,
        message=lambda: f"left running: {processes_using(state)}",
    )
