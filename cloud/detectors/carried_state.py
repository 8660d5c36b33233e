"""What the detectors carry from one window to the next, persisted between runs.

A cycle reads only a short span of raw points, so whatever needs a longer
view lives here: each device's newest heartbeat (to see it go quiet, its
clock step, a condition that persists), each terminal's running evidence
for the sequential payment tests (and each acquirer's), and the recent uses of each card (for
velocity across terminals). It is a msgspec JSON file written atomically
after each cycle (`runtime.statefile`), next to the alert state; everything in it is bounded by
the fleet size (cards: by ``card_horizon_s``).
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


class TerminalEvidence(msgspec.Struct, kw_only=True):
    decline_cusum: float = 0.0  # sequential test for a raised decline rate (nats)
    # cloud.detectors.kpis
    volume_drop: CountRun = msgspec.field(default_factory=CountRun)
    volume_surge: CountRun = msgspec.field(default_factory=CountRun)
    latency_cusum: float = 0.0  # CUSUM of robust latency residuals (sigmas)
    recent_declines: dict[str, float] = msgspec.field(default_factory=dict)  # code: decayed count
    declines_at_ns: int = 0  # the time recent_declines were decayed to (0: never)


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
    # per device: its connection and newest heartbeat, kept however long ago (terminal_health)
    liveness: dict[str, Liveness] = msgspec.field(default_factory=dict)


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
