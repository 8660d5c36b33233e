"""The gateway's share of the bad-input matrix (tests/operator_errors.py): what an
operator gets back for a mistake in the command line, the config, the machine or
the servers: the exit code and one line naming the key or variable and the fix.

Config cases call `gateway.cli.main` in-process; a subprocess only where the
process boundary is the point (signals, a traceback, a port held by another
process).
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.cli import main
from runtime.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from runtime.influx_sinks import V1Sink
from runtime.influx_sinks.errors import SinkRetriableError
from testkit.servers import (
    InfluxDB1Server,
    MosquittoServer,
    ServerFactory,
    VictoriaMetricsServer,
    free_port,
)
from tests.operator_errors import (
    TRACEBACK,
    Result,
    assert_one_line,
    interrupt_tillpulse,
    run_tillpulse,
)

pytestmark = pytest.mark.operator_error

EXAMPLE = Path(__file__).parents[2] / "gateway" / "deploy" / "gateway.example.toml"


def config_text(state_dir: Path, *, mqtt_port: int, influx_port: int, extra: str = "") -> str:
    return (
        f'[gateway]\nid = "gw1"\nstate_dir = "{state_dir}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\nreconnect_max_s = 1.0\n'
        f'[influxdb]\ndialect = "v1"\nurl = "http://127.0.0.1:{influx_port}"\n'
        'database = "tp"\n[http]\nlisten = "127.0.0.1:0"\n' + extra
    )


@pytest.fixture
def closed_port() -> int:
    """A port nobody listens on."""
    return free_port()


@pytest.fixture
def config(tmp_path: Path, closed_port: int) -> Path:
    """A valid config whose servers are not there."""
    path = tmp_path / "gateway.toml"
    path.write_text(config_text(tmp_path / "state", mqtt_port=closed_port, influx_port=closed_port))
    return path


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """`gateway.cli.main` in this process, with no TILLPULSE_* variable of ours."""
    for name in os.environ:
        if name.startswith("TILLPULSE_"):
            monkeypatch.delenv(name)


def gateway(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return Result(args, code, out, err)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


# -- the command line ----------------------------------------------------------------


@pytest.mark.usefixtures("in_process")
@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("run", "--bogus"), ("--bogus", "--help")),
        (("check-config", "--log-level", "loud"), ("--log-level", "loud")),
        (("--log-level", "loud", "run"), ("--log-level", "loud")),
        (("serve",), ("serve", "run")),
    ],
)
def test_a_bad_flag_or_value_is_one_line(
    *, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], names: tuple[str, ...]
) -> None:
    assert_one_line(gateway(capsys, *args), EXIT_USAGE, *names)


# -- the config file and the environment ------------------------------------------------


@pytest.mark.usefixtures("in_process")
@pytest.mark.parametrize("command", ["run", "check-config"])
@pytest.mark.parametrize(
    ("case", "names"),
    [
        ("missing", ("does not exist", "sample-config")),
        ("directory", ("is a directory",)),
        ("not toml", ("not valid TOML",)),
        ("unknown key", ("no key [mqtt] hots", "known: host, port")),
        ("no [influxdb]", ("`influxdb`",)),
    ],
)
def test_a_bad_config_file_is_one_line_naming_it(
    *,
    capsys: pytest.CaptureFixture[str],
    config: Path,
    tmp_path: Path,
    command: str,
    case: str,
    names: tuple[str, ...],
) -> None:
    path = config
    if case == "missing":
        path = tmp_path / "nope.toml"
    elif case == "directory":
        path = tmp_path
    elif case == "not toml":
        path.write_text("[gateway\n")
    elif case == "unknown key":
        edit(path, 'host = "127.0.0.1"', 'hots = "127.0.0.1"')
    else:
        path.write_text(path.read_text().partition("[influxdb]")[0])
    assert_one_line(gateway(capsys, command, "-c", str(path)), EXIT_USAGE, str(path), *names)


@pytest.mark.usefixtures("in_process")
@pytest.mark.parametrize(
    ("variable", "value", "names"),
    [
        ("TILLPULSE_GATEWAY__MQTT__HOTS", "x", ("no key [mqtt] hots", "known: host, port")),
        ("TILLPULSE_GATEWAY__MQTT__PORT", "0", ("mqtt.port", ">= 1")),
        ("TILLPULSE_GATEWAY__TIMESTAMPS__MAX_EVENT_AGE", "a month", ("not a duration",)),
    ],
)
def test_a_bad_override_blames_the_variable_not_the_file(
    *,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    config: Path,
    variable: str,
    value: str,
    names: tuple[str, ...],
) -> None:
    monkeypatch.setenv(variable, value)
    line = assert_one_line(
        gateway(capsys, "check-config", "-c", str(config)), EXIT_USAGE, variable, *names
    )
    assert str(config) not in line


@pytest.mark.usefixtures("in_process")
@pytest.mark.parametrize("command", ["run", "check-config"])
@pytest.mark.parametrize(
    ("edits", "names"),
    [
        (('url = "http://', 'url = "'), ("influxdb", "url must be http(s)://")),  # no scheme
        (('url = "http://', 'url = "ftp://'), ("influxdb", "url must be http(s)://")),
        (('url = "http://127.0.0.1:', 'url = "http://127.0.0.1:9'), ("influxdb", "url")),
        (('host = "127.0.0.1"', 'host = ""'), ("mqtt.host",)),  # empty
        (
            ("reconnect_max_s = 1.0", "reconnect_max_s = 1.0\nreconnect_min_s = 30.0"),
            ("reconnect_min_s", "reconnect_max_s"),
        ),
        (('[http]\nlisten = "127.0.0.1:0"', '[spool]\nfsync = "sometimes"'), ("spool.fsync",)),
    ],
    ids=[
        "url-no-scheme",
        "url-ftp",
        "url-port-out-of-range",
        "mqtt-host-empty",
        "reconnect-min-over-max",
        "fsync-unknown",
    ],
)
def test_a_key_the_gateway_cannot_use_is_named_before_it_starts(
    *,
    capsys: pytest.CaptureFixture[str],
    config: Path,
    command: str,
    edits: tuple[str, str],
    names: tuple[str, ...],
) -> None:
    edit(config, *edits)
    assert_one_line(gateway(capsys, command, "-c", str(config)), EXIT_USAGE, str(config), *names)


# -- files and directories the config names ----------------------------------------------


def _state_dir_is_a_file(config: Path, tmp_path: Path) -> str:
    (tmp_path / "state").write_text("")
    return "[gateway] state_dir"


def _state_dir_under_a_file(config: Path, tmp_path: Path) -> str:
    (tmp_path / "file").write_text("")
    edit(config, f'"{tmp_path / "state"}"', f'"{tmp_path / "file" / "state"}"')
    return "[gateway] state_dir"


def _password_file_missing(config: Path, tmp_path: Path) -> str:
    edit(config, "[mqtt]\n", f'[mqtt]\nusername = "gw1"\npassword_file = "{tmp_path}/pw"\n')
    return "[mqtt] password_file"


def _password_file_a_directory(config: Path, tmp_path: Path) -> str:
    edit(config, "[mqtt]\n", f'[mqtt]\nusername = "gw1"\npassword_file = "{tmp_path}"\n')
    return "[mqtt] password_file"


def _no_password_at_all(config: Path, tmp_path: Path) -> str:
    edit(config, "[mqtt]\n", '[mqtt]\nusername = "gw1"\n')
    return "TILLPULSE_MQTT_PASSWORD"


def _ca_file_broken_symlink(config: Path, tmp_path: Path) -> str:
    (tmp_path / "ca.pem").symlink_to(tmp_path / "gone.pem")
    edit(config, "[influxdb]", f'[mqtt.tls]\nca_file = "{tmp_path / "ca.pem"}"\n[influxdb]')
    return "[mqtt.tls] ca_file"


def _token_file_missing(config: Path, tmp_path: Path) -> str:
    edit(
        config,
        'dialect = "v1"',
        f'dialect = "v2"\norg = "o"\nbucket = "b"\ntoken_file = "{tmp_path}/token"',
    )
    return "[influxdb] token_file"


def _no_token_at_all(config: Path, tmp_path: Path) -> str:
    edit(config, 'dialect = "v1"', 'dialect = "v2"\norg = "o"\nbucket = "b"')
    return "TILLPULSE_INFLUX_TOKEN"


def _influx_password_file_empty(config: Path, tmp_path: Path) -> str:
    (tmp_path / "pw").write_text("\n")
    edit(
        config,
        'database = "tp"',
        f'database = "tp"\nusername = "gw"\npassword_file = "{tmp_path}/pw"',
    )
    return "[influxdb] password_file"


@pytest.mark.usefixtures("in_process")
@pytest.mark.parametrize("command", ["run", "check-config"])
@pytest.mark.parametrize(
    "break_it",
    [
        _state_dir_is_a_file,
        _state_dir_under_a_file,
        _password_file_missing,
        _password_file_a_directory,
        _no_password_at_all,
        _ca_file_broken_symlink,
        _token_file_missing,
        _no_token_at_all,
        _influx_password_file_empty,
    ],
)
def test_a_file_or_dir_run_cannot_use_is_one_line_naming_the_key(
    *,
    capsys: pytest.CaptureFixture[str],
    config: Path,
    tmp_path: Path,
    command: str,
    break_it: Callable[[Path, Path], str],
) -> None:
    key = break_it(config, tmp_path)
    assert_one_line(gateway(capsys, command, "-c", str(config)), EXIT_USAGE, key, str(config))


@pytest.mark.usefixtures("in_process")
def test_check_config_creates_the_state_dir_as_run_would(
    *, capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    result = gateway(capsys, "check-config", "-c", str(config))
    assert (result.code, result.out, result.err) == (EXIT_OK, f"{config}: ok\n", "")
    assert (tmp_path / "state").is_dir()


# -- servers: unreachable, wrong credentials, ports in use ---------------------------------


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that takes connections (the kernel's backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@pytest.mark.integration
@pytest.mark.usefixtures("in_process")
@pytest.mark.parametrize("down", ["mqtt", "influxdb"])
def test_check_config_connect_names_the_server_it_cannot_reach(
    *,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    closed_port: int,
    mosquitto_session: MosquittoServer,
    influxdb_session: InfluxDB1Server,
    down: str,
) -> None:
    influxdb_session.create_database("tp")
    mqtt_port = closed_port if down == "mqtt" else mosquitto_session.port
    influx_port = closed_port if down == "influxdb" else influxdb_session.port
    path = tmp_path / "gateway.toml"
    path.write_text(config_text(tmp_path / "state", mqtt_port=mqtt_port, influx_port=influx_port))
    result = gateway(capsys, "check-config", "--connect", "-c", str(path))
    fix = "is the broker running there?" if down == "mqtt" else "is InfluxDB running there?"
    assert_one_line(result, EXIT_FAILED, f"127.0.0.1:{closed_port}", "cannot", fix)
    up = "InfluxDB" if down == "mqtt" else "MQTT broker"
    assert f"{up} " in result.out and result.out.endswith(": ok\n"), result.out


@pytest.mark.integration
@pytest.mark.usefixtures("in_process")
@pytest.mark.parametrize("dialect", ["v1", "v2"])
def test_check_config_connect_says_ok_for_each_server(
    *,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    mosquitto_session: MosquittoServer,
    influxdb_session: InfluxDB1Server,
    victoriametrics_session: VictoriaMetricsServer,
    dialect: str,
) -> None:
    """v2 against VictoriaMetrics' /api/v2/write, which takes any token."""
    influxdb_session.create_database("tp")
    influx = influxdb_session if dialect == "v1" else victoriametrics_session
    text = config_text(
        tmp_path / "state", mqtt_port=mosquitto_session.port, influx_port=influx.port
    )
    if dialect == "v2":
        text = text.replace('dialect = "v1"', 'dialect = "v2"\norg = "o"\nbucket = "b"')
        monkeypatch.setenv("TILLPULSE_INFLUX_TOKEN", "any")
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    result = gateway(capsys, "check-config", "--connect", "-c", str(path))
    assert (result.code, result.lines) == (EXIT_OK, [])
    assert result.out == (
        f"{path}: ok\nMQTT broker 127.0.0.1:{mosquitto_session.port}: ok\n"
        f"InfluxDB http://127.0.0.1:{influx.port}: ok\n"
    )


