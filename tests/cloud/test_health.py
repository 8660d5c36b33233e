"""Heartbeats folded into memory: repeats are skipped, a restarted sequence is followed."""

from __future__ import annotations

from typing import Any

from cloud.detectors.carried_state import Memory
from cloud.detectors.terminal_health import fold_heartbeats
from cloud.reading.influxql_reader import Table
from cloud.reading.window import STATUS_COLUMNS, WindowData
from wire.timestamps import NS_PER_S

T0 = 1_795_593_600 * NS_PER_S  # 2026-11-25T08:00:00Z
BEAT_S = 60


def heartbeats(first_seq: int, first_s: int, count: int, **overrides: Any) -> list[dict[str, Any]]:
    """``count`` heartbeats a minute apart of a terminal booted at T0."""
    return [
        {
            "time": T0 + (first_s + n * BEAT_S) * NS_PER_S,
            "device": "t1",
            "site": "s1",
            "seq": first_seq + n,
            "battery_pct": 80.0,
            "charging": True,
            "paper_pct": 50.0,
            "temperature_c": 31.0,
            "tamper": False,
            "offline_queue": 0,
            "uptime_s": first_s + n * BEAT_S,
        }
        | overrides
        for n in range(count)
    ]


def window(rows: list[dict[str, Any]], end_s: int) -> WindowData:
    columns = {name: [row[name] for row in rows] for name in ("time", *STATUS_COLUMNS)}
    empty = Table({"time": []})
    return WindowData(
        start_ns=T0 + (end_s - 300) * NS_PER_S,
        end_ns=T0 + end_s * NS_PER_S,
        payments=empty,
        statuses=Table(columns),
        sensors=Table({"time": [], "device": [], "site": [], "seq": []}),
        states={},
    )


def test_heartbeats_read_again_by_the_next_window_are_not_taken_twice() -> None:
    memory = Memory()
    beats = heartbeats(first_seq=1, first_s=60, count=5)
    fold_heartbeats(memory, window(beats, end_s=360))
    fold_heartbeats(memory, window([*beats, *heartbeats(6, 360, 1, paper_pct=0.0)], end_s=400))
    state = memory.devices["t1"]
    assert (state.seq, state.paper_zero_streak) == (6, 1)


def test_a_sequence_that_starts_again_is_followed() -> None:
    memory = Memory()
    fold_heartbeats(memory, window(heartbeats(first_seq=5000, first_s=60, count=5), end_s=360))
    # the outbox was wiped (a re-flashed card, a replaced unit): seq counts from 1 again,
    # and this unit's tamper switch is open
    restarted = heartbeats(first_seq=1, first_s=600, count=5, tamper=True)
    fold_heartbeats(memory, window(restarted, end_s=900))
    state = memory.devices["t1"]
    assert state.seq == 5
    assert state.tamper
    assert state.ts_ns == restarted[-1]["time"]


def test_a_clock_stepped_back_is_not_a_restarted_sequence() -> None:
    memory = Memory()
    before = heartbeats(first_seq=10, first_s=60, count=3)
    # the clock steps back 10 minutes: the next heartbeat looks older than the last ones
    stepped = heartbeats(first_seq=13, first_s=240 - 600, count=1, paper_pct=0.0, uptime_s=240)
    fold_heartbeats(memory, window([*before, *stepped], end_s=300))
    fold_heartbeats(memory, window([*before, *stepped], end_s=330))
    state = memory.devices["t1"]
    assert (state.seq, state.paper_zero_streak) == (13, 1)
