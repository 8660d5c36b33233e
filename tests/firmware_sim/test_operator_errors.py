"""The bad-input matrix of `tillpulse sim` (tests/operator_errors.py): every mistake
an operator can make gets one line naming it and the fix, and the documented exit
code; never a traceback, never a run that hangs.

Usage and output-path cases run `main(argv)` in-process (what they check ends before
any process boundary matters); signals, broker failures and --debug run the
console command."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from firmware_sim.cli import main
from firmware_sim.fleet_layout import build_fleet
from runtime.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE
from testkit.servers import MosquittoServer, ServerFactory
from tests.conftest import SmallDisk
from tests.operator_errors import (
    TRACEBACK,
    Result,
    assert_one_line,
    interrupt_tillpulse,
    run_tillpulse,
)

pytestmark = pytest.mark.operator_error

START = "2026-11-23T00:00:00Z"
SMALL: tuple[str, ...] = ("--terminals", "2", "--sensors", "0", "--duration", "1h")
SMALL += ("--accel", "0", "--start", START, "--quiet")


def sim(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    """``tillpulse sim ARGV`` in this process, as the operator would see it."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return Result(argv, code, out, err)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (("fleet", "--out", "x.jsonl", "--log-level", "loud"), ("--log-level", "loud")),
        (("--log-level", "loud", "fleet", "--out", "x.jsonl"), ("--log-level", "loud")),
        (("fleet", "--out", "x.jsonl", "--terminals", "0"), ("--terminals", "0")),
        (("fleet", "--out", "x.jsonl", "--duration", "8x"), ("--duration", "8x")),
        (("fleet", "--out", "x.jsonl", "--start", "yesterday"), ("--start", "yesterday")),
        (("fleet", "--mqtt", "nohost"), ("--mqtt", "nohost")),
        (("fleet", "--out", "x.jsonl", "--window", "5"), ("--window",)),
        (("fleet",), ("--mqtt", "--out")),
        (("fleet", "--out", "x.jsonl", "--scenario", "nosuch"), ("nosuch", "demo")),
        (("fleet", "--out", "x.jsonl", "--terminals", "9" * 20), ("--terminals", "at most")),
        (("fleet", "--out", "x.jsonl", "--status-every", "inf"), ("--status-every", "finite")),
        (("fleet", "--out", "x.jsonl", "--accel", "nan"), ("--accel", "nan")),
        (("fleet", "--out", "x.jsonl", "--duration", "0s"), ("--duration", "positive")),
        (("fleet", "--mqtt", "127.0.0.1:0"), ("--mqtt", "127.0.0.1:0")),
    ],
    ids=[
        "log-level-after",
        "log-level-before",
        "terminals-0",
        "duration",
        "start",
        "mqtt-host-port",
        "window-renamed",
        "no-target",
        "scenario-missing",
        "terminals-huge",
        "status-every-inf",
        "accel-nan",
        "duration-0s",
        "mqtt-port-0",
    ],
)
def test_bad_flag_or_value_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    argv: tuple[str, ...],
    names: tuple[str, ...],
) -> None:
    argv = tuple(str(tmp_path / arg) if arg == "x.jsonl" else arg for arg in argv)
    assert_one_line(sim(capsys, *argv), EXIT_USAGE, *names)
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize(
    ("command", "option", "where"),
    [
        ("fleet", "--out", "dir"),
        ("fleet", "--out", "no-parent"),
        ("fleet", "--labels", "dir"),
        ("fleet", "--labels", "under-a-file"),
        ("fleet", "--calendar", "dir"),
        ("serial", "--ports", "dir"),
        ("serial", "--ports", "no-parent"),
    ],
)
def test_unwritable_output_names_the_option_and_the_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str, option: str, where: str
) -> None:
    (tmp_path / "a-file").write_text("x")
    path = {
        "dir": tmp_path,
        "no-parent": tmp_path / "missing" / "out.json",
        "under-a-file": tmp_path / "a-file" / "out.json",
    }[where]
    target = ("--out", str(tmp_path / "events.jsonl")) if option != "--out" else ()
    if command == "serial":
        target = ()
    result = sim(capsys, command, *SMALL, *target, option, str(path))
    assert_one_line(result, EXIT_USAGE, option, str(path), "a directory you can write")