@pytest.mark.integration
@pytest.mark.usefixtures("in_process")
@pytest.mark.parametrize("wrong", ["mqtt password", "influxdb password", "influxdb database"])
def test_check_config_connect_names_refused_credentials_and_missing_databases(
    *,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    mosquitto_factory: ServerFactory[MosquittoServer],
    influxdb_factory: ServerFactory[InfluxDB1Server],
    wrong: str,
) -> None:
    broker = mosquitto_factory(accounts={"gw1": "right"})
    influx = influxdb_factory(auth=True)
    influx.create_database("tp")
    monkeypatch.setenv("TILLPULSE_MQTT_PASSWORD", "wrong" if wrong == "mqtt password" else "right")
    monkeypatch.setenv(
        "TILLPULSE_INFLUX_PASSWORD",
        "wrong" if wrong == "influxdb password" else influx.admin_password,
    )
    path = tmp_path / "gateway.toml"
    database = "nope" if wrong == "influxdb database" else "tp"
    path.write_text(
        config_text(tmp_path / "state", mqtt_port=broker.port, influx_port=influx.port)
        .replace("[mqtt]\n", '[mqtt]\nusername = "gw1"\n')
        .replace('database = "tp"', f'database = "{database}"\nusername = "{influx.admin_user}"')
    )
    result = gateway(capsys, "check-config", "--connect", "-c", str(path))
    names = {
        "mqtt password": (f"127.0.0.1:{broker.port} refused gw1", "TILLPULSE_MQTT_PASSWORD"),
        "influxdb password": ("refused the credentials", "[influxdb] username"),
        "influxdb database": ("no database nope", "create it"),
    }[wrong]
    assert_one_line(result, EXIT_FAILED, *names)


