"""The edge agent's cases of the bad-input matrix (tests/operator_errors.py): every
mistake an operator makes with ``tillpulse edge`` is one line naming the key, the
path and the fix, with the documented exit code, and `check-config` rejects what
`run` would (both run the same checks).

Most cases run `main` in-process (``edge_cli``); those about the process itself
(signals, the console script's parser, ``--debug``'s traceback) run it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edge import agent as edge_agent
from edge.deploy_files import UNIT_NAME
from runtime.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE
from runtime.lifecycle import lock_directory
from testkit.servers import MosquittoServer
from tests.conftest import SmallDisk
from tests.edge.test_tls import TlsBroker, tls_broker  # noqa: F401 (the fixture)
from tests.operator_errors import (
    REPO,
    TRACEBACK,
    Result,
    assert_one_line,
    in_process,
    interrupt_tillpulse,
    run_tillpulse,
)
from tests.pki import make_authority

pytestmark = pytest.mark.operator_error

AGENT = '[agent]\nsite = "s1"\ndevice = "s1-pi1"\nstate_dir = "{state}"\n'
MQTT = '[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
SERIAL = '[[serial]]\nport = "/dev/ttyUSB0"\n'
UNIT = Path(__file__).parents[2] / "edge" / "deploy" / UNIT_NAME
COMMANDS = ("run", "check-config")  # check-config rejects what run would


@pytest.fixture
def edge_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    """``tillpulse edge ARGS`` in this process, with only the variables of ``env``."""
    return in_process("edge", capsys, monkeypatch)


def write_config(tmp_path: Path, *, mqtt: str = "", serial: str = SERIAL, port: int = 1) -> Path:
    """An edge config in ``tmp_path`` whose state dir is ``tmp_path/state``; ``mqtt``
    adds to its [mqtt] table (a table of its own after it, like [mqtt.tls], too)."""
    config = tmp_path / "edge.toml"
    state = tmp_path / "state"
    config.write_text(AGENT.format(state=state) + MQTT.format(port=port) + mqtt + serial)
    return config


def closed_port() -> int:
    """A local port nobody listens on (bound and closed at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the command line -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("run", "--bogus"), ("--bogus", "--help")),
        (("run", "--log-level", "loud"), ("--log-level", "loud")),
        (("status", "--json", "extra"), ("extra",)),
        (("launch",), ("launch",)),
    ],
)
def test_a_bad_flag_or_value_is_one_usage_line(
    edge_cli: Callable[..., Result], args: tuple[str, ...], names: tuple[str, ...]
) -> None:
    assert_one_line(edge_cli(*args), EXIT_USAGE, *names)


def test_log_level_loud_on_the_console_script_is_one_line_not_a_traceback() -> None:
    assert_one_line(run_tillpulse("edge", "run", "--log-level", "loud"), EXIT_USAGE, "loud")


