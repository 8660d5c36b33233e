"""Where a run's events go: the `Sink` protocol and the JSONL file sink.

A sink takes events in simulated-time order. `idle_until` is how the runner
waits for the wall clock under time acceleration: a network sink keeps doing
its I/O meanwhile. `close` finishes what is in flight.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

from firmware_sim.event_engine import LinkChange, SimEvent
from firmware_sim.report import RunStats
from wire.messages import encode


class Sink(Protocol):
    def handle(self, event: SimEvent) -> None: ...

    def idle_until(self, deadline: float) -> None:
        """Do pending I/O until ``time.monotonic()`` reaches ``deadline``."""

    def close(self) -> None: ...


class JsonlSink:
    """One wire-encoded message per line: device messages, and the `DeviceState` a
    broker would hold for each connection change (the last will included).

    Duplicate sends appear twice; corruption is a transport matter and is only
    counted (the line carries the message as it was sent)."""

    def __init__(self, path: str | Path, stats: RunStats) -> None:
        self._file = Path(path).open("wb")  # noqa: SIM115 - closed by close()
        self._stats = stats

    def handle(self, event: SimEvent) -> None:
        message = event.state() if isinstance(event, LinkChange) else event.message
        self._file.write(encode(message) + b"\n")
        self._stats.written += 1

    def idle_until(self, deadline: float) -> None:
        time.sleep(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self._file.close()