def test_an_http_port_in_use_names_the_address_and_the_key(config: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        edit(config, "127.0.0.1:0", f"127.0.0.1:{port}")
        result = run_tillpulse("gateway", "run", "-c", str(config))
    assert_one_line(result, EXIT_USAGE, f"[http] listen 127.0.0.1:{port}", "in use", "stop it")


def test_debug_shows_the_traceback(config: Path, tmp_path: Path) -> None:
    result = run_tillpulse("gateway", "run", "--debug", "-c", str(tmp_path / "nope.toml"))
    assert result.code == EXIT_FAILED and TRACEBACK in result.err
    assert "ConfigError" in result.err and "does not exist" in result.err


def test_unreachable_influxdb_is_named_by_host_and_port_not_by_an_object(closed_port: int) -> None:
    with (
        pytest.raises(SinkRetriableError) as info,
        V1Sink(f"http://127.0.0.1:{closed_port}", "tp") as sink,
    ):
        sink.write([b"m f=1 1"])
    message = str(info.value)
    assert f"cannot reach 127.0.0.1:{closed_port}: " in message and "Connection refused" in message
    assert "object at 0x" not in message


# -- signals ------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_before_the_gateway_runs_is_interrupted(
    tmp_path: Path, silent_listener: int, signum: int
) -> None:
    """check-config --connect waits on a broker that never answers: the signal ends it."""
    config = tmp_path / "gateway.toml"
    config.write_text(
        config_text(tmp_path / "state", mqtt_port=silent_listener, influx_port=silent_listener)
    )
    result = interrupt_tillpulse(
        "gateway",
        "check-config",
        "--connect",
        "-c",
        str(config),
        after="event=probing",
        signum=signum,
    )
    assert_one_line(result, EXIT_INTERRUPTED, "interrupted")