# -- the config file and what it names ------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_config_names_it_and_sample_config(
    edge_cli: Callable[..., Result], tmp_path: Path, command: str
) -> None:
    missing = tmp_path / "edge.toml"
    assert_one_line(
        edge_cli(command, "--config", str(missing)), EXIT_USAGE, str(missing), "sample-config"
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_a_directory_as_the_config_is_named(
    edge_cli: Callable[..., Result], tmp_path: Path, command: str
) -> None:
    assert_one_line(edge_cli(command, "--config", str(tmp_path)), EXIT_USAGE, str(tmp_path))


def _broken_link(tmp_path: Path, name: str) -> Path:
    link = tmp_path / name
    link.symlink_to(tmp_path / "gone")
    return link


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("table", "names"),
    [
        (
            'username = "s1-pi1"\npassword_file = "{tmp}/no-password"\n',
            ("[mqtt] password_file", "/no-password", "edge.toml"),
        ),  # password file missing
        (
            'username = "s1-pi1"\npassword_file = "{tmp}"\n',
            ("[mqtt] password_file", "directory"),
        ),  # password file a directory
        (
            'username = "s1-pi1"\npassword_file = "{tmp}/empty"\n',
            ("[mqtt] password_file", "empty"),
        ),  # password file empty
        (
            'username = "s1-pi1"\n',
            ("[mqtt] password_file", "TILLPULSE_MQTT_PASSWORD"),
        ),  # no password at all
        (
            '[mqtt.tls]\nca_file = "{tmp}/ca.pem"\n',
            ("[mqtt.tls] ca_file", "/ca.pem", "CA certificate"),
        ),  # CA file missing
        (
            '[mqtt.tls]\nca_file = "{tmp}/link.pem"\n',
            ("[mqtt.tls] ca_file", "/link.pem", "no such file"),
        ),  # CA file a broken symlink
        (
            '[mqtt.tls]\nca_file = "{tmp}/empty"\ncert_file = "{tmp}/empty"\n'
            'key_file = "{tmp}/client.key"\n',
            ("[mqtt.tls] key_file", "/client.key"),
        ),  # client key missing
        (
            '[mqtt.tls]\nca_file = "{tmp}/empty"\ncert_file = "{tmp}/empty"\n',
            ("[mqtt.tls]", "cert_file and key_file"),
        ),  # certificate without key
    ],
)
def test_a_file_the_config_names_is_checked_before_the_agent_starts(
    edge_cli: Callable[..., Result],
    tmp_path: Path,
    command: str,
    table: str,
    names: tuple[str, ...],
) -> None:
    (tmp_path / "empty").write_text("")
    _broken_link(tmp_path, "link.pem")
    config = write_config(tmp_path, mqtt=table.format(tmp=tmp_path))
    assert_one_line(edge_cli(command, "--config", str(config)), EXIT_USAGE, *names)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_state_dir_that_is_a_file_is_named(
    edge_cli: Callable[..., Result], tmp_path: Path, command: str
) -> None:
    config = write_config(tmp_path)
    (tmp_path / "state").write_text("not a directory")
    assert_one_line(
        edge_cli(command, "--config", str(config)),
        EXIT_USAGE,
        "[agent] state_dir",
        str(tmp_path / "state"),
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_a_read_only_state_dir_is_exit_2_which_systemd_does_not_restart(
    edge_cli: Callable[..., Result], tmp_path: Path, small_disk: SmallDisk, command: str
) -> None:
    state = small_disk.path / "state"
    state.mkdir()
    # read-only, as an SD card the kernel remounted after errors (root writes anywhere else)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk.path)], check=True)
    config = tmp_path / "edge.toml"
    config.write_text(AGENT.format(state=state) + MQTT.format(port=1) + SERIAL)
    assert_one_line(
        edge_cli(command, "--config", str(config)),
        EXIT_USAGE,
        "[agent] state_dir",
        str(state),
        "read-only",
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes a 0500 directory anyway")
@pytest.mark.parametrize("command", COMMANDS)
def test_a_state_dir_of_another_user_names_chown(
    edge_cli: Callable[..., Result], tmp_path: Path, command: str
) -> None:
    config = write_config(tmp_path)
    (tmp_path / "state").mkdir(mode=0o500)
    assert_one_line(
        edge_cli(command, "--config", str(config)), EXIT_USAGE, "[agent] state_dir", "chown"
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_no_serial_port_is_named(
    edge_cli: Callable[..., Result], tmp_path: Path, command: str
) -> None:
    config = write_config(tmp_path, serial="")
    assert_one_line(
        edge_cli(command, "--config", str(config)), EXIT_USAGE, "[[serial]]", str(config)
    )


def test_a_misspelt_environment_override_names_the_variable(
    edge_cli: Callable[..., Result], tmp_path: Path
) -> None:
    config = write_config(tmp_path)
    result = edge_cli(
        "check-config", "--config", str(config), env={"TILLPULSE_EDGE__MQTT__HOTS": "b"}
    )
    assert_one_line(result, EXIT_USAGE, "TILLPULSE_EDGE__MQTT__HOTS", "hots")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("text", "names"),
    [
        (b"\x00\xff\xfe binary", ("edge.toml", "cannot be read")),
        (b"", ("edge.toml", "agent")),  # empty
        (b'{"agent": {}}', ("edge.toml", "not valid TOML")),  # JSON, not TOML
        (b'[agent]\nsite = "s1"\n# caf\xe9\n', ("edge.toml", "cannot be read")),  # Latin-1
    ],
    ids=["binary", "empty", "json", "latin-1"],
)
def test_a_config_that_is_not_utf8_toml_names_the_file(
    edge_cli: Callable[..., Result],
    tmp_path: Path,
    command: str,
    text: bytes,
    names: tuple[str, ...],
) -> None:
    config = tmp_path / "edge.toml"
    config.write_bytes(text)
    assert_one_line(edge_cli(command, "--config", str(config)), EXIT_USAGE, *names)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("edit", "names"),
    [
        (("port = 1\n", 'port = "mqtt"\n'), ("mqtt.port", "int")),
        (("port = 1\n", "port = 70000\n"), ("mqtt.port", "65535")),
        (("port = 1\n", "port = 1\nkeepalive_s = 99999999999999999999\n"), ("keepalive_s",)),
        (('host = "127.0.0.1"', 'host = ""'), ("mqtt.host", "length")),
        (
            ("port = 1\n", "port = 1\nreconnect_min_s = 90.0\nreconnect_max_s = 5.0\n"),
            ("reconnect_min_s", "reconnect_max_s"),
        ),
        (('device = "s1-pi1"', 'device = "s1-p\\u0007i"'), ("agent.device",)),  # control char
        (('device = "s1-pi1"', 'device = "s1-\u03c01"'), ("agent.device",)),  # not ASCII
        ((SERIAL, SERIAL + SERIAL), ("serial", "/dev/ttyUSB0", "twice")),
    ],
    ids=[
        "port-a-string",
        "port-out-of-range",
        "keepalive-huge",
        "host-empty",
        "reconnect-min-over-max",
        "device-control-char",
        "device-unicode",
        "serial-port-twice",
    ],
)
def test_a_key_with_a_value_the_agent_cannot_use_is_named(
    edge_cli: Callable[..., Result],
    tmp_path: Path,
    command: str,
    edit: tuple[str, str],
    names: tuple[str, ...],
) -> None:
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace(*edit))
    assert_one_line(edge_cli(command, "--config", str(config)), EXIT_USAGE, str(config), *names)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_serial_port_that_is_not_a_tty_is_named(
    edge_cli: Callable[..., Result], tmp_path: Path, command: str
) -> None:
    not_a_tty = tmp_path / "ttyUSB0"
    not_a_tty.write_text("")
    config = write_config(tmp_path, serial=f'[[serial]]\nport = "{not_a_tty}"\n')
    assert_one_line(
        edge_cli(command, "--config", str(config)),
        EXIT_USAGE,
        "[[serial]] #1 port",
        str(not_a_tty),
        "tty",
    )


