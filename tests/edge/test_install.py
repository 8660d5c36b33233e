"""Installing the edge agent as docs/edge-install.md says: the wheel with only the
``[edge]`` extra in a fresh virtualenv, its example config and its systemd unit.

The slow test builds the wheel from a copy of this tree (as ``make wheel`` does),
installs it into a new venv with nothing else, and runs that venv's ``tillpulse``
against a real Mosquitto and a simulated terminal on a pty.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from edge.config import load_edge_config
from edge.deploy_files import UNIT_NAME
from runtime.deploy_files import packaged
from testkit.mqtt_collector import Collector
from testkit.servers import MosquittoServer, wait_until
from tests.conftest import SmallDisk
from tests.edge.test_agent import (
    AGENT_ID,
    ALL_DEVICES,
    SITE,
    Terminal,
    status,
    wait_acked,
    wait_for_seqs,
)
from wire.topics import Stream

REPO = Path(__file__).parents[2]
EXAMPLE = REPO / "edge" / "deploy" / "edge.example.toml"
# What a checkout holds that is no part of the wheel's input (and may be large).
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
    ".demo", ".state", ".import_linter_cache",
)  # fmt: skip
# pip's words when it cannot get a package at all (no network, no index), as opposed to
# a failure of the wheel itself.
INDEX_UNREACHABLE = re.compile(
    r"No matching distribution found|Could not find a version that satisfies"
    r"|NewConnectionError|Network is unreachable|Temporary failure in name resolution"
)


def edge(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``tillpulse edge ARGS`` from this checkout's venv."""
    return run([sys.executable, "-m", "edge", *args], cwd=cwd)


def run(command: Sequence[str | Path], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *named: str) -> None:
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for text in named:
        assert text in result.stderr


# -- sample-config and install-unit -------------------------------------------------------


def test_sample_config_prints_the_example_and_writes_a_file_only_once(tmp_path: Path) -> None:
    printed = edge("sample-config")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == EXAMPLE.read_text()

    config = tmp_path / "edge.toml"
    written = edge("sample-config", "--out", str(config))
    assert written.returncode == 0, written.stderr
    assert written.stderr == f"wrote {config}\n"
    assert config.read_text() == EXAMPLE.read_text()
    load_edge_config(config)  # valid keys; check-config wants the files it names too

    config.write_text("# edited by the field engineer\n")
    again = edge("sample-config", "--out", str(config))
    assert_one_line_error(again, str(config), "--force")
    assert config.read_text() == "# edited by the field engineer\n"  # not overwritten
    assert edge("sample-config", "--out", str(config), "--force").returncode == 0
    assert config.read_text() == EXAMPLE.read_text()


def test_install_unit_runs_this_installations_tillpulse(tmp_path: Path) -> None:
    written = edge("install-unit", "--out", str(tmp_path))
    assert written.returncode == 0, written.stderr
    unit = tmp_path / UNIT_NAME
    assert written.stderr.splitlines()[0] == f"wrote {unit}"
    assert "systemctl daemon-reload" in written.stderr
    exec_start = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    assert exec_start == [
        f"ExecStart={sys.prefix}/bin/tillpulse edge run --config /etc/tillpulse/edge.toml"
    ]
    # the rest is the packaged unit, line for line
    shipped = "ExecStart=/opt/tillpulse/venv/bin/tillpulse "
    assert unit.read_text() == packaged("edge", UNIT_NAME).replace(
        shipped, f"ExecStart={sys.prefix}/bin/tillpulse "
    )

    printed = edge("install-unit", "--print", "--out", str(tmp_path / "nowhere"))
    assert printed.returncode == 0 and printed.stdout == unit.read_text()
    assert not (tmp_path / "nowhere").exists()


def test_install_unit_quotes_a_venv_path_with_a_space(tmp_path: Path) -> None:
    venv = tmp_path / "my venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "tillpulse").symlink_to(Path(sys.prefix) / "bin" / "tillpulse")
    printed = edge("install-unit", "--print", "--venv", str(venv))
    assert printed.returncode == 0, printed.stderr
    assert f'ExecStart="{venv}/bin/tillpulse" edge run' in printed.stdout


def test_install_unit_errors_name_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    assert_one_line_error(edge("install-unit", "--out", str(missing)), str(missing), "create")

    assert edge("install-unit", "--out", str(tmp_path)).returncode == 0
    existing = edge("install-unit", "--out", str(tmp_path))
    assert_one_line_error(existing, str(tmp_path / UNIT_NAME), "exists", "--force")
    assert edge("install-unit", "--out", str(tmp_path), "--force").returncode == 0

    not_a_venv = edge("install-unit", "--print", "--venv", str(tmp_path))
    assert_one_line_error(not_a_venv, f"{tmp_path}/bin/tillpulse", "--venv")


