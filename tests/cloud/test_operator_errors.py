"""The bad-input matrix for `tillpulse cloud` (tests/operator_errors.py): each mistake an
operator can make is one line naming the problem and the fix, with the documented exit
code and no traceback. Most cases call `cloud.cli.main` in this process (as the console
script would, stderr captured); signals, `--debug` and the console script run as a
process, where the process boundary is the point."""

from __future__ import annotations

import os
import signal
import socket
import traceback
from pathlib import Path

import pytest

from cloud.cli import main as cloud_main
from runtime.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from runtime.lifecycle import lock_directory
from testkit.servers import InfluxDB1Server, ServerFactory, free_port
from tests.operator_errors import (
    TRACEBACK,
    Result,
    as_the_shell_sees,
    assert_one_line,
    interrupt_tillpulse,
    run_tillpulse,
)
from wire.incidents import InjectionType
from wire.labels import make_label, write_labels
from wire.timestamps import NS_PER_S

pytestmark = pytest.mark.operator_error

CLOSED_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there


def run_cloud(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    """``tillpulse cloud ARGV`` in this process; an escaping exception is printed as the
    interpreter would (a traceback, exit 1), so a bug shows as one."""
    try:
        code = cloud_main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 (what the interpreter would print)
        traceback.print_exc()
        code = 1
    out, err = capsys.readouterr()
    return Result(tuple(argv), code, out, err)


def write_config(tmp_path: Path, query_url: str = CLOSED_URL, extra: str = "") -> Path:
    path = tmp_path / "cloud.toml"
    path.write_text(
        f'[cloud]\nstate_dir = "{tmp_path / "state"}"\n{extra}\n'
        f'[query]\nurl = "{query_url}"\ndatabase = "tillpulse"\ntimeout_s = 20.0\n'
    )
    return path


def write_files(tmp_path: Path, labels: int = 1) -> tuple[Path, Path]:
    labels_path, alerts_path = tmp_path / "labels.jsonl", tmp_path / "alerts.jsonl"
    offline = [
        make_label(
            f"l{n}", InjectionType.TERMINAL_OFFLINE, (0, 600 * NS_PER_S), sites=[], devices=["t1"]
        )
        for n in range(labels)
    ]
    write_labels(labels_path, offline)
    alerts_path.write_bytes(b"")
    return labels_path, alerts_path


# -- usage: flags and values --------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--log-level", "loud", "check-config"], ["--log-level", "loud"]),
        (["detect", "--log-level", "loud"], ["--log-level", "loud"]),
        (["detect", "--from", "yesterday", "--to", "2026-11-06T00:00:00Z"], ["--from", "ISO"]),
        (["detect", "--from", "2026-11-06T01:00:00Z", "--to", "2026-11-06T00:00:00Z"], ["--to"]),
        (["detect", "--once", "--to", "2026-11-06T00:00:00Z"], ["--to", "--from"]),
        (["detect", "--every", "soon"], ["--every", "soon"]),
        (["detect", "--every", "0s"], ["--every", "positive"]),
        (["detect", "--every", "99999999999d"], ["--every", "longer than"]),
        (["detect", "--once", "--shard", "3/2"], ["--shard", "3/2"]),
        (["train", "--days", "0"], ["--days"]),
        (["train", "--days", "0.01"], ["an hour", "--days"]),
    ],
    ids=[
        "log-level-before",
        "log-level-after",
        "from-not-iso",
        "from-after-to",
        "once-with-to",
        "every-bad",
        "every-0s",
        "every-huge",
        "shard-bad",
        "train-days-0",
        "train-under-an-hour",
    ],
)
def test_a_bad_flag_or_value_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], names: list[str]
) -> None:
    config = write_config(tmp_path)
    result = run_cloud(capsys, *argv, "--config", str(config))
    assert_one_line(result, EXIT_USAGE, *names)


# -- the config ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (None, ["does not exist", "sample-config"]),
        ('[cloud]\nwindow_s = 5\n[query]\nurl = "u"\ndatabase = "d"\n', ["cloud.window_s"]),
        ('[cloud]\nstate_dir = "/tmp"\n', ["`query`"]),
    ],
    ids=["missing", "bad-value", "no-query-section"],
)
def test_a_missing_or_invalid_config_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, names: list[str]
) -> None:
    path = tmp_path / "cloud.toml"
    if text is not None:
        path.write_text(text)
    for command in (["check-config"], ["detect", "--once"], ["train"]):
        result = run_cloud(capsys, *command, "--config", str(path))
        assert_one_line(result, EXIT_USAGE, str(path), *names)


