"""Redelivery detection for sequenced device events, in bounded memory.

An event's identity is (site, device, seq); its ``ts`` is remembered with it.
The same identity with the same ``ts`` is a redelivery (MQTT QoS 1 resend, an
edge outbox replay); the same identity with another ``ts`` is a new event of a
device whose counter restarted, so it is not a duplicate (``reused``).
`DeviceState` messages have no seq and are never deduplicated.

Bound and eviction: at most ``max_entries`` identities are remembered; when
full, the one remembered longest ago (first seen earliest) is forgotten, FIFO.
A redelivery arriving after ``max_entries`` newer events is therefore not
recognised. That costs nothing in InfluxDB (the redelivered line lands on the
same point, see wire.points) and at worst double counts the event in an
aggregate window that is still open.

Correctness never depends on this: the pipeline still returns a duplicate's
line for the spool (an idempotent write), and uses the verdict only to keep
the event out of the aggregates and gap detection, and to count it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DedupStats:
    entries: int
    max_entries: int
    duplicates: int
    reused: int  # same (site, device, seq), other ts: a restarted counter
    evicted: int


class Deduplicator:
    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._seen: dict[tuple[str, str, int], int] = {}  # identity -> ts
        self._order: deque[tuple[str, str, int]] = deque()  # identities, first seen first
        self._duplicates = 0
        self._reused = 0
        self._evicted = 0

    def is_duplicate(self, site: str, device: str, seq: int, ts: int) -> bool:
        """True if this event was seen before; otherwise remember it and return False."""
        key = (site, device, seq)
        seen_ts = self._seen.get(key)
        if seen_ts is None:
            if len(self._order) >= self._max:
                del self._seen[self._order.popleft()]
                self._evicted += 1
            self._order.append(key)
        elif seen_ts == ts:
            self._duplicates += 1
            return True
        else:
            self._reused += 1
        self._seen[key] = ts
        return False

    def stats(self) -> DedupStats:
        return DedupStats(
            entries=len(self._seen),
            max_entries=self._max,
            duplicates=self._duplicates,
            reused=self._reused,
            evicted=self._evicted,
        )
