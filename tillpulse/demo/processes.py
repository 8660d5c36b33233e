"""The demo's own child processes: gateway, edge agents, the simulated fleet.

Each runs ``python -m <module> ...`` in a process group of its own (so a
Ctrl-C in the terminal reaches only the demo, which then stops them in
order) with ``setpriv --pdeathsig KILL`` in front when it is available (so a
demo that crashes or is killed takes them with it). Their stderr goes to a
log file in the state directory; the error on a premature exit quotes its
tail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Final

from testkit.servers import ServerError, parent_death_prefix

STOP_TIMEOUT_S: Final = 20.0


class ChildExitedError(ServerError):
    """A child process ended before it should have; the message has its log tail."""


class Child:
    """``python -m module *args`` in its own process group; stderr to ``log_path``."""

    def __init__(
        self, name: str, module: str, args: list[str], log_path: Path, *, pipes: bool = False
    ) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [*parent_death_prefix(), sys.executable, "-m", module, *args]
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else log,
                stderr=log,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stdin(self) -> IO[bytes]:
        assert self.process.stdin is not None, "started without pipes"
        return self.process.stdin

    @property
    def stdout(self) -> IO[bytes]:
        assert self.process.stdout is not None, "started without pipes"
        return self.process.stdout

    def running(self) -> bool:
        return self.process.poll() is None

    def check_running(self) -> None:
        """Raise ChildExitedError, with the log's tail, if the process has ended."""
        code = self.process.poll()
        if code is not None:
            raise ChildExitedError(
                f"{self.name} exited with code {code}; log {self.log_path}:\n{self.log_tail()}"
            )

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM to its process group, SIGKILL after ``timeout``; returns the exit code."""
        if self.running():
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._append_log(f"no exit {timeout:.0f}s after SIGTERM: SIGKILL")
                self._signal_group(signal.SIGKILL)
        code = self.process.wait()  # reaped: its pid is really gone
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        return code

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log file>"
        return "\n".join(text.splitlines()[-lines:])

    def _signal_group(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):  # the group is gone already
            os.killpg(self.process.pid, signum)

    def _append_log(self, note: str) -> None:
        with self.log_path.open("a") as log:
            log.write(f"=== tillpulse demo: {note}\n")