@pytest.mark.parametrize(
    ("extra", "key", "fix"),
    [
        ('model = "{tmp}/none.skops"\n', "[cloud] model", "cloud train"),
        ('calendar = "{tmp}"\n', "cloud.calendar", "calendar"),
    ],
    ids=["model-missing", "calendar-a-dir"],
)
def test_a_file_the_config_names_is_checked_by_check_config_and_detect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, key: str, fix: str
) -> None:
    config = write_config(tmp_path, extra=extra.format(tmp=tmp_path))
    for command in (["check-config"], ["detect", "--once"]):
        result = run_cloud(capsys, *command, "--config", str(config))
        assert_one_line(result, EXIT_USAGE, key, fix)


@pytest.mark.parametrize(
    ("extra", "key", "fix"),
    [
        ('token_file = "{tmp}/token"\n', "[query] token_file {tmp}/token", "no such file"),
        ('username = "r"\npassword_file = "{tmp}/empty"\n', "[query] password_file", "empty"),
        (
            '[mqtt]\nhost = "broker"\n[mqtt.tls]\nca_file = "{tmp}/ca.pem"\n',
            "[mqtt.tls] ca_file {tmp}/ca.pem",
            "CA certificate",
        ),
        (
            '[webhook]\nurl = "http://h"\ntoken_file = "{tmp}"\n',
            "[webhook] token_file",
            "directory",
        ),
    ],
    ids=["query-token-missing", "query-password-empty", "mqtt-ca-missing", "webhook-token-a-dir"],
)
def test_a_secret_or_tls_file_is_named_with_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, key: str, fix: str
) -> None:
    (tmp_path / "empty").write_text("\n")
    config = write_config(tmp_path)
    config.write_text(config.read_text() + extra.format(tmp=tmp_path))
    for command in (["check-config"], ["train"], ["detect", "--once"]):
        result = run_cloud(capsys, *command, "--config", str(config))
        assert_one_line(result, EXIT_USAGE, key.format(tmp=tmp_path), fix, str(config))


def test_a_state_dir_that_is_a_file_is_named_with_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    (tmp_path / "state").write_text("")
    for command in (["check-config"], ["detect", "--once"]):
        result = run_cloud(capsys, *command, "--config", str(config))
        assert_one_line(result, EXIT_USAGE, "[cloud] state_dir", "not a directory")


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        ('[query]\nurl = "127.0.0.1:8086"\ndatabase = "d"\n', ["query", "url must be"]),
        ('[webhook]\nurl = "hooks.example.net"\n', ["webhook", "url must be"]),
        ('[mqtt]\nhost = ""\n', ["mqtt.host"]),
    ],
    ids=["query-url-no-scheme", "webhook-url-no-scheme", "mqtt-host-empty"],
)
def test_a_url_or_host_no_request_could_use_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, names: list[str]
) -> None:
    path = write_config(tmp_path)
    text = path.read_text()
    if extra.startswith("[query]"):  # instead of the good one
        text = text[: text.index("[query]")]
    path.write_text(text + extra)
    result = run_cloud(capsys, "check-config", "--config", str(path))
    assert_one_line(result, EXIT_USAGE, str(path), *names)


@pytest.mark.parametrize(
    "model", [b"PK\x03\x04 cut short", b"a text file"], ids=["truncated", "not-a-model"]
)
@pytest.mark.parametrize("command", [["check-config"], ["detect", "--once"]])
def test_a_model_file_detect_cannot_load_is_refused_by_check_config_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: bytes, command: list[str]
) -> None:
    path = write_config(tmp_path, extra='model = "model.skops"')
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "model.skops").write_bytes(model)
    result = run_cloud(capsys, *command, "--config", str(path))
    assert_one_line(result, EXIT_USAGE, str(tmp_path / "state" / "model.skops"), "cloud train")


def test_a_second_detect_on_the_same_shard_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path)
    shard = tmp_path / "state" / "shard-0-of-1"
    shard.mkdir(parents=True)
    running = lock_directory(shard)  # as the live job (or the last cron run) holds it
    assert running is not None
    try:
        result = run_cloud(capsys, "detect", "--once", "--config", str(path))
    finally:
        os.close(running)
    assert_one_line(result, EXIT_USAGE, "another cloud detect", "shard 0/1", "--shard")


# -- files to write -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["detect", "--from", "2026-11-06T00:00:00Z", "--to", "2026-11-06T01:00:00Z"],
        ["train"],
        ["sample-config"],
    ],
    ids=["alerts-out", "train-out", "sample-config-out"],
)
@pytest.mark.parametrize("where", ["a-dir", "no-parent"])
def test_an_unwritable_output_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], where: str
) -> None:
    target = tmp_path if where == "a-dir" else tmp_path / "no" / "such" / "file"
    option = {"detect": "--alerts-out", "train": "--out", "sample-config": "--out"}[argv[0]]
    if argv[0] == "sample-config":  # runtime.deploy_files' message: the path and the fix
        result = run_cloud(capsys, *argv, option, str(target))
        assert_one_line(result, EXIT_USAGE, str(target))
        return
    result = run_cloud(capsys, *argv, option, str(target), "--config", str(write_config(tmp_path)))
    assert_one_line(result, EXIT_USAGE, option, str(target))