def test_a_disk_that_fills_up_mid_run_is_one_line_naming_the_fix(
    capsys: pytest.CaptureFixture[str], small_disk: SmallDisk
) -> None:
    small_disk.fill(leave_bytes=16 << 10)  # room for the first events only
    events = small_disk.path / "events.jsonl"
    result = sim(capsys, "fleet", *SMALL, "--out", str(events))
    assert_one_line(result, EXIT_USAGE, "No space left on device", "free space")


def test_a_run_that_would_inject_nothing_refuses_to_start(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """README's old command: the demo's incidents count from --start, 9h to 18h."""
    result = sim(
        capsys,
        "fleet",
        "--scenario",
        "demo",
        "--start",
        "2026-11-25T08:00:00Z",
        "--duration",
        "8h",
        "--out",
        str(tmp_path / "events.jsonl"),
        "--labels",
        str(tmp_path / "labels.jsonl"),
    )
    line = assert_one_line(result, EXIT_USAGE, "9h, 11h30m, 14h, 16h", "--duration 18h")
    assert "--allow-partial" in line and "2026-11-25T16:00:00" in line
    assert not (tmp_path / "events.jsonl").exists()
    assert not (tmp_path / "labels.jsonl").exists()


def test_a_closed_port_fails_after_the_connect_timeout() -> None:
    port = closed_port()
    result = run_tillpulse(
        "sim", "fleet", *SMALL, "--mqtt", f"127.0.0.1:{port}", "--connect-timeout", "1"
    )
    assert_one_line(result, EXIT_FAILED, f"127.0.0.1:{port}", "unreachable", "--mqtt")


@pytest.mark.integration
@pytest.mark.parametrize("password", ["wrong", None], ids=["wrong-password", "no-password"])
def test_refused_credentials_fail_at_once_naming_the_username(
    mosquitto_factory: ServerFactory[MosquittoServer], tmp_path: Path, password: str | None
) -> None:
    devices = [d.device_id for d in build_fleet(1, 2, 0).devices]
    broker = mosquitto_factory(accounts=dict.fromkeys(devices, "right"))
    secret = tmp_path / "password"
    secret.write_text(f"{password}\n")
    login = ("--mqtt-password-file", str(secret)) if password else ()
    result = run_tillpulse(
        "sim", "fleet", *SMALL, "--mqtt", f"127.0.0.1:{broker.port}", *login, timeout=20
    )
    line = assert_one_line(result, EXIT_FAILED, f"127.0.0.1:{broker.port}", "refused")
    # whichever device's CONNACK came first
    who = "username {}" if password else "device {} (no username and password given)"
    assert any(who.format(device) in line for device in devices), line


@pytest.mark.parametrize("where", ["missing", "dir"])
def test_an_unreadable_password_file_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str
) -> None:
    path = tmp_path / "missing" if where == "missing" else tmp_path
    result = sim(
        capsys, "fleet", *SMALL, "--mqtt", "127.0.0.1:1883", "--mqtt-password-file", str(path)
    )
    assert_one_line(result, EXIT_USAGE, "--mqtt-password-file", str(path))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_while_waiting_for_the_broker_is_interrupted(signum: int) -> None:
    port = closed_port()
    result = interrupt_tillpulse(
        "sim",
        "fleet",
        *SMALL,
        "--mqtt",
        f"127.0.0.1:{port}",
        after="broker_unreachable",
        signum=signum,
    )
    assert_one_line(result, EXIT_INTERRUPTED, "interrupted")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_mid_run_is_interrupted_with_what_was_done(tmp_path: Path, signum: int) -> None:
    result = interrupt_tillpulse(
        "sim",
        "fleet",
        "--terminals",
        "5",
        "--duration",
        "1d",
        "--accel",
        "600",
        "--out",
        str(tmp_path / "events.jsonl"),
        after="sim_started",
        signum=signum,
    )
    assert_one_line(result, EXIT_INTERRUPTED, "interrupted")
    assert "sim_stopped" in result.err  # what was sent before the interrupt


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_tillpulse("sim", "fleet", *SMALL, "--out", str(tmp_path), "--debug")
    assert TRACEBACK in result.err and str(tmp_path) in result.err
    assert result.code == EXIT_FAILED
