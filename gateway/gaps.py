"""Sequence gap detection from ``seq``, per (site, device, stream), in bounded memory.

A device numbers each stream's events with a counter of its own (docs/wire.md),
so within one (site, device, stream) a jump from the highest seq seen to a
higher one means events are missing. Keying by the stream too keeps streams
that share a device id apart: a terminal's payments and heartbeats, or an
edge agent's HostHealth and the terminal that shares its id. Each such
sequence (below, "a device's stream") keeps the highest seq and the seqs
known to be missing within ``window`` below it:

- ``seq == highest + 1``: the normal case.
- ``seq > highest + 1``: ``seq - highest - 1`` events are counted ``missing``;
  the newest ``window`` of them are remembered.
- a remembered missing seq arrives late: counted ``filled``.
- a missing seq that falls more than ``window`` below the highest (or was never
  remembered, in a jump longer than the window) can no longer be filled:
  counted ``expired``. Always ``missing == filled + expired + outstanding``.
- a seq within the window that is not missing: an event seen before (a
  redelivery the deduplicator had forgotten), counted ``repeated``.
- a seq more than ``window`` below the highest is either a very late event or
  a restarted counter (reboot with a lost counter). It is counted ``stale``
  and kept as a candidate; if the stream's next event follows it (within
  ``window`` above it), the counter restarted: the stale count is taken back,
  a ``reset`` is counted, the stream's outstanding missing seqs expire and
  tracking restarts from the new seq. A reset is never counted as a gap.

Memory: at most ``window`` remembered seqs per device's stream, and at most
``max_devices`` (site, device, stream) keys (the config key keeps its name;
a terminal uses two, payment and status); when full, the key seen first is
forgotten (FIFO, counted ``evicted_devices``) and starts afresh if it comes
back. ``devices`` in the stats counts keys too; ``top`` lists the worst keys.

Only meaningful when each device's traffic reaches this gateway: with a
round-robin shared subscription every gateway sees a share of each device and
the rest as gaps (``[gaps] enabled = false`` there); the raw ``seq`` field in
InfluxDB allows a fleet-wide check.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

StreamKey = tuple[str, str, str]  # (site, device, stream)


@dataclass(frozen=True, slots=True)
class DeviceGaps:
    """One device stream's figures."""

    site: str
    device: str
    stream: str
    missing: int
    filled: int
    resets: int


@dataclass(frozen=True, slots=True)
class GapStats:
    devices: int  # (site, device, stream) keys tracked
    missing: int
    filled: int
    expired: int
    outstanding: int
    repeated: int
    stale: int
    resets: int
    evicted_devices: int
    top: list[DeviceGaps]  # most missing first


class _Stream:
    """What is known of one (site, device, stream) sequence."""

    __slots__ = (
        "candidate",
        "filled",
        "highest",
        "missing",
        "order",
        "resets",
        "waiting",
    )

    def __init__(self, seq: int) -> None:
        self.highest = seq
        # Created at the stream's first gap (most streams never have one).
        self.waiting: set[int] | None = None  # missing seqs that may still arrive
        self.order: deque[int] | None = None  # the same (and filled ones), ascending
        self.candidate: int | None = None  # a far-below seq: a restart, or a stale event
        self.missing = 0
        self.filled = 0
        self.resets = 0


class GapDetector:
    def __init__(self, window: int, max_devices: int) -> None:
        """``max_devices`` bounds the (site, device, stream) keys tracked (its config name)."""
        if window < 1 or max_devices < 1:
            raise ValueError("window and max_devices must be at least 1")
        self._window = window
        self._max_keys = max_devices
        self._streams: dict[StreamKey, _Stream] = {}
        self._arrival: deque[StreamKey] = deque()  # keys, first seen first
        self._offenders: dict[StreamKey, _Stream] = {}  # keys with gaps or resets
        self._missing = self._filled = self._expired = self._outstanding = 0
        self._repeated = self._stale = self._resets = self._evicted = 0

    def observe(self, site: str, device: str, stream: str, seq: int) -> None:
        """Take the event ``seq`` of ``device``'s ``stream`` (a `wire.topics.Stream` value)."""
        key = (site, device, stream)
        state = self._streams.get(key)
        if state is None:
            self._add(key, seq)
        elif seq == state.highest + 1:
            state.highest = seq
            state.candidate = None
            if state.order:
                self._expire(state, seq - self._window)
        elif seq > state.highest:
            self._jump(key, state, seq)
        elif state.waiting and seq in state.waiting:
            state.waiting.discard(seq)
            state.filled += 1
            self._filled += 1
            self._outstanding -= 1
        elif state.highest - seq <= self._window:
            self._repeated += 1
        else:
            self._far_below(key, state, seq)

    def _add(self, key: StreamKey, seq: int) -> None:
        if len(self._arrival) >= self._max_keys:
            old_key = self._arrival.popleft()
            old = self._streams.pop(old_key)
            self._offenders.pop(old_key, None)
            self._expire(old, old.highest + 1)
            self._evicted += 1
        self._streams[key] = _Stream(seq)
        self._arrival.append(key)

    def _jump(self, key: StreamKey, state: _Stream, seq: int) -> None:
        gap = seq - state.highest - 1
        state.missing += gap
        self._offenders[key] = state
        self._missing += gap
        remembered = range(max(state.highest + 1, seq - self._window), seq)
        self._expired += gap - len(remembered)
        self._outstanding += len(remembered)
        if state.waiting is None or state.order is None:
            state.waiting, state.order = set(), deque()
        state.waiting.update(remembered)
        state.order.extend(remembered)
        state.highest = seq
        state.candidate = None
        self._expire(state, seq - self._window)

    def _far_below(self, key: StreamKey, state: _Stream, seq: int) -> None:
        candidate = state.candidate
        if candidate is not None and 0 < seq - candidate <= self._window:
            self._stale -= 1  # the candidate was the first event of a restarted counter
            self._resets += 1
            state.resets += 1
            self._offenders[key] = state
            self._expire(state, state.highest + 1)
            state.highest = seq
            state.candidate = None
        else:
            self._stale += 1
            state.candidate = seq

    def _expire(self, state: _Stream, floor: int) -> None:
        """Give up on the stream's missing seqs below ``floor``."""
        order, waiting = state.order, state.waiting
        if order is None or waiting is None:
            return
        while order and order[0] < floor:
            seq = order.popleft()
            if seq in waiting:
                waiting.discard(seq)
                self._expired += 1
                self._outstanding -= 1

    def stats(self, top: int = 10) -> GapStats:
        worst = heapq.nlargest(top, self._offenders.items(), key=lambda item: item[1].missing)
        return GapStats(
            devices=len(self._streams),
            missing=self._missing,
            filled=self._filled,
            expired=self._expired,
            outstanding=self._outstanding,
            repeated=self._repeated,
            stale=self._stale,
            resets=self._resets,
            evicted_devices=self._evicted,
            top=[
                DeviceGaps(site, device, stream, state.missing, state.filled, state.resets)
                for (site, device, stream), state in worst
            ],
        )
