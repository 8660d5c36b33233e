"""Redelivery detection for sequenced device events, in bounded memory.

An event's identity is (site, device, stream, seq): a device counts each
stream on its own (docs/wire.md), so a terminal's payment 5 and its status 5,
or an edge agent's HostHealth 5 and the terminal sharing its id, are distinct
events. Its ``ts`` is remembered with it. The same identity with the same
``ts`` is a redelivery (MQTT QoS 1 resend, an edge outbox replay); the same
identity with another ``ts`` is a new event of a stream whose counter
restarted, so it is not a duplicate (``reused``). `DeviceState` messages have
no seq and are never deduplicated.

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

Identity = tuple[str, str, str, int]  # (site, device, stream, seq)


@dataclass(frozen=True, slots=True)
class DedupStats:
    entries: int
    max_entries: int
    duplicates: int
    reused: int  # same (site, device, stream, seq), other ts: a restarted counter
    evicted: int


class Deduplicator:
    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._seen: dict[Identity, int] = {}  # identity -> ts
        self._order: deque[Identity] = deque()  # identities, first seen first
        self._duplicates = 0
        self._reused = 0
        self._evicted = 0

    def is_duplicate(self, site: str, device: str, stream: str, seq: int, ts: int) -> bool:
        """True if this event was seen before; otherwise remember it and return False.

        ``stream`` is the event's `wire.topics.Stream` value.
        """
        key = (site, device, stream, seq)
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
