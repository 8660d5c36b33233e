"""The bad-input matrix's shared check: ``tillpulse ...`` run as an operator runs it,
and what the operator must get back for a mistake (README.md, "Command line").

    result = run_tillpulse("gateway", "run", "-c", str(missing))
    assert_one_line(result, EXIT_USAGE, str(missing), "check-config")

Each component's cases live in its own ``tests/<component>/test_operator_errors.py``
and are marked ``operator_error`` (``pytest -m operator_error`` runs the matrix).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import pytest

from testkit.servers import wait_until
from tillpulse.cli import main as tillpulse_main

REPO = Path(__file__).resolve().parents[1]
TRACEBACK = "Traceback (most recent call last)"


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        """stderr's lines that are not log lines (``ts=... level=...`` or JSON)."""
        return [
            line
            for line in self.err.splitlines()
            if line.strip() and not line.startswith(("ts=", '{"ts"'))
        ]


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    merged = {k: v for k, v in os.environ.items() if not k.startswith("TILLPULSE_")}
    merged.update(env or {})
    return merged


def run_tillpulse(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
    stdin: str | None = None,
) -> Result:
    """``python -m tillpulse ARGS`` to its end; ``TILLPULSE_*`` variables of the test
    process are not passed on (only those in ``env``)."""
    done = subprocess.run(
        [sys.executable, "-m", "tillpulse", *args],
        capture_output=True,
        text=True,
        env=_env(env),
        cwd=cwd or REPO,
        timeout=timeout,
        input=stdin,
        check=False,
    )
    return Result(tuple(args), done.returncode, done.stdout, done.stderr)


def call_tillpulse(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """``tillpulse ARGS`` in this process (no interpreter start: for the cases that do
    not need a process boundary), its output taken from ``capsys``."""
    try:
        code = tillpulse_main(list(args))
    except SystemExit as exc:  # argparse: --help, a usage error
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return Result(tuple(args), code, out, err)


def in_process(
    component: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    """``run(*args, env=None)``: ``tillpulse COMPONENT ARGS`` in this process with no
    ``TILLPULSE_*`` variables but those of ``env``, as `run_tillpulse` runs it."""
    for name in list(os.environ):
        if name.startswith("TILLPULSE_"):
            monkeypatch.delenv(name)

    def run(*args: str, env: Mapping[str, str] | None = None) -> Result:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        return call_tillpulse(capsys, component, *args)

    return run


# `interrupt_tillpulse(..., after=RUNNING)`: once tillpulse's own code runs (it catches
# SIGTERM from its first lines on), not while Python itself still starts.
RUNNING: Final = "<tillpulse's code runs>"


def catches(pid: int, signum: int) -> bool:
    """Process ``pid`` has a handler of its own for ``signum`` (Linux: SigCgt)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone
        return True
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (signum - 1) & 1)


def interrupt_tillpulse(
    *args: str,
    after: str | float,
    signum: int = signal.SIGINT,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
) -> Result:
    """Start ``tillpulse ARGS``, send ``signum`` once ``after`` (a text) appears on its
    stderr, ``after`` seconds passed, or (`RUNNING`) its own code runs; wait for its end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tillpulse", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(env),
        cwd=cwd or REPO,
    )
    err: list[str] = []
    try:
        if after == RUNNING:
            wait_until(lambda: catches(process.pid, signal.SIGTERM), timeout, interval=0.005)
        elif isinstance(after, str):
            assert process.stderr is not None
            os.set_blocking(process.stderr.fileno(), False)

            def seen() -> bool:
                # os.read: a non-blocking text stream's read() raises TypeError
                # when nothing is there yet.
                try:
                    chunk = os.read(process.stderr.fileno(), 1 << 16) if process.stderr else b""
                except BlockingIOError:
                    chunk = b""
                if chunk:
                    err.append(chunk.decode("utf-8", "replace"))
                return after in "".join(err) or process.poll() is not None

            wait_until(seen, timeout, message=f"{after!r} never appeared on stderr")
        else:
            time.sleep(after)
        process.send_signal(signum)
        out, rest = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return Result(tuple(args), process.returncode, out, "".join(err) + (rest or ""))


def assert_one_line(result: Result, code: int, *names: str) -> str:
    """Exit ``code``, no traceback, and one line on stderr (log lines aside) that
    names each of ``names`` (a path, key, variable, or the fix); returns that line."""
    assert TRACEBACK not in result.err, result.err
    assert result.code == code, (result.code, result.err)
    assert len(result.lines) == 1, result.err
    line = result.lines[0]
    for name in names:
        assert name in line, (name, line)
    return line


def as_the_shell_sees(result: Result) -> Result:
    """A process that died of signal N as ``$?`` shows it: 128 + N. Once tillpulse's code
    runs (``after=RUNNING``, or a text it printed) a signal is "interrupted", 130; it is
    death by the signal only before that (Python's own start-up, which no code of ours
    can guard) and, rarely on a loaded machine (a few in a hundred interrupted runs,
    issue #17), after the command already said "interrupted": the shell shows 130 for
    both."""
    if result.code < 0:
        return replace(result, code=128 - result.code)
    return result
