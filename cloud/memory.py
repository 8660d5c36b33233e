"""What the detectors carry from one window to the next, persisted between runs.

A cycle reads only a short span of raw points, so whatever needs a longer
view lives here: each device's newest heartbeat (to see it go quiet, its
clock step, a condition that persists), each terminal's running evidence
for the sequential payment tests, and the recent uses of each card (for
velocity across terminals). It is a msgspec JSON file written atomically
after each cycle, next to the alert state; everything in it is bounded by
the fleet size (cards: by ``card_horizon_s``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import msgspec

from tillpulse.logs import kv

log = logging.getLogger(__name__)

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


class TerminalEvidence(msgspec.Struct, kw_only=True):
    decline_cusum: float = 0.0  # sequential test for a raised decline rate (nats)


class CardUse(msgspec.Struct, array_like=True):
    ts_ns: int
    site: str
    device: str


class Memory(msgspec.Struct, kw_only=True):
    format: int = FORMAT
    last_window_end_ns: int = 0
    devices: dict[str, DeviceMemory] = msgspec.field(default_factory=dict)
    evidence: dict[str, TerminalEvidence] = msgspec.field(default_factory=dict)
    cards: dict[str, list[CardUse]] = msgspec.field(default_factory=dict)


_decoder = msgspec.json.Decoder(Memory)


def load_memory(path: Path | None) -> Memory:
    """The saved memory, or an empty one (first run, or an unreadable file set aside)."""
    if path is None or not path.exists():
        return Memory()
    try:
        memory = _decoder.decode(path.read_bytes())
        if memory.format != FORMAT:
            raise ValueError(f"format {memory.format}, this version reads {FORMAT}")
    except (msgspec.DecodeError, ValueError) as exc:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        path.replace(aside)
        log.warning("memory_unreadable", extra=kv(path=str(path), moved_to=str(aside), error=exc))
        return Memory()
    return memory


def save_memory(path: Path | None, memory: Memory) -> None:
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(msgspec.json.encode(memory))
    os.replace(tmp, path)
