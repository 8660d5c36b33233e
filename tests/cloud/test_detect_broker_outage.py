"""`tillpulse cloud detect --every` through an MQTT broker outage, end to end: the real
command against a real influxd and Mosquitto, stopped and started again, and the job
stopped by SIGTERM at the end as systemd stops it.

A detection window is at least a minute, so the outage covers the job's start rather
than waiting a minute for a window to close during it: the windows a previous run
left (two, with a terminal's tamper switch open) are detected while the broker is
down, and their alert must reach a subscriber once it is back.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgspec
import pytest

from cloud.jobs.alert_lifecycle import AlertManager
from runtime.cli import EXIT_OK
from testkit.factories import next_status
from testkit.mqtt_collector import Collector
from testkit.servers import InfluxDB1Server, MosquittoServer, wait_until
from tests.operator_errors import REPO, TRACEBACK
from wire.messages import Alert
from wire.points import to_line
from wire.timestamps import NS_PER_S
from wire.topics import alert_topic

WINDOW_S = 60  # the shortest window the config takes
WINDOW_NS = WINDOW_S * NS_PER_S
EVERY = ("--every", "200ms")


def tamper_heartbeats(from_ns: int, to_ns: int) -> list[str]:
    """Terminal s1/t1's heartbeats every 20 s in [from, to), its tamper switch open."""
    return [
        to_line(
            msgspec.structs.replace(
                next_status(), site="s1", device="t1", ts=ts, seq=n + 1, tamper=True
            )
        )
        for n, ts in enumerate(range(from_ns, to_ns, 20 * NS_PER_S))
    ]


def operators(broker: MosquittoServer) -> Collector:
    """The operators' subscriber to every alert, a persistent session: the broker keeps
    what they missed, across its restart too."""
    return Collector(
        broker.host, broker.port, "tp/v1/alerts/#", client_id="ops", session_expiry_s=300
    )


class Detect:
    """``tillpulse cloud detect --every 200ms`` as a service runs it; its stderr collected."""

    def __init__(self, config: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TILLPULSE_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tillpulse", "cloud", "detect", "-c", str(config), *EVERY],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO,
        )
        assert self.process.stderr is not None
        os.set_blocking(self.process.stderr.fileno(), False)
        self.err = ""

    def log(self) -> str:
        assert self.process.stderr is not None
        chunk = self.process.stderr.read()
        if chunk:
            self.err += chunk.decode("utf-8", "replace")
        return self.err

    def wait_for(self, text: str, count: int = 1, timeout: float = 30.0) -> None:
        """Until ``text`` (a regex) was logged ``count`` times."""
        wait_until(
            lambda: len(re.findall(text, self.log())) >= count or self.process.poll() is not None,
            timeout,
            interval=0.05,
            message=lambda: f"{text!r} not logged:\n{self.err}",
        )
        assert self.process.poll() is None, self.err

    def stop(self) -> tuple[int, str]:
        """SIGTERM, as systemd stops it: exit code and stdout."""
        self.process.send_signal(signal.SIGTERM)
        out, rest = self.process.communicate(timeout=30)
        self.err += rest.decode("utf-8", "replace")
        return self.process.returncode, out.decode()


@pytest.mark.integration
def test_alerts_of_windows_detected_while_the_broker_is_down_are_sent_when_it_is_back(
    tmp_path: Path, influxdb_session: InfluxDB1Server, mosquitto: MosquittoServer
) -> None:
    database = f"outage_{uuid.uuid4().hex[:8]}"
    influxdb_session.create_database(database)
    now = time.time_ns()
    done = now - now % WINDOW_NS - 2 * WINDOW_NS  # a previous run detected up to here
    shard = tmp_path / "state" / "shard-0-of-1"
    shard.mkdir(parents=True)
    AlertManager(state_path=shard / "alerts.json").step(done, [])
    influxdb_session.write(tamper_heartbeats(done + 5 * NS_PER_S, now), database)
    config = tmp_path / "cloud.toml"
    config.write_text(
        f'[cloud]\nstate_dir = "{tmp_path / "state"}"\nwindow_s = {WINDOW_S}\nlag_s = 0\n'
        "series_watch = false\n"
        f'[query]\nurl = "{influxdb_session.url}"\ndatabase = "{database}"\n'
        f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
    )

    operators(mosquitto).close()  # subscribed; away until the alerts are due
    mosquitto.stop()
    detect = Detect(config)
    try:
        detect.wait_for(r"event=cycle_done windows=[1-9]")
        detect.wait_for("event=cycle_done windows=0 ", count=2)  # retried, still down
        mosquitto.start()
        detect.wait_for("event=output_back output=mqtt")
    finally:
        code, out = detect.stop()
    summary = re.fullmatch(r"windows: \d+, alerts: (\d+), delivered: (\d+)\n", out)
    assert summary is not None, (out, detect.err)
    with operators(mosquitto) as ops:
        ops.wait_for_count(int(summary[1]), timeout=10)
        received = ops.snapshot()

    err = detect.err
    # stopped by SIGTERM, as systemd stops the service: a clean stop, exit 0
    assert TRACEBACK not in err and code == EXIT_OK and "event=detect_stopped" in err, err
    # the outage: said once (each retry is a debug line); the alerts kept, not counted sent
    first = re.search(r"event=cycle_done windows=\d+ alerts=(\d+) undelivered=(\d+)", err)
    assert first is not None and int(first[1]) >= 1 and first[1] == first[2], err
    assert err.count("event=output_failed output=mqtt") == 1, err
    assert "alerts kept for the next try" in err
    # back: sent without waiting for a new alert, and then counted delivered
    assert summary[1] == summary[2]
    alerts = [msgspec.json.decode(payload, type=Alert) for _, payload, _ in received]
    tamper = [a for a in alerts if a.device == "t1" and a.type == "tamper"]
    assert [(a.status, a.site) for a in tamper] == [("firing", "s1")]
    assert {topic for topic, _, _ in received} >= {alert_topic("s1", "tamper")}
    assert list((tmp_path / "state").glob("mqtt-pending.*")) == []  # nothing left to send
