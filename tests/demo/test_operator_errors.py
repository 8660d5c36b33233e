"""The bad-input matrix of `tillpulse demo` (tests/operator_errors.py): each mistake is
one line naming the option, path or package and the fix, with the documented exit code.

In-process through `tillpulse.cli.main` where nothing is started; a subprocess where the
process boundary is the point (signals, ``--debug``'s traceback). Ctrl-C and SIGTERM
mid-run are in test_demo.py (every process the demo started is stopped, exit 130).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from runtime.cli import EXIT_INTERRUPTED, EXIT_USAGE
from testkit.servers import MosquittoServer
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


def demo(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """``tillpulse demo ARGS`` in this process, as an operator sees it."""
    return call_tillpulse(capsys, "demo", *args)


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--log-level", "loud"], ["--log-level", "loud"]),
        (["--terminalz", "5"], ["--terminalz"]),
        (["--terminals", "many"], ["--terminals", "many"]),
        (["--terminals", "0"], ["--terminals"]),
        (["--sensors", "-1"], ["--sensors"]),
        (["--duration", "soon"], ["--duration", "soon"]),
        (["--duration", "0s"], ["--duration"]),
    ],
)
def test_a_bad_flag_or_value_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], names: list[str]
) -> None:
    result = demo(capsys, "--state-dir", str(tmp_path / "demo"), *args)
    assert_one_line(result, EXIT_USAGE, *names)
    assert not (tmp_path / "demo").exists()  # nothing started, nothing written


@pytest.mark.parametrize("what", ["a file", "under a file", "not the demo's"])
def test_a_state_dir_it_cannot_use_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    state = {"a file": blocker, "under a file": blocker / "demo", "not the demo's": tmp_path}
    result = demo(capsys, "--state-dir", str(state[what]), "--duration", "10s")
    assert_one_line(result, EXIT_USAGE, str(state[what]), "--state-dir")
    assert blocker.read_text() == "keep me"


def test_a_missing_server_names_the_package_and_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MosquittoServer, "binary", "tillpulse-no-such-broker")
    monkeypatch.setattr(MosquittoServer, "apt_package", "tillpulse-no-such-package")
    result = demo(capsys, "--state-dir", str(tmp_path / "demo"))
    assert_one_line(
        result, EXIT_USAGE, "sudo apt-get install -y tillpulse-no-such-package", "sudo make demo"
    )
    assert not (tmp_path / "demo").exists()  # checked before anything is written


def test_debug_shows_the_traceback_the_normal_run_hides(tmp_path: Path) -> None:
    args = ("demo", "--state-dir", str(tmp_path), "--duration", "10s")
    (tmp_path / "precious.txt").write_text("keep me")
    assert_one_line(run_tillpulse(*args), EXIT_USAGE, str(tmp_path))
    debug = run_tillpulse(*args, "--debug")
    assert TRACEBACK in debug.err and str(tmp_path) in debug.err


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_while_starting_the_servers_says_so(tmp_path: Path, signum: int) -> None:
    # its phases go to stdout, which the helper does not watch: a time past the imports
    result = interrupt_tillpulse(
        "demo", "--plain", "--state-dir", str(tmp_path / "demo"), after=3.0, signum=signum
    )
    assert_one_line(as_the_shell_sees(result), EXIT_INTERRUPTED, "interrupted")
