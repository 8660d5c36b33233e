"""``tillpulse edge`` as a user runs it: real processes, exit codes, messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import EXIT_CONFIG
from tests.conftest import SmallDisk

EXAMPLE = Path(__file__).parents[2] / "edge" / "deploy" / "edge.example.toml"
UNIT = EXAMPLE.with_name("tillpulse-edge.service")


def edge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_the_shipped_example_config_is_valid() -> None:
    result = edge("check-config", "--config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[agent]\nsite = "s1"\ndevice = "d1"\n[mqtt]\nhost = "b"\nport = 99999\n', "mqtt.port"),
        ('[agent]\nsite = "s 1"\ndevice = "d1"\n[mqtt]\nhost = "b"\n', "agent.site"),
        ('[agent]\nsite = "s1"\ndevice = "d1"\n[mqtt]\nhots = "b"\n', "hots"),
        ('[agent]\nsite = "s1"\ndevice = "d1"\n', "mqtt"),
        ("[agent\n", "not valid TOML"),
    ],
)
def test_a_bad_config_is_a_clear_error_and_exit_code_2(
    tmp_path: Path, text: str, named: str
) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(text)
    for command in ("check-config", "run"):
        result = edge(command, "--config", str(config))
        assert result.returncode == 2
        assert named in result.stderr and str(config) in result.stderr
        assert "Traceback" not in result.stderr


def test_an_environment_override_is_validated_and_named(tmp_path: Path) -> None:
    result = edge(
        "check-config", "--config", str(EXAMPLE), env={"TILLPULSE_EDGE__MQTT__PORT": "http"}
    )
    assert result.returncode == 2
    assert "TILLPULSE_EDGE__MQTT__PORT" in result.stderr


def test_status_without_a_running_agent_says_so(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[agent]\nsite = "s1"\ndevice = "d1"\nstate_dir = "{tmp_path}"\n[mqtt]\nhost = "b"\n'
    )
    result = edge("status", "--config", str(config))
    assert result.returncode == 4
    assert "is the agent running?" in result.stderr


def test_an_unwritable_state_dir_is_one_clear_line_and_an_exit_systemd_does_not_retry(
    tmp_path: Path, small_disk: SmallDisk
) -> None:
    state = small_disk.path / "state"
    state.mkdir()
    # read-only, as an SD card the kernel remounted after errors (root writes anywhere else)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk.path)], check=True)
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[agent]\nsite = "s1"\ndevice = "d1"\nstate_dir = "{state}"\n[mqtt]\nhost = "b"\n'
    )
    result = edge("run", "--config", str(config))
    assert result.returncode == EXIT_CONFIG == 2
    assert result.stderr == (
        f"tillpulse edge: the state dir {state} is not writable (read-only filesystem, or not "
        "the agent's user's): fix it, then start the agent\n"
    )
    assert f"RestartPreventExitStatus={EXIT_CONFIG}" in UNIT.read_text().splitlines()
