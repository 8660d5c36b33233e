"""Process lifecycle: how the commands stop on SIGINT (Ctrl-C) and SIGTERM, which
process owns a state directory, and whether a process is alive."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

from runtime.cli import EXIT_OK
from runtime.logs import kv

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ServiceSignals:
    """SIGINT and SIGTERM for a long-running command (``edge run``, ``gateway run``,
    ``cloud detect --every``), with the exit codes of `runtime.cli`::

        with ServiceSignals("edge agent") as signals:
            agent = Agent(config)              # a signal here abandons the start: 130
            signals.running(agent.stop)        # from now on a signal stops it cleanly
            return signals.exit_code(agent.run())

    Before `running`, either signal raises KeyboardInterrupt (`run_command` prints
    "interrupted", exit 130): there is nothing to stop cleanly yet. After it, either
    sets the stop event; the command then exits 0 for SIGTERM (how systemd and docker
    stop a service: a clean stop is a success) and 130 for SIGINT (Ctrl-C). A second
    signal during that stop raises KeyboardInterrupt at once (130): Ctrl-C twice does
    not wait for a slow stop. The previous handlers are back on leaving the block.
    """

    def __init__(self, component: str) -> None:
        self.component = component
        self.received: signal.Signals | None = None
        self._stop: threading.Event | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> ServiceSignals:
        for signum in _SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def running(self, stop: threading.Event) -> None:
        """The work has started: a signal now sets ``stop``."""
        self._stop = stop

    def exit_code(self, code: int) -> int:
        """The command's exit code once the work returned ``code``: after a clean stop
        on Ctrl-C, KeyboardInterrupt (`run_command`: "interrupted", exit 130)."""
        if code == EXIT_OK and self.received == signal.SIGINT:
            raise KeyboardInterrupt
        return code

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        again = self.received is not None
        self.received = signal.Signals(signum)
        if self._stop is None or again:  # not started yet, or a second Ctrl-C: stop now
            raise KeyboardInterrupt
        log.info("stopping", extra=kv(component=self.component, signal=self.received.name))
        self._stop.set()


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within it SIGTERM (`kill`, `timeout`) stops a command as Ctrl-C does: a
    KeyboardInterrupt, exit 130 by `runtime.cli.run_command`. For commands that are not
    services (`ServiceSignals` is theirs). Only the main thread may set a handler;
    elsewhere (main() in a thread, a test) SIGTERM is left be."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def lock_directory(path: str | os.PathLike[str]) -> int | None:
    """An exclusive lock on the directory ``path``, held by the returned descriptor until
    it is closed or the process ends; None if another process holds it. On the directory
    itself, not a lock file: creating one may fail on a full disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def pid_exists(pid: int) -> bool:
    """True if a process with this pid exists (zombies count as existing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