def test_install_unit_into_a_read_only_dir_is_one_line(small_disk: SmallDisk) -> None:
    # read-only, as /etc on an overlay-root Pi (root writes anywhere else)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk.path)], check=True)
    result = edge("install-unit", "--out", str(small_disk.path))
    assert_one_line_error(result, str(small_disk.path / UNIT_NAME), "read-only")


# -- the wheel, installed with only [edge] ---------------------------------------------------


def pip(python: Path, *args: str | Path) -> str:
    """``python -m pip ARGS``; skips the test when pip cannot reach the package index."""
    result = run([python, "-m", "pip", *args, "--disable-pip-version-check"])
    if result.returncode != 0:
        unreachable = INDEX_UNREACHABLE.search(result.stdout + result.stderr)
        if unreachable:
            pytest.skip(f"the package index is unreachable: pip says {unreachable.group()!r}")
        pytest.fail(f"pip {' '.join(map(str, args))} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


@pytest.fixture(scope="module")
def edge_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel of this tree and its ``[edge]`` extra, nothing else."""
    base = tmp_path_factory.mktemp("install")
    source = base / "src"  # a copy: building in the tree would race other builds there
    shutil.copytree(REPO, source, ignore=NOT_SOURCES, symlinks=True)
    pip(Path(sys.executable), "wheel", "--quiet", "--no-deps", "--wheel-dir", base, source)
    (wheel,) = base.glob("tillpulse-*-py3-none-any.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    pip(venv / "bin" / "python", "install", "--quiet", f"{wheel}[edge]")  # as the docs say
    return venv


@pytest.mark.slow
@pytest.mark.integration
def test_the_wheel_with_only_the_edge_extra_installs_a_working_agent(
    edge_venv: Path, tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    tillpulse = edge_venv / "bin" / "tillpulse"
    listed = json.loads(pip(edge_venv / "bin" / "python", "list", "--format=json"))
    installed = {package["name"].lower() for package in listed} - {"pip", "setuptools"}
    assert installed == {"tillpulse", "msgspec", "cobs", "paho-mqtt", "pyserial"}
    for args in (["--help"], ["edge", "--help"]):
        shown = run([tillpulse, *args])
        assert shown.returncode == 0 and "usage: tillpulse" in shown.stdout, shown.stderr

    sample = run([tillpulse, "edge", "sample-config"])
    assert sample.returncode == 0 and sample.stdout == EXAMPLE.read_text()
    unit = run([tillpulse, "edge", "install-unit", "--print"])
    assert f"ExecStart={edge_venv}/bin/tillpulse edge run" in unit.stdout, unit.stderr

    terminal = Terminal(f"{SITE}-pos1")
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[agent]\nsite = "{SITE}"\ndevice = "{AGENT_ID}"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
        f'[[serial]]\nport = "{terminal.port}"\n'
    )
    checked = run([tillpulse, "edge", "check-config", "--config", config])
    assert checked.returncode == 0 and checked.stdout == f"{config}: ok\n", checked.stderr

    log_path = tmp_path / "agent.log"
    with log_path.open("wb") as log, Collector(mosquitto.host, mosquitto.port, ALL_DEVICES) as sub:
        agent = subprocess.Popen(
            [tillpulse, "edge", "run", "--config", config], stdout=log, stderr=log
        )
        try:
            wait_until(  # pyserial flushes the line on open: send once the port is open
                lambda: "event=serial_opened" in log_path.read_text(),
                20,
                message=lambda: f"serial port not opened; log:\n{log_path.read_text()}",
            )
            terminal.payments(1, 5)
            terminal.send(status(terminal.device, 1))
            wait_for_seqs(sub, terminal, Stream.PAYMENT, {1, 2, 3, 4, 5})
            wait_for_seqs(sub, terminal, Stream.STATUS, {1})
            wait_acked(terminal)  # durable in the agent's outbox: the terminal let go
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(timeout=30) == 0, log_path.read_text()
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
            terminal.close()
    assert "Traceback" not in log_path.read_text()
    stopped = run([tillpulse, "edge", "status", "--config", config])
    assert stopped.returncode == 4 and "STOPPED" in stopped.stdout, stopped  # a clean stop
