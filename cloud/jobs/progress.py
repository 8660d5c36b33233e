"""Progress of the long cloud jobs (train, a replay): `Progress.track` wraps a loop.

On a terminal (and without ``--log-json``) a rich bar with the ETA on stderr; else an
info log record every few seconds (``event=progress``), so progress is never mixed
into JSON logs or into stdout, and ``-q`` (warnings only) turns it off like any
other info line. rich is imported only for the bar: the command line stays light.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sized
from typing import Final, Literal, Protocol, TypeVar

from runtime.logs import kv

log = logging.getLogger(__name__)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
LOG_EVERY_S: Final = 5.0


class SizedIterable(Sized, Protocol[T_co]):
    def __iter__(self) -> Iterator[T_co]: ...


class Progress:
    def __init__(self, mode: Literal["bar", "log", "off"] = "off") -> None:
        self.mode = mode

    @classmethod
    def for_stderr(cls, *, tty: bool, log_json: bool) -> Progress:
        return cls("bar" if tty and not log_json else "log")

    def track(self, items: SizedIterable[T], what: str) -> Iterator[T]:
        """``items``, showing how many of them are done and when the rest will be."""
        if self.mode == "bar":
            yield from self._bar(items, what)
        elif self.mode == "log":
            yield from self._logged(items, what)
        else:
            yield from items

    @staticmethod
    def _bar(items: SizedIterable[T], what: str) -> Iterator[T]:
        from rich.console import Console  # noqa: PLC0415 (heavy: only on a terminal)
        from rich.progress import track  # noqa: PLC0415

        yield from track(items, description=what, console=Console(stderr=True), transient=True)

    @staticmethod
    def _logged(items: SizedIterable[T], what: str) -> Iterator[T]:
        total = len(items)
        started = last = time.monotonic()
        for done, item in enumerate(items):
            now = time.monotonic()
            if now - last >= LOG_EVERY_S and done:
                last = now
                eta = (now - started) / done * (total - done)
                log.info("progress", extra=kv(what=what, done=done, total=total, eta_s=round(eta)))
            yield item