@pytest.mark.integration
@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, EXIT_OK), (signal.SIGINT, EXIT_INTERRUPTED)]
)
def test_a_running_gateway_stops_cleanly_on_a_signal(
    tmp_path: Path,
    mosquitto_factory: ServerFactory[MosquittoServer],
    closed_port: int,
    signum: int,
    code: int,
) -> None:
    """Wrong MQTT credentials do not stop it (a service retries, docs/gateway.md): the
    log names the broker and the account; a signal stops it cleanly (InfluxDB down too)."""
    broker = mosquitto_factory(accounts={"gw1": "right"})
    path = tmp_path / "gateway.toml"
    path.write_text(
        config_text(tmp_path / "state", mqtt_port=broker.port, influx_port=closed_port).replace(
            "[mqtt]\n", '[mqtt]\nusername = "gw1"\n'
        )
    )
    result = interrupt_tillpulse(
        "gateway",
        "run",
        "-c",
        str(path),
        after="broker_connect_failed",
        signum=signum,
        env={"TILLPULSE_MQTT_PASSWORD": "wrong"},
    )
    assert TRACEBACK not in result.err and result.code == code, result.err
    [refused] = [line for line in result.err.splitlines() if "broker_connect_failed" in line][:1]
    assert f"port={broker.port}" in refused and "username=gw1" in refused
    assert "gateway_stopped" in result.err
    assert result.lines == (["tillpulse gateway: interrupted"] if code else [])


# -- sample-config ----------------------------------------------------------------------


@pytest.mark.usefixtures("in_process")
def test_sample_config_prints_the_shipped_example(capsys: pytest.CaptureFixture[str]) -> None:
    result = gateway(capsys, "sample-config")
    assert result.code == EXIT_OK and result.out == EXAMPLE.read_text()


@pytest.mark.usefixtures("in_process")
@pytest.mark.parametrize(
    ("target", "names"),
    [("exists", ("exists", "--force")), ("no dir", ("cannot write", "create"))],
)
def test_sample_config_out_refuses_what_it_cannot_write(
    *, capsys: pytest.CaptureFixture[str], tmp_path: Path, target: str, names: tuple[str, ...]
) -> None:
    out = tmp_path / "gateway.toml"
    if target == "exists":
        out.write_text("mine\n")
    else:
        out = tmp_path / "nope" / "gateway.toml"
    result = gateway(capsys, "sample-config", "--out", str(out))
    assert_one_line(result, EXIT_USAGE, str(out) if target == "exists" else str(out.parent), *names)
    assert target != "exists" or out.read_text() == "mine\n"
