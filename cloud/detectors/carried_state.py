"""What the detectors carry from one window to the next, persisted between runs.

A cycle reads only a short span of raw points, so whatever needs a longer
view lives here: each device's newest heartbeat (to see it go quiet, its
clock step, a condition that persists), each terminal's running evidence
for the sequential payment tests (and each acquirer's), and the recent uses of each card (for
velocity across terminals), and the card-testing evidence of each site and acquirer with the
cards recently keyed in at each site. It is a msgspec JSON file written atomically
after each cycle (`runtime.statefile`), next to the alert state; everything in it is bounded by
the fleet size (cards: by ``card_horizon_s``; keyed-in cards: by a cap per site).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from runtime.statefile import UnreadableState, read_state, set_aside, write_state

FORMAT = 1


class DeviceMemory(msgspec.Struct, kw_only=True):
    site: str
    kind: str  # "terminal" or "sensor"
    seq: int = 0  # the newest sequence number processed
    seen_ns: int = 0  # window end at which that newest seq was first read (arrival proxy)
    ts_ns: int = 0  # its event time
    uptime_s: int = -1  # terminals: uptime of the newest heartbeat
    boot_ref_ns: int | None = None  # terminals: event time minus uptime, before any skew
    skew_s: float = 0.0  # newest heartbeat's implied boot time minus boot_ref
    battery_pct: float = 100.0
    charging: bool = True
    paper_zero_streak: int = 0  # consecutive heartbeats with no paper
    temperature_c: float | None = None
    tamper: bool = False
    offline_queue: int = 0


class CountRun(msgspec.Struct, array_like=True):
    """A CUSUM on payment counts, and what it has seen since it last stood at 0."""

    level: float = 0.0  # nats
    payments: int = 0
    expected: float = 0.0
    since_ns: int = 0  # start of the first window of the run
    # the clock hour so far (its windows share one gamma factor: cloud.detectors.kpis)
    hour_ns: int = 0  # start of that hour, 0: none
    hour_payments: int = 0
    hour_expected: float = 0.0


class QuietHour(msgspec.Struct, array_like=True):
    """A clock hour a terminal has been quiet in, days in a row: after a few, its new
    opening hours (cloud.detectors.kpis). Days count since 1970-01-01 UTC."""

    day: int = 0  # the newest day it was quiet in this hour
    days: int = 0  # days in a row up to that one
    today: int = 0  # the day of `missed`
    missed: float = 0.0  # payments its quiet windows missed in this hour that day


class TerminalEvidence(msgspec.Struct, kw_only=True):
    decline_cusum: float = 0.0  # sequential test for a raised decline rate (nats)
    # cloud.detectors.kpis
    volume_drop: CountRun = msgspec.field(default_factory=CountRun)
    volume_surge: CountRun = msgspec.field(default_factory=CountRun)
    latency_cusum: float = 0.0  # CUSUM of robust latency residuals (sigmas)
    recent_declines: dict[str, float] = msgspec.field(default_factory=dict)  # code: decayed count
    declines_at_ns: int = 0  # the time recent_declines were decayed to (0: never)
    # clock hour (0-23) -> the days in a row it was quiet: new hours? (cloud.detectors.kpis)
    quiet_hours: dict[int, QuietHour] = msgspec.field(default_factory=dict)


class LatencyRun(msgspec.Struct, array_like=True):
    """An acquirer's CUSUM on its sites' latency (cloud.detectors.fleet_wide)."""

    level: float = 0.0  # ln-latency ratio over the reference, accumulated over windows
    since_ns: int = 0  # start of the first window of the run
    raised: bool = False  # crossed the threshold, not yet drained to half of it
    declines: float = 0.0  # while raised: CUSUM of its system-coded declines (nats)


class ProbeRun(msgspec.Struct, kw_only=True):
    """The card-testing test of a site or an acquirer while its evidence is above 0
    (cloud.detectors.card_testing), and what it has counted since it rose from 0."""

    level: float = 0.0  # nats
    since_ns: int = 0  # start of the window it rose from 0 in
    probes: int = 0  # keyed-in low-value online payments
    cards: int = 0  # of them on a card new to their site: the evidence
    declined: int = 0  # of those
    codes: dict[str, int] = msgspec.field(default_factory=dict)  # their decline codes
    devices: dict[str, int] = msgspec.field(default_factory=dict)  # device: its probes
    sites: dict[str, int] = msgspec.field(default_factory=dict)  # site: its probes


class ProbeShare(msgspec.Struct, array_like=True):
    """A site's probe-like payments among its payments in normal trade, the newest
    ``CardTestingSettings.learn_payments`` or so (cloud.detectors.card_testing)."""

    probe_like: float = 0.0
    payments: float = 0.0


class CardUse(msgspec.Struct, array_like=True):
    ts_ns: int
    site: str
    device: str


class Liveness(msgspec.Struct, kw_only=True):
    """A device's last known connection state (cloud.detectors.terminal_health).

    Kept here, not re-read over a lookback: a clean shutdown on Saturday is still
    known on Monday, and a last will stamped with a connect time days old still
    belongs to the session it ended.
    """

    online_ns: int = 0  # newest "online" point: a power-on or a reconnect
    shutdown_ns: int = 0  # newest clean shutdown
    will_ns: int = 0  # newest last will (stamped when the agent composed it: at connect)
    beat_ns: int = 0  # true time of the newest heartbeat (or sensor sample) taken
    # a silence of offline_after_s or more that a heartbeat ended, reported once
    gap_from_ns: int = 0
    gap_to_ns: int = 0


class Memory(msgspec.Struct, kw_only=True):
    format: int = FORMAT
    devices: dict[str, DeviceMemory] = msgspec.field(default_factory=dict)
    evidence: dict[str, TerminalEvidence] = msgspec.field(default_factory=dict)
    cards: dict[str, list[CardUse]] = msgspec.field(default_factory=dict)
    # per acquirer: sequential test for system-coded declines (nats, cloud.detectors.fleet_wide)
    acquirer_cusum: dict[str, float] = msgspec.field(default_factory=dict)
    # per acquirer: sequential test for latency rising at most of its sites (fleet_wide)
    acquirer_latency: dict[str, LatencyRun] = msgspec.field(default_factory=dict)
    # per device: its connection and newest heartbeat, kept however long ago (terminal_health)
    liveness: dict[str, Liveness] = msgspec.field(default_factory=dict)
    # card testing (cloud.detectors.card_testing): a run per site and per acquirer, kept only
    # while its evidence is above 0; per site the cards keyed in there lately (token: ns),
    # at most CardTestingSettings.cards_per_site each
    probe_sites: dict[str, ProbeRun] = msgspec.field(default_factory=dict)
    probe_acquirers: dict[str, ProbeRun] = msgspec.field(default_factory=dict)
    keyed_cards: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    probe_share: dict[str, ProbeShare] = msgspec.field(default_factory=dict)  # per site


def load_memory(path: Path | None) -> Memory:
    """The saved memory, or an empty one (first run, or an unreadable file set aside)."""
    if path is None:
        return Memory()
    try:
        memory = read_state(path, Memory, what="memory")
    except UnreadableState:
        return Memory()
    if memory is None:
        return Memory()
    if memory.format != FORMAT:
        set_aside(path, f"format {memory.format}, this version reads {FORMAT}", what="memory")
        return Memory()
    return memory


def save_memory(path: Path | None, memory: Memory) -> None:
    if path is not None:
        write_state(path, memory)