# -- evaluate -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "code", "names"),
    [
        ("no-labels-file", EXIT_USAGE, ["labels.jsonl", "--labels"]),
        ("no-alerts-file", EXIT_USAGE, ["alerts.jsonl", "--alerts"]),
        ("empty-labels", EXIT_FAILED, ["no labels", "labels.jsonl"]),
        ("hours-0", EXIT_USAGE, ["--hours"]),
        ("hours-inf", EXIT_USAGE, ["--hours", "finite"]),
        ("report-out-a-dir", EXIT_USAGE, ["--report-out"]),
    ],
)
def test_evaluate_names_the_file_or_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str, code: int, names: list[str]
) -> None:
    labels, alerts = write_files(tmp_path, labels=0 if change == "empty-labels" else 1)
    argv = ["evaluate", "--labels", str(labels), "--alerts", str(alerts), "--terminals", "10"]
    argv += ["--hours", {"hours-0": "0", "hours-inf": "inf"}.get(change, "1")]
    if change == "no-labels-file":
        labels.unlink()
    if change == "no-alerts-file":
        alerts.unlink()
    if change == "report-out-a-dir":
        argv += ["--report-out", str(tmp_path)]
    assert_one_line(run_cloud(capsys, *argv), code, *names)


# -- servers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["train"],
        ["detect", "--once"],
        ["detect", "--from", "2026-11-06T00:00:00Z", "--to", "2026-11-06T00:10:00Z"],
        ["check-config", "--connect"],
    ],
    ids=["train", "detect-once", "replay", "check-config-connect"],
)
def test_an_unreachable_influxdb_is_named_with_its_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    config = write_config(tmp_path)
    result = run_cloud(capsys, *argv, "--config", str(config), "-q")
    line = assert_one_line(result, EXIT_FAILED, CLOSED_URL)
    assert "[query] url" in line or "InfluxDB" in line


@pytest.mark.integration
def test_wrong_influxdb_credentials_are_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    influxdb_factory: ServerFactory[InfluxDB1Server],
) -> None:
    server = influxdb_factory(auth=True)
    password = tmp_path / "influx-password"
    password.write_text("not the password\n")
    config = write_config(tmp_path, server.url)
    config.write_text(
        config.read_text() + f'username = "{server.admin_user}"\npassword_file = "{password}"\n'
    )
    for command in (["train"], ["detect", "--once"], ["check-config", "--connect"]):
        result = run_cloud(capsys, *command, "--config", str(config), "-q")
        assert_one_line(result, EXIT_FAILED, server.url, "password")


@pytest.mark.integration
def test_train_over_an_empty_range_is_refused_and_keeps_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], influxdb: InfluxDB1Server
) -> None:
    influxdb.create_database("tillpulse")
    config = write_config(tmp_path, influxdb.url)
    model = tmp_path / "state" / "model.skops"
    model.parent.mkdir()
    model.write_bytes(b"the previous model")
    result = run_cloud(capsys, "train", "--config", str(config), "--days", "2")
    assert_one_line(result, EXIT_FAILED, "0 terminals", "--force")
    assert model.read_bytes() == b"the previous model"


# -- a process: the console script, signals, --debug --------------------------------------


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_tillpulse("cloud", "check-config", "--debug", "-c", str(tmp_path / "none.toml"))
    assert TRACEBACK in result.err and result.code != EXIT_OK


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_an_interrupt_of_train_is_130(tmp_path: Path, signum: int) -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=1) as silent:  # never answers
        config = write_config(tmp_path, f"http://127.0.0.1:{silent.getsockname()[1]}")
        result = interrupt_tillpulse(
            "cloud", "train", "-c", str(config), after="train_started", signum=signum
        )
    assert_one_line(as_the_shell_sees(result), EXIT_INTERRUPTED, "interrupted")


@pytest.mark.integration
def test_sigint_during_a_replay_is_130(tmp_path: Path, influxdb: InfluxDB1Server) -> None:
    influxdb.create_database("tillpulse")
    config = write_config(tmp_path, influxdb.url)
    result = interrupt_tillpulse(
        "cloud",
        "detect",
        "-c",
        str(config),
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2026-11-01T00:00:00Z",
        after="detect_started",
    )
    assert_one_line(result, EXIT_INTERRUPTED, "interrupted")
