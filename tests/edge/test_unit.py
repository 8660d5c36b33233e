"""The systemd unit: sandboxed to "OK" by ``systemd-analyze security``, valid as
``install-unit`` writes it, and still leaving the agent what it needs to work.

No test starts the unit: that takes a systemd running as PID 1, which the test machine
has not. The agent does run under the seccomp filters two of its settings install
(`tests.edge.systemd_filters`), within its memory limit, against a real Mosquitto.
"""

from __future__ import annotations

import platform
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edge.deploy_files import UNIT_NAME
from testkit.mqtt_collector import Collector
from testkit.servers import MosquittoServer, wait_until
from tests.edge.test_agent import (
    AGENT_ID,
    ALL_DEVICES,
    SITE,
    Terminal,
    arrived,
    wait_acked,
    wait_for_seqs,
)
from wire.topics import Stream

REPO = Path(__file__).parents[2]
UNIT = REPO / "edge" / "deploy" / UNIT_NAME
EXAMPLE = UNIT.with_name("edge.example.toml")
MAX_EXPOSURE = 2.0  # systemd-analyze's "OK"; the unit before hardening rated 8.5 EXPOSED

FILTERED = [sys.executable, "-m", "tests.edge.systemd_filters"]  # run from REPO
needs_x86_64 = pytest.mark.skipif(
    platform.machine() != "x86_64",
    reason="tests.edge.systemd_filters knows the x86_64 system call numbers only",
)
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian package systemd)",
)


def directives(unit: Path = UNIT) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit, all values of a repeated key in order."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        key, equals, value = line.partition("=")
        if equals and not line.startswith(("#", "[")):
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@needs_systemd_analyze
def test_systemd_analyze_security_rates_the_unit_ok() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    overall = re.search(rf"Overall exposure level for {UNIT_NAME}: (\d+\.\d) (\w+)", result.stdout)
    assert overall, result.stdout + result.stderr
    assert float(overall[1]) <= MAX_EXPOSURE and overall[2] == "OK", overall[0]
    assert result.returncode == 0, overall[0]  # --threshold=20: exits non-zero above 2.0


@needs_systemd_analyze
def test_the_unit_install_unit_writes_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`verify` checks that ExecStart exists, so it runs on the unit as installed for this
    venv, not on the shipped one (whose /opt/tillpulse/venv is not here)."""
    written = subprocess.run(
        [sys.executable, "-m", "edge", "install-unit", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert written.stdout == "" and "Traceback" not in written.stderr, written
    assert f"wrote {tmp_path / UNIT_NAME}" in written.stderr
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / UNIT_NAME)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verified.returncode == 0 and verified.stdout + verified.stderr == "", verified


def test_the_sandbox_leaves_the_agent_what_it_needs() -> None:
    unit = directives()
    # its serial devices: through the dialout group, by driver name, symlinks included
    assert unit["SupplementaryGroups"] == ["dialout"]
    assert unit["DevicePolicy"] == ["closed"]
    assert unit["DeviceAllow"] == ["char-ttyUSB rw", "char-ttyACM rw"]
    assert "PrivateDevices" not in unit  # no serial device node in a private /dev
    assert unit["PrivateUsers"] == ["yes"]  # dialout unmapped, but the kernel still grants it
    # its state dir, the only place it may write (ProtectSystem=strict)
    assert unit["ProtectSystem"] == ["strict"]
    state_dir = tomllib.loads(EXAMPLE.read_text())["agent"]["state_dir"]
    assert state_dir == f"/var/lib/{unit['StateDirectory'][0]}"
    # its health sample: /proc/meminfo, /proc/loadavg, adjtimex() readable
    assert "ProcSubset" not in unit and "ProtectClock" not in unit
    assert unit["CapabilityBoundingSet"] == [""]  # ... and setting the clock impossible
    # the broker over TCP, sd_notify and the journal over AF_UNIX
    assert set(unit["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["WatchdogSec"] == ["60"]
    assert unit["RestartPreventExitStatus"] == ["2"]  # edge.cli.EXIT_CONFIG


@needs_x86_64
def test_the_emulated_filters_refuse_what_systemd_refuses() -> None:
    for code, error in [
        ("import mmap; mmap.mmap(-1, 4096, prot=7)", "PermissionError"),  # read+write+exec
        ("import socket; socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)", "Errno 97"),
    ]:
        refused = subprocess.run(
            [*FILTERED, sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            check=False,
        )
        assert refused.returncode == 1 and error in refused.stderr, refused


@needs_x86_64
@pytest.mark.integration
def test_the_agent_delivers_under_the_units_filters_and_memory_limit(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    """MemoryDenyWriteExecute=yes, RestrictAddressFamilies= and MemoryMax= leave the agent
    working: payments, a status and its own health samples (ctypes adjtimex, /proc)."""
    terminal = Terminal(f"{SITE}-pos1")
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[agent]\nsite = "{SITE}"\ndevice = "{AGENT_ID}"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
        f'[health]\ninterval_s = 0.5\n[[serial]]\nport = "{terminal.port}"\n'
    )
    log_path = tmp_path / "agent.log"
    with log_path.open("wb") as log, Collector(mosquitto.host, mosquitto.port, ALL_DEVICES) as sub:
        agent = subprocess.Popen(
            [*FILTERED, sys.executable, "-m", "edge", "run", "--config", str(config)],
            cwd=REPO,
            stdout=log,
            stderr=log,
        )
        try:
            wait_until(
                lambda: "event=serial_opened" in log_path.read_text(),
                20,
                message=lambda: f"serial port not opened; log:\n{log_path.read_text()}",
            )
            proc_status = Path(f"/proc/{agent.pid}/status").read_text()
            assert "Seccomp:\t2" in proc_status  # the agent itself runs filtered
            terminal.payments(1, 20)
            wait_for_seqs(sub, terminal, Stream.PAYMENT, set(range(1, 21)))
            wait_acked(terminal)
            wait_until(lambda: len(arrived(sub, AGENT_ID, Stream.HEALTH)) >= 2, 20)
            peak_rss = _kib(Path(f"/proc/{agent.pid}/status").read_text(), "VmHWM")
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(timeout=30) == 0, log_path.read_text()
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
            terminal.close()
    assert "Traceback" not in log_path.read_text()
    memory_max = directives()["MemoryMax"][0]
    assert memory_max.endswith("M")
    assert peak_rss < int(memory_max[:-1]) * 1024 / 2, f"peak RSS {peak_rss} KiB"


def _kib(proc_status: str, field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB$", proc_status, re.MULTILINE)
    assert match, proc_status
    return int(match[1])