@pytest.mark.parametrize(
    ("variable", "value", "names"),
    [
        ("TILLPULSE_EDGE__MQTT__PORT", "eighty", ("mqtt.port",)),
        ("TILLPULSE_EDGE__MQTT", "1", ("mqtt",)),  # a table set to a value
        ("TILLPULSE_EDGE__SERIAL__PORT", "/dev/ttyUSB1", ("serial",)),  # a list of tables
    ],
)
def test_an_override_of_the_wrong_type_names_the_variable(
    edge_cli: Callable[..., Result],
    tmp_path: Path,
    variable: str,
    value: str,
    names: tuple[str, ...],
) -> None:
    config = write_config(tmp_path)
    result = edge_cli("check-config", "--config", str(config), env={variable: value})
    assert_one_line(result, EXIT_USAGE, variable, *names)


def test_a_second_agent_on_the_same_state_dir_is_refused(
    edge_cli: Callable[..., Result], tmp_path: Path
) -> None:
    config = write_config(tmp_path)
    (tmp_path / "state").mkdir()
    running = lock_directory(tmp_path / "state")  # as the agent the unit started holds it
    assert running is not None
    try:
        result = edge_cli("run", "--config", str(config))
    finally:
        os.close(running)
    assert_one_line(
        result, EXIT_USAGE, "[agent] state_dir", str(tmp_path / "state"), "another edge agent"
    )


# -- the broker: check-config --connect --------------------------------------------------


def test_connect_to_a_closed_port_names_the_address(
    edge_cli: Callable[..., Result], tmp_path: Path
) -> None:
    port = closed_port()
    config = write_config(tmp_path, port=port)
    result = edge_cli("check-config", "--connect", "--config", str(config))
    assert_one_line(result, EXIT_FAILED, f"127.0.0.1:{port}", "[mqtt] host and port")


@pytest.mark.integration
def test_connect_with_the_configured_credentials(
    edge_cli: Callable[..., Result],
    tmp_path: Path,
    mosquitto_factory: Callable[..., MosquittoServer],
) -> None:
    broker = mosquitto_factory(accounts={"s1-pi1": "right"})
    secret = tmp_path / "password"
    secret.write_text("wrong\n")
    config = write_config(
        tmp_path, mqtt=f'username = "s1-pi1"\npassword_file = "{secret}"\n', port=broker.port
    )
    refused = edge_cli("check-config", "--connect", "--config", str(config))
    assert_one_line(refused, EXIT_FAILED, f"{broker.host}:{broker.port}", "s1-pi1", "password")

    secret.write_text("right\n")
    accepted = edge_cli("check-config", "--connect", "--config", str(config))
    assert accepted.code == EXIT_OK, accepted.err
    assert f"mqtt {broker.host}:{broker.port}: ok" in accepted.out


