"""The broker tool's cases of the bad-input matrix (tests/operator_errors.py): an
operator's mistake with ``tillpulse broker`` is one line naming the option, its
environment variable or the path, and the fix; exit 2, nothing written.

The mistakes that need a running broker (a stale pid file, an unknown agent) are
in test_provision.py; these need none and run `main` in-process, but for
``--debug``'s traceback and the console script's usage error.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from broker import cli as broker_cli
from runtime.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from tests.broker.conftest import REGISTRY
from tests.operator_errors import TRACEBACK, Result, assert_one_line, in_process, run_tillpulse

pytestmark = pytest.mark.operator_error

PI = "s0001-pi1"


@pytest.fixture
def broker(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    """``tillpulse broker ARGS`` in this process, with only the variables of ``env``."""
    return in_process("broker", capsys, monkeypatch)


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    """A registry and an empty broker dir and secrets dir (no broker: nothing to reload)."""
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    dirs = {"registry": registry}
    for name in ("broker-dir", "secrets-dir"):
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
    return dirs


def options(site: dict[str, Path], **replaced: Path) -> list[str]:
    given = {**site, **{name.replace("_", "-"): path for name, path in replaced.items()}}
    return [part for name, path in given.items() for part in (f"--{name}", str(path))]


def test_provision_of_a_good_site_works(
    broker: Callable[..., Result], site: dict[str, Path]
) -> None:
    result = broker("provision", *options(site))
    assert result.code == EXIT_OK, result.err
    assert (site["broker-dir"] / "passwd").exists()


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("provision", "--bogus"), ("--bogus", "--help")),
        (("provision", "--log-level", "loud"), ("--log-level", "loud")),
        (("rotate",), ("--agent",)),
        (("revoke", "--agent", PI), ("--reason",)),
    ],
)
def test_a_bad_flag_or_a_missing_one_is_one_usage_line(
    broker: Callable[..., Result], args: tuple[str, ...], names: tuple[str, ...]
) -> None:
    assert_one_line(broker(*args), EXIT_USAGE, *names)


@pytest.mark.parametrize(
    ("missing", "variable"),
    [("registry", "TILLPULSE_BROKER_REGISTRY"), ("broker-dir", "TILLPULSE_BROKER_DIR")],
)
def test_a_required_path_neither_given_nor_in_the_environment_names_both(
    broker: Callable[..., Result], site: dict[str, Path], missing: str, variable: str
) -> None:
    given = {name: path for name, path in site.items() if name != missing}
    args = [part for name, path in given.items() for part in (f"--{name}", str(path))]
    assert_one_line(broker("provision", *args), EXIT_USAGE, f"--{missing}", variable)


def test_a_path_from_the_environment_is_named_with_its_variable(
    broker: Callable[..., Result], site: dict[str, Path]
) -> None:
    gone = site["registry"].with_name("gone.toml")
    env = {
        "TILLPULSE_BROKER_REGISTRY": str(gone),
        "TILLPULSE_BROKER_DIR": str(site["broker-dir"]),
    }
    result = broker("provision", env=env)
    assert_one_line(result, EXIT_USAGE, str(gone), "TILLPULSE_BROKER_REGISTRY", "sample-config")


@pytest.mark.parametrize(
    ("case", "names"),
    [
        ("registry missing", ("--registry", "/gone.toml", "no such file")),
        ("registry a directory", ("--registry", "directory")),
        ("registry not TOML", ("registry.toml", "not valid TOML")),
        ("broker dir missing", ("broker dir", "/gone", "not a directory")),
        ("broker dir a file", ("broker dir", "registry.toml", "not a directory")),
        ("no secrets dir", ("--secrets-dir",)),
        ("secrets dir a file", ("secrets dir", "registry.toml")),
        ("pid file missing", ("pid file", "/gone.pid", "--pid-file")),
    ],
)
def test_a_path_that_is_missing_or_not_what_it_should_be_is_named(
    broker: Callable[..., Result],
    site: dict[str, Path],
    case: str,
    names: tuple[str, ...],
) -> None:
    registry, tmp = site["registry"], site["registry"].parent
    replaced: dict[str, Path] = {
        "registry missing": {"registry": tmp / "gone.toml"},
        "registry a directory": {"registry": tmp},
        "broker dir missing": {"broker_dir": tmp / "gone"},
        "broker dir a file": {"broker_dir": registry},
        "secrets dir a file": {"secrets_dir": registry},
        "pid file missing": {"pid_file": tmp / "gone.pid"},
    }.get(case, {})
    given = options(site, **replaced)
    if case == "registry not TOML":
        registry.write_text("[[agent]\n")
    if case == "no secrets dir":
        given = options({k: v for k, v in site.items() if k != "secrets-dir"})
    assert_one_line(broker("provision", *given), EXIT_USAGE, *names)
    assert not (site["broker-dir"] / "passwd").exists()  # refused before writing


def test_an_unknown_agent_is_named(broker: Callable[..., Result], site: dict[str, Path]) -> None:
    result = broker("rotate", "--agent", "s0009-pi1", *options(site))
    assert_one_line(result, EXIT_USAGE, "s0009-pi1", str(site["registry"]))


def test_ctrl_c_while_provisioning_is_interrupted_130(
    broker: Callable[..., Result], site: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> list[str]:
        raise KeyboardInterrupt

    monkeypatch.setattr(broker_cli, "apply", interrupted)
    assert_one_line(broker("provision", *options(site)), EXIT_INTERRUPTED, "interrupted")


def test_sample_config_prints_the_example_registry_and_does_not_overwrite(
    broker: Callable[..., Result], site: dict[str, Path]
) -> None:
    printed = broker("sample-config")
    assert printed.code == EXIT_OK and "[[agent]]" in printed.out
    assert_one_line(broker("sample-config", "--out", str(site["registry"])), EXIT_USAGE, "--force")


def test_the_console_script_and_debug(tmp_path: Path) -> None:
    """A usage error of the real command is one line; --debug shows the traceback."""
    assert_one_line(run_tillpulse("broker", "provision", "--log-level", "loud"), EXIT_USAGE, "loud")
    gone = tmp_path / "gone.toml"
    debug = run_tillpulse(
        "broker", "provision", "--registry", str(gone), "--broker-dir", str(tmp_path), "--debug"
    )
    assert TRACEBACK in debug.err and str(gone) in debug.err
