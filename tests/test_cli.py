"""The `tillpulse` command itself: its version, a component that is not one, a component
whose extra is not installed, ``--debug``, and the servers `make test` installs."""

from __future__ import annotations

import importlib.util
import re
import signal
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from runtime.cli import EXIT_INTERRUPTED, EXIT_USAGE
from testkit import install_servers
from testkit.servers import BinaryNotFoundError
from tests.operator_errors import (
    RUNNING,
    TRACEBACK,
    Result,
    assert_one_line,
    interrupt_tillpulse,
    run_tillpulse,
)
from tillpulse.cli import COMPONENTS, main


def tillpulse(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse: --version, --help, a usage error
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return Result(args, code, captured.out, captured.err)


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    result = tillpulse(capsys, "--version")
    assert result.code == 0
    assert re.fullmatch(r"tillpulse \d+\.\d+\.\d+\S*\n", result.out), result.out


def test_help_lists_every_component(capsys: pytest.CaptureFixture[str]) -> None:
    result = tillpulse(capsys, "--help")
    assert result.code == 0
    for name in COMPONENTS:
        assert re.search(rf"^    {name}\b", result.out, re.MULTILINE), name


def subcommands(capsys: pytest.CaptureFixture[str], component: str) -> list[str]:
    """The commands `tillpulse <component> --help` lists."""
    listed = tillpulse(capsys, component, "--help").out.partition("positional arguments:")[2]
    return re.findall(r"^    ([a-z][\w-]*)", listed.partition("\n\n")[0], re.MULTILINE)


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_help_is_plain_text(capsys: pytest.CaptureFixture[str], component: str) -> None:
    """What argparse prints has no reStructuredText markup (docstrings use `x`)."""
    for command in [(), *((name,) for name in subcommands(capsys, component))]:
        result = tillpulse(capsys, component, *command, "--help")
        assert result.code == 0, result.err
        assert "``" not in result.out, (component, *command)


@pytest.mark.operator_error
@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["gatway", "run"], ["gatway", "--help"]),
        ([], ["COMPONENT", "--help"]),
    ],
)
def test_a_wrong_component_is_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], names: list[str]
) -> None:
    assert_one_line(tillpulse(capsys, *args), EXIT_USAGE, *names)


@pytest.mark.operator_error
def test_a_component_whose_extra_is_missing_names_the_pip_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    find_spec = importlib.util.find_spec

    def hiding_influxdb_client(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name == "influxdb_client" else find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", hiding_influxdb_client)
    result = tillpulse(capsys, "gateway", "--help")
    assert_one_line(result, EXIT_USAGE, "influxdb_client", "pip install 'tillpulse[gateway]'")
    assert result.out == ""


@pytest.mark.operator_error
def test_debug_shows_the_traceback_the_normal_run_hides() -> None:
    args = ("dashboards", "check-config", "--config", "/nonexistent/dashboards.toml")
    assert_one_line(run_tillpulse(*args), EXIT_USAGE, "/nonexistent/dashboards.toml")
    debug = run_tillpulse(*args, "--debug")
    assert TRACEBACK in debug.err and "/nonexistent/dashboards.toml" in debug.err


@pytest.mark.operator_error
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_at_startup_says_so(tmp_path: Path, signum: int) -> None:
    # the demo imports its stack (a second or two) before it starts anything: the
    # signal lands in those imports, once tillpulse's own code runs
    args = ("demo", "--state-dir", str(tmp_path / "demo"), "--duration", "10s")
    result = interrupt_tillpulse(*args, after=RUNNING, signum=signum)
    assert_one_line(result, EXIT_INTERRUPTED, "interrupted")


def test_make_test_names_the_command_when_it_cannot_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(install_servers, "needs", lambda purpose: {"tp-no-such-x": "tp-pkg"})
    monkeypatch.setattr(install_servers, "_sudo", lambda: None)  # not root, no sudo
    with pytest.raises(BinaryNotFoundError) as raised:
        install_servers.ensure_installed("tests", install=True)
    assert str(raised.value) == (
        "the tests need the Debian packages tp-pkg; install them with: sudo apt-get update "
        "&& sudo apt-get install -y tp-pkg (or run `sudo make test`, which does)"
    )
