"""The bad-input matrix of `tillpulse dashboards` (tests/operator_errors.py): each mistake
is one line naming the path, key or variable and the fix, with the documented exit code.

In-process through `tillpulse.cli.main` (what the console script runs), except where
the process boundary is the point: signals and ``--debug``'s traceback.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE
from testkit.servers import InfluxDB1Server, free_port
from tests.conftest import SmallDisk
from tests.operator_errors import (
    TRACEBACK,
    Result,
    as_the_shell_sees,
    assert_one_line,
    call_tillpulse,
    interrupt_tillpulse,
    run_tillpulse,
)

pytestmark = pytest.mark.operator_error

DATASOURCE = '[datasource]\nurl = "http://influxdb:8086"\ndatabase = "tillpulse"\n'
TOKEN = "glsa_operator_token"


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("TILLPULSE_"):
            monkeypatch.delenv(name)


def tillpulse(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """``tillpulse dashboards ARGS`` in this process, as an operator sees it."""
    return call_tillpulse(capsys, "dashboards", *args)


def config(tmp_path: Path, url: str = "http://grafana:3000", token_file: str = "") -> Path:
    if not token_file:
        token_file = str(tmp_path / "grafana-token")
        Path(token_file).write_text(TOKEN + "\n")
    path = tmp_path / "dashboards.toml"
    path.write_text(f'[grafana]\nurl = "{url}"\ntoken_file = "{token_file}"\n{DATASOURCE}')
    return path


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["push", "--bogus"], ["--bogus"]),
        (["pusj"], ["pusj", "--help"]),
        (["--log-level", "loud", "generate"], ["--log-level", "loud"]),
        (["generate", "--log-level", "loud"], ["--log-level", "loud"]),
        (
            ["check-config"],
            ["/etc/tillpulse/dashboards.toml", "tillpulse dashboards sample-config"],
        ),
    ],
)
def test_a_bad_flag_or_value_is_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], names: list[str]
) -> None:
    assert_one_line(tillpulse(capsys, *args), EXIT_USAGE, *names)


@pytest.mark.parametrize("command", ["push", "check-config"])
@pytest.mark.parametrize("what", ["missing", "a directory", "not TOML", "empty"])
def test_a_bad_config_file_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, what: str
) -> None:
    path = tmp_path / "dashboards.toml"
    if what == "a directory":
        path.mkdir()
    elif what == "not TOML":
        path.write_text("[grafana\n")
    elif what == "empty":
        path.write_text("")
    result = tillpulse(capsys, command, "--config", str(path))
    line = assert_one_line(result, EXIT_USAGE, str(path))
    if what == "empty":
        assert "grafana" in line


@pytest.mark.parametrize("command", ["push", "check-config"])
@pytest.mark.parametrize("what", ["missing", "a directory", "a broken symlink"])
def test_a_secret_file_that_cannot_be_read_is_named_by_push_and_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, what: str
) -> None:
    token = tmp_path / "secrets" / "grafana-token"
    if what == "a directory":
        token.mkdir(parents=True)
    elif what == "a broken symlink":
        token.parent.mkdir()
        token.symlink_to(tmp_path / "gone")
    path = config(tmp_path, token_file=str(token))
    result = tillpulse(capsys, command, "--config", str(path))
    assert_one_line(result, EXIT_USAGE, str(token), "grafana.token_file")


def test_a_misspelt_override_names_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TILLPULSE_DASHBOARDS__GRAFANA__URLL", "http://g:3000")
    result = tillpulse(capsys, "check-config", "--config", str(config(tmp_path)))
    assert_one_line(result, EXIT_USAGE, "TILLPULSE_DASHBOARDS__GRAFANA__URLL")


@pytest.mark.parametrize("command", [["push"], ["check-config", "--connect"]])
def test_an_unreachable_grafana_names_the_address_and_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = tillpulse(capsys, *command, "--config", str(config(tmp_path, url)))
    line = assert_one_line(result, EXIT_FAILED, url, "[grafana] url")
    assert TOKEN not in line


@pytest.mark.integration
def test_check_config_connect_names_a_server_that_is_not_grafana(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], influxdb_session: InfluxDB1Server
) -> None:
    path = config(tmp_path, influxdb_session.url)
    result = tillpulse(capsys, "check-config", "--connect", "--config", str(path))
    assert_one_line(result, EXIT_FAILED, influxdb_session.url, "is this Grafana?")
    assert result.out == f"{path}: ok\n"  # the config is; the server is not


@pytest.mark.parametrize("what", ["a file", "under a file"])
def test_generate_into_a_place_it_cannot_write_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    out = blocker if what == "a file" else blocker / "grafana"
    result = tillpulse(capsys, "generate", "--out", str(out))
    assert_one_line(result, EXIT_USAGE, str(blocker), "--out")


def test_generate_onto_a_full_disk_names_the_directory_and_the_fix(
    capsys: pytest.CaptureFixture[str], small_disk: SmallDisk
) -> None:
    small_disk.fill()
    out = small_disk.path / "grafana"
    result = tillpulse(capsys, "generate", "--out", str(out))
    assert_one_line(result, EXIT_USAGE, str(out), "No space left on device", "free space")


@pytest.mark.parametrize("what", ["exists", "in a missing directory", "a directory"])
def test_sample_config_out_names_the_file_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    out = tmp_path / "dashboards.toml"
    fix = {"exists": "--force", "in a missing directory": "create", "a directory": "name the file"}
    if what == "exists":
        out.write_text("mine")
    elif what == "a directory":
        out.mkdir()
    else:
        out = tmp_path / "nowhere" / "dashboards.toml"
    result = tillpulse(capsys, "sample-config", "--out", str(out))
    assert_one_line(result, EXIT_USAGE, str(out.parent if "missing" in what else out), fix[what])
    if what == "exists":
        assert out.read_text() == "mine"


def test_sample_config_prints_a_config_that_check_config_takes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    printed = tillpulse(capsys, "sample-config")
    assert printed.code == 0 and "[grafana]" in printed.out
    # the secrets it names are the operator's to create: the check says which is missing
    path = tmp_path / "dashboards.toml"
    path.write_text(printed.out)
    result = tillpulse(capsys, "check-config", "--config", str(path))
    assert_one_line(result, EXIT_USAGE, "/etc/tillpulse/grafana-token")


def test_debug_shows_the_traceback_the_normal_run_hides(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    plain = run_tillpulse("dashboards", "push", "--config", str(missing))
    assert_one_line(plain, EXIT_USAGE, str(missing))
    debug = run_tillpulse("dashboards", "push", "--config", str(missing), "--debug")
    assert TRACEBACK in debug.err and str(missing) in debug.err
    assert debug.code != 0


@pytest.fixture
def silent_grafana() -> Iterator[str]:
    """An address that takes the connection and never answers: a push hangs there."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_push_interrupted_mid_run_says_so(
    tmp_path: Path, silent_grafana: str, signum: int
) -> None:
    path = config(tmp_path, silent_grafana)
    result = interrupt_tillpulse(
        "dashboards", "push", "--config", str(path), "-v", after="push_started", signum=signum
    )
    assert_one_line(as_the_shell_sees(result), EXIT_INTERRUPTED, "interrupted")
