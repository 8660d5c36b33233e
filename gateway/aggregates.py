"""Payment aggregates: tumbling windows on event time, per terminal and per site.

Measurements (point time = the window start, so re-emitting a window
overwrites its points instead of adding new ones):

    payment_1m_device  tags site, device, gateway
    payment_1m_site    tags site, gateway
        fields count, approved, declined, volume_minor (integers), approval_rate,
        latency_p50_ms, latency_p95_ms, latency_p99_ms (floats; left out if no latency)
    decline_1m_site    tags site, response_code, gateway; field count (integer)

The names say 1m, the default ``window_s``; another window length keeps the
names (and must not be mixed with 60 s windows in one bucket).
``volume_minor`` sums the approved amounts in minor units (a site trades in
one currency); ``approval_rate`` is approved / count.

Watermark and lateness, on an event-time clock: the clock is processing time
plus the 90th-percentile offset (event ts minus arrival time) of the last
``EVENT_CLOCK_SAMPLES`` payments. In production that offset is the small
delivery delay, so the clock is about the wall clock and keeps moving while
traffic stops; in an accelerated simulation (a day in 24 minutes) or a
backfill it follows the events, so windows close as their event time
advances (a high percentile, so it follows the newest events closely). Only
events at most ``future_tolerance_s`` ahead of the wall clock take part (see
below), so clocks running ahead can drag it by that much at most, and only if
they send more than a tenth of the recent payments.
The watermark is the clock minus ``allowed_lateness_s`` and never moves
backwards, so a window closes once and a replay cannot reopen it. A window is
emitted by the first `close` at which its end is at or below the watermark.
An event whose window ends at or below the watermark is *late*: it is left
out of the aggregates and counted (``late_events``); its raw ``payment``
point is still stored, and exact figures for replays and backfills come from
the raw measurement. Until the first reading (no payment yet) nothing is
late. A restarted gateway reads its clock from the events it receives: the
backlog its MQTT session holds starts where its predecessor stopped
acknowledging, after the windows the predecessor closed. A window open at a
crash loses what was counted before it: the next process emits it with only
the events it sees itself.

A device clock running ahead: an event more than ``future_tolerance_s``
(default 300 s) ahead of the *wall clock* (processing time, not the event
clock) is counted (``future_events``) and left out: it feeds neither the
aggregates nor the event clock, so one device that says 2262 cannot move the
watermark and make everyone else's payments late. Its raw ``payment`` point
is stored as always, if the pipeline took it: one further ahead than
``[timestamps] max_future_skew`` (by default an hour) is rejected before.
Simulations and backfills replay the past (event times behind the wall clock,
advancing faster), which this bound never touches.

Several gateways on one shared subscription each see part of every device's
traffic, so every point carries a ``gateway`` tag: counts and sums add up
across gateways in a query; percentiles are per gateway, and exact fleet
percentiles come from the raw ``payment`` points. A message redelivered to
another gateway is counted by both.

Percentiles are exact, nearest rank over the window's stored latencies.

The terminal and site lines, one per terminal and window, are formatted with an
f-string through wire.lineproto's value functions (escaping and checks as in
`encode_point`, twice as fast, as wire.points does for the raw events).

Memory bounds (anything dropped is counted): at most ``max_open_windows``
window starts, ``max_open_keys`` (window, terminal) accumulators and
``max_open_values`` stored latencies; an event past the first two caps is
left out of the aggregates, past the third only its latency is not stored.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from gateway.config import AggregatesSection
from wire.lineproto import encode_point, float_field, int_field, tag_value
from wire.messages import PaymentTransaction
from wire.timestamps import NS_PER_S

DEVICE_MEASUREMENT: Final = "payment_1m_device"
SITE_MEASUREMENT: Final = "payment_1m_site"
DECLINE_MEASUREMENT: Final = "decline_1m_site"
QUANTILES: Final = (("latency_p50_ms", 0.50), ("latency_p95_ms", 0.95), ("latency_p99_ms", 0.99))


@dataclass(frozen=True, slots=True)
class AggregateStats:
    watermark_ns: int
    open_windows: int
    open_keys: int
    open_values: int
    events: int  # aggregated
    late_events: int
    future_events: int
    dropped_window_cap: int
    dropped_key_cap: int
    unsampled_latencies: int
    windows_closed: int
    points: int


class _Totals:
    """What one terminal (or one site) did in one window."""

    __slots__ = ("approved", "count", "declines", "latencies", "volume")

    def __init__(self) -> None:
        self.count = 0
        self.approved = 0
        self.volume = 0
        self.latencies = array("d")
        self.declines: dict[str, int] | None = None  # response code -> count

    def merge(self, other: _Totals) -> None:
        self.count += other.count
        self.approved += other.approved
        self.volume += other.volume
        self.latencies.extend(other.latencies)
        if other.declines:
            declines = self.declines = self.declines or {}
            for code, n in other.declines.items():
                declines[code] = declines.get(code, 0) + n

    def line(self, head: str, start: int) -> str:
        """``head`` (measurement and tags, escaped) + these figures, at the window start."""
        body = (
            f"count={int_field(self.count)},approved={int_field(self.approved)}"
            f",declined={int_field(self.count - self.approved)}"
            f",volume_minor={int_field(self.volume)}"
            f",approval_rate={float_field(self.approved / self.count)}"
        )
        if self.latencies:
            ordered = sorted(self.latencies)
            body += "".join(
                f",{name}={float_field(nearest_rank(ordered, q))}" for name, q in QUANTILES
            )
        return f"{head} {body} {start}"


def nearest_rank(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted values by the nearest-rank method."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


EVENT_CLOCK_SAMPLES: Final = 1024


class Aggregator:
    def __init__(self, gateway: str, now_ns: int, limits: AggregatesSection) -> None:
        self._gateway = gateway
        self._limits = limits
        self._window_ns = limits.window_s * NS_PER_S
        self._lateness_ns = limits.allowed_lateness_s * NS_PER_S
        self._future_ns = limits.future_tolerance_s * NS_PER_S
        # event ts minus arrival time of the latest payments; their 90th percentile
        # is the clock's offset from processing time
        self._offsets: deque[int] = deque(maxlen=EVENT_CLOCK_SAMPLES)
        self._watermark = -(2**63)  # nothing is late before the clock has a reading
        self._windows: dict[int, dict[tuple[str, str], _Totals]] = {}  # start -> terminals
        self._keys = self._values = 0
        self._events = self._late = self._future = 0
        self._dropped_windows = self._dropped_keys = self._unsampled = 0
        self._closed = self._points = 0

    def add(self, m: PaymentTransaction, now_ns: int) -> None:
        """Count a payment into its window; ``now_ns`` is processing (wall-clock) time."""
        ts = m.ts
        if ts > now_ns + self._future_ns:
            self._future += 1  # a clock ahead of the wall must not drive the event clock
            return
        self._offsets.append(ts - now_ns)
        start = ts - ts % self._window_ns
        if start + self._window_ns <= self._watermark:
            self._late += 1
            return
        window = self._windows.get(start)
        if window is None:
            if len(self._windows) >= self._limits.max_open_windows:
                self._dropped_windows += 1
                return
            window = self._windows[start] = {}
        key = (m.site, m.device)
        totals = window.get(key)
        if totals is None:
            if self._keys >= self._limits.max_open_keys:
                self._dropped_keys += 1
                return
            totals = window[key] = _Totals()
            self._keys += 1
        self._events += 1
        totals.count += 1
        if m.approved:
            totals.approved += 1
            totals.volume += m.amount_minor
        else:
            declines = totals.declines
            if declines is None:
                declines = totals.declines = {}
            declines[m.response_code] = declines.get(m.response_code, 0) + 1
        if self._values < self._limits.max_open_values:
            totals.latencies.append(m.auth_latency_ms)
            self._values += 1
        else:
            self._unsampled += 1

    def close(self, now_ns: int) -> list[str]:
        """Read the event clock, advance the watermark; the lines of the windows it closed."""
        if self._offsets:
            offset = sorted(self._offsets)[len(self._offsets) * 9 // 10]
            clock = now_ns + offset
            self._watermark = max(self._watermark, clock - self._lateness_ns)
        lines: list[str] = []
        for start in sorted(self._windows):
            if start + self._window_ns > self._watermark:
                break
            window = self._windows.pop(start)
            self._keys -= len(window)
            self._values -= sum(len(totals.latencies) for totals in window.values())
            lines.extend(self._window_lines(start, window))
            self._closed += 1
        self._points += len(lines)
        return lines

    def _window_lines(self, start: int, window: dict[tuple[str, str], _Totals]) -> Iterable[str]:
        gateway = tag_value(self._gateway)
        sites: dict[str, _Totals] = {}
        for (site, device), totals in window.items():
            yield totals.line(
                f"{DEVICE_MEASUREMENT},device={tag_value(device)},gateway={gateway}"
                f",site={tag_value(site)}",
                start,
            )
            site_totals = sites.get(site)
            if site_totals is None:
                site_totals = sites[site] = _Totals()
            site_totals.merge(totals)
        for site, totals in sites.items():
            yield totals.line(f"{SITE_MEASUREMENT},gateway={gateway},site={tag_value(site)}", start)
            for code, count in (totals.declines or {}).items():
                yield encode_point(
                    DECLINE_MEASUREMENT,
                    {"site": site, "response_code": code, "gateway": self._gateway},
                    {"count": count},
                    start,
                )

    def stats(self) -> AggregateStats:
        return AggregateStats(
            watermark_ns=self._watermark,
            open_windows=len(self._windows),
            open_keys=self._keys,
            open_values=self._values,
            events=self._events,
            late_events=self._late,
            future_events=self._future,
            dropped_window_cap=self._dropped_windows,
            dropped_key_cap=self._dropped_keys,
            unsampled_latencies=self._unsampled,
            windows_closed=self._closed,
            points=self._points,
        )