@pytest.mark.integration
def test_connect_with_the_configured_tls_files(
    edge_cli: Callable[..., Result],
    tmp_path: Path,
    tls_broker: TlsBroker,  # noqa: F811
) -> None:
    client = tls_broker.fleet_ca.issue(tls_broker.pki, "s1-pi1")
    stranger = make_authority(tls_broker.pki, "stranger")
    tls = '[mqtt.tls]\nca_file = "{ca}"\ncert_file = "{cert}"\nkey_file = "{key}"\n'
    files = {"cert": client.cert_file, "key": client.key_file}
    config = write_config(
        tmp_path, mqtt=tls.format(ca=stranger.cert_file, **files), port=tls_broker.tls_port
    )
    unverified = edge_cli("check-config", "--connect", "--config", str(config))
    assert_one_line(
        unverified, EXIT_FAILED, f"127.0.0.1:{tls_broker.tls_port}", "[mqtt.tls] ca_file"
    )

    config = write_config(
        tmp_path,
        mqtt=tls.format(ca=tls_broker.fleet_ca.cert_file, **files),
        port=tls_broker.tls_port,
    )
    verified = edge_cli("check-config", "--connect", "--config", str(config))
    assert verified.code == EXIT_OK, verified.err
    assert f"mqtt 127.0.0.1:{tls_broker.tls_port}: ok" in verified.out


# -- status --------------------------------------------------------------------------------


def test_status_without_an_agent_is_exit_4_with_the_reason(
    edge_cli: Callable[..., Result], tmp_path: Path
) -> None:
    config = write_config(tmp_path)
    assert_one_line(
        edge_cli("status", "--json", "--config", str(config)),
        EXIT_NOT_RUNNING,
        str(tmp_path / "state"),
        "is the agent running?",
    )


# -- interrupts, and --debug ---------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_agent_starts_is_interrupted_130(
    edge_cli: Callable[..., Result],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    signum: int,
) -> None:
    """Before the agent runs there is nothing to stop cleanly: the start is abandoned."""
    started = edge_agent.Agent.__init__

    def signalled_while_starting(self: edge_agent.Agent, *args: object) -> None:
        os.kill(os.getpid(), signum)
        started(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(edge_agent.Agent, "__init__", signalled_while_starting)
    before = signal.getsignal(signum)
    result = edge_cli("run", "--config", str(write_config(tmp_path)))
    assert_one_line(result, EXIT_INTERRUPTED, "interrupted")
    assert signal.getsignal(signum) is before  # this process's handlers are back


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, EXIT_INTERRUPTED), (signal.SIGTERM, EXIT_OK)]
)
def test_a_signal_while_the_agent_runs_stops_it_cleanly(
    tmp_path: Path, signum: int, code: int
) -> None:
    """Ctrl-C is an interruption (130); SIGTERM is how systemd stops the service (0)."""
    config = write_config(tmp_path, port=closed_port())
    result = interrupt_tillpulse(
        "edge", "run", "--config", str(config), after="agent_started", signum=signum
    )
    assert TRACEBACK not in result.err
    assert result.code == code, result.err
    assert "event=agent_stopped" in result.err


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "edge.toml"
    result = run_tillpulse("edge", "check-config", "--config", str(missing), "--debug")
    assert TRACEBACK in result.err and str(missing) in result.err
    assert result.code != EXIT_OK


def test_stdout_onto_a_full_disk_is_one_line_not_an_internal_error() -> None:
    with open("/dev/full", "w") as full:  # what `> file` on a full disk gives the process
        done = subprocess.run(
            [sys.executable, "-m", "tillpulse", "edge", "sample-config"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            check=False,
        )
    result = Result(("edge", "sample-config"), done.returncode, "", done.stderr)
    assert_one_line(result, EXIT_USAGE, "No space left on device", "free space")


def test_an_internal_error_is_one_line_pointing_at_debug(
    edge_cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(edge_agent.Agent, "__init__", broken)
    result = edge_cli("run", "--config", str(write_config(tmp_path)))
    assert_one_line(result, EXIT_FAILED, "internal error", "a bug", "--debug")


# -- sample-config -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [("sample-config", "--out", "{disk}/edge.toml"), ("install-unit", "--out", "{disk}")]
)
def test_writing_onto_a_full_disk_names_the_file_and_the_fix(
    edge_cli: Callable[..., Result], small_disk: SmallDisk, args: tuple[str, ...]
) -> None:
    small_disk.fill()
    argv = [arg.format(disk=small_disk.path) for arg in args]
    assert_one_line(edge_cli(*argv), EXIT_USAGE, str(small_disk.path), "disk is full")
    assert sorted(p.name for p in small_disk.path.iterdir()) == [".filler"]  # no partial file


def test_sample_config_does_not_overwrite_and_names_a_missing_dir(
    edge_cli: Callable[..., Result], tmp_path: Path
) -> None:
    existing = tmp_path / "edge.toml"
    existing.write_text("# mine\n")
    assert_one_line(edge_cli("sample-config", "--out", str(existing)), EXIT_USAGE, "--force")
    nowhere = tmp_path / "no" / "edge.toml"
    assert_one_line(
        edge_cli("sample-config", "--out", str(nowhere)), EXIT_USAGE, str(nowhere), "create"
    )
