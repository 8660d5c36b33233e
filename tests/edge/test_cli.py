"""``tillpulse edge`` as a user runs it: real processes, exit codes, messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[2] / "edge" / "deploy" / "edge.example.toml"


def edge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_the_shipped_example_config_is_valid_and_names_what_the_pi_still_needs(
    tmp_path: Path,
) -> None:
    """Its keys are valid; check-config then asks for the files only the Pi has."""
    state = {"TILLPULSE_EDGE__AGENT__STATE_DIR": str(tmp_path)}  # not /var/lib here
    result = edge("check-config", "--config", str(EXAMPLE), env=state)
    assert result.returncode == 2
    assert result.stderr == (
        "tillpulse edge: [mqtt] password_file /etc/tillpulse/mqtt-password (in "
        f"{EXAMPLE}): no such file: write the secret there (one line) or fix the path\n"
    )


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
