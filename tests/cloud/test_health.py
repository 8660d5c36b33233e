"""Heartbeats folded into memory: repeats are skipped, a restarted sequence is followed.

Liveness against a real influxd, windows run through the real reader: a weekend switched
off and a power-on race raise nothing, a 10-minute outage is caught wherever it falls
against the windows, and what the detection knows survives a restart.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cloud.detectors.carried_state import Memory
from cloud.detectors.findings import Finding
from cloud.detectors.terminal_health import fold_heartbeats
from cloud.jobs.cycle import Detection, DetectionSettings
from cloud.jobs.schedule import window_ends
from cloud.reading.influxql_reader import InfluxQLReader, ReaderSettings, Table
from cloud.reading.window import STATUS_COLUMNS, WindowData
from testkit.factories import next_status
from testkit.servers import InfluxDB1Server
from wire.incidents import AlertType
from wire.messages import DeviceState, StateReason
from wire.points import to_line
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


# -- liveness: state, not lookback (real influxd, windows through the real reader) ------------

WINDOW_S = 300
SATURDAY = 1_795_248_000 * NS_PER_S  # 2026-11-21T06:00:00Z, a window edge
HOUR_S = 3600


def status_points(
    device: str, site: str, from_s: int, to_s: int, *, boot_s: int, first_seq: int = 1
) -> list[str]:
    """Heartbeats a minute apart in [from, to) (seconds after SATURDAY), of a terminal
    booted at ``boot_s``."""
    return [
        to_line(
            msgspec.structs.replace(
                next_status(),
                site=site,
                device=device,
                ts=SATURDAY + at_s * NS_PER_S,
                seq=first_seq + n,
                uptime_s=at_s - boot_s,
                charging=True,
            )
        )
        for n, at_s in enumerate(range(from_s, to_s, BEAT_S))
    ]


def state_point(device: str, site: str, at_s: int, reason: StateReason) -> str:
    return to_line(
        DeviceState(
            site=site,
            device=device,
            ts=SATURDAY + at_s * NS_PER_S,
            online=reason is StateReason.CONNECTED,
            reason=reason,
        )
    )


class Store:
    """A fresh database on the session's influxd, and detection runs over it."""

    def __init__(self, server: InfluxDB1Server, state_dir: Path) -> None:
        self.server = server
        self.database = f"health_{uuid.uuid4().hex[:8]}"
        server.create_database(self.database)
        self.reader = InfluxQLReader(ReaderSettings(url=server.url, database=self.database))
        self.state_dir = state_dir

    def write(self, lines: list[str]) -> None:
        self.server.write(lines, self.database)

    def detection(self, *, keep_state: bool = True) -> Detection:
        return Detection(
            self.reader,
            None,
            DetectionSettings(window_s=WINDOW_S),
            state_dir=self.state_dir if keep_state else None,
        )

    def run(self, detection: Detection, from_s: int, to_s: int) -> list[Finding]:
        """Every window ending in (from, to] (seconds after SATURDAY); the findings."""
        findings: list[Finding] = []
        start, end = SATURDAY + from_s * NS_PER_S, SATURDAY + to_s * NS_PER_S
        for window_end in window_ends(start, end, detection.window_ns):
            findings += detection.run(window_end).findings
        return findings


@pytest.fixture
def store(influxdb_session: InfluxDB1Server, tmp_path: Path) -> Iterator[Store]:
    store = Store(influxdb_session, tmp_path)
    yield store
    store.reader.close()


def liveness_findings(findings: list[Finding]) -> list[str]:
    kinds = {AlertType.TERMINAL_OFFLINE, AlertType.SITE_NETWORK}
    return [f"{f.type} {f.site}/{f.device}: {f.summary}" for f in findings if f.type in kinds]


def weekend(
    store: Store, devices: list[str], *, race_s: list[int], off_h: int = 40
) -> tuple[int, int]:
    """``devices`` at site s1 on Saturday 07:00-18:00, shut down cleanly, switched on again
    ``off_h`` later (Monday); each one's first heartbeat lands ``race_s`` after its "online"
    point. Returns (shutdown, power-on) in seconds after SATURDAY."""
    on_s, off_s = HOUR_S, 12 * HOUR_S
    monday_s = off_s + off_h * HOUR_S - 30  # 30 s before a window edge
    lines = []
    for device, race in zip(devices, race_s, strict=True):
        lines += status_points(device, "s1", on_s + 20, off_s, boot_s=on_s)
        lines += [
            state_point(device, "s1", on_s, StateReason.CONNECTED),
            state_point(device, "s1", off_s + 15, StateReason.SHUTDOWN),
            state_point(device, "s1", monday_s, StateReason.CONNECTED),
        ]
        lines += status_points(
            device, "s1", monday_s + race, monday_s + 2 * HOUR_S, boot_s=monday_s, first_seq=1000
        )
    store.write(lines)
    return off_s, monday_s


def test_a_weekend_switched_off_raises_nothing(store: Store) -> None:
    off_s, monday_s = weekend(store, ["t1", "t2", "t3"], race_s=[20, 45, 80])
    findings = store.run(store.detection(), off_s - HOUR_S, monday_s + HOUR_S)
    assert liveness_findings(findings) == []


def test_a_terminal_saying_online_before_its_first_heartbeat_raises_nothing(
    store: Store,
) -> None:
    # the power-on race: each "online" point is read by a window whose end comes before the
    # terminal's first heartbeat (30 s before the edge; heartbeats 40-110 s after it), after
    # two hours switched off
    off_s, on_s = weekend(store, ["t1", "t2", "t3", "t4"], race_s=[40, 70, 90, 110], off_h=2)
    findings = store.run(store.detection(), off_s - HOUR_S, on_s + HOUR_S)
    assert liveness_findings(findings) == []


@pytest.mark.parametrize("will", [True, False], ids=["last-will", "hung"])
@pytest.mark.parametrize("offset_s", [0, 60, 150, 299])
def test_a_ten_minute_outage_is_detected_wherever_it_falls(
    store: Store, offset_s: int, will: bool
) -> None:
    """Heartbeats stop for 10 minutes starting ``offset_s`` into a window. With ``will``
    the network went: the broker publishes the last will, stamped with the connect time
    two days before, and the agent reconnects when it is back. Without, the terminal hung
    and kept its connection. Three more terminals at the site stay up."""
    connect_s = -2 * 24 * HOUR_S
    outage_s = 30 * HOUR_S + offset_s  # Sunday 12:00 + offset, two windows of context before
    back_s = outage_s + 600
    lines = [state_point(f"t{n}", "s1", connect_s, StateReason.CONNECTED) for n in range(1, 5)]
    for n in range(2, 5):
        lines += status_points(f"t{n}", "s1", connect_s + 7, back_s + HOUR_S, boot_s=connect_s)
    # t1's heartbeats fall on the minute + 20 s, so each outage offset cuts them differently
    lines += status_points("t1", "s1", connect_s + 20, outage_s, boot_s=connect_s)
    resumed = ((back_s - connect_s - 20 + BEAT_S - 1) // BEAT_S) * BEAT_S + connect_s + 20
    lines += status_points(
        "t1", "s1", resumed, back_s + HOUR_S, boot_s=connect_s, first_seq=100_000
    )
    if will:
        lines += [
            state_point("t1", "s1", connect_s, StateReason.LAST_WILL),
            state_point("t1", "s1", back_s, StateReason.CONNECTED),
        ]
    store.write(lines)
    findings = store.run(store.detection(), outage_s - 20 * 60, back_s + 30 * 60)
    found = liveness_findings(findings)
    assert found, f"the outage from +{offset_s} s was missed"
    assert all(line.startswith("terminal_offline s1/t1:") for line in found), found


def test_liveness_state_survives_a_restart(store: Store) -> None:
    """Site s1 is switched off for the weekend; at site s2 a terminal hangs on Sunday for
    25 minutes. The detection stops 5 minutes into the silence and is back 15 minutes later,
    when the heartbeats from before it have left the 15-minute read: only the saved state
    knows when t9 last lived."""
    off_s, monday_s = weekend(store, ["t1", "t2"], race_s=[30, 90])
    hang_s = 29 * HOUR_S + 50 * 60
    stop_s, restart_s = hang_s + 5 * 60, hang_s + 20 * 60
    resumed = status_points(
        "t9", "s2", hang_s + 25 * 60, monday_s + 2 * HOUR_S, boot_s=0, first_seq=5000
    )
    store.write(
        [
            state_point("t9", "s2", 0, StateReason.CONNECTED),
            *status_points("t9", "s2", 10, hang_s, boot_s=0),
            *resumed,
        ]
    )
    before = store.run(store.detection(), off_s - HOUR_S, stop_s)
    assert liveness_findings(before) == []

    restarted = store.detection()
    after = store.run(restarted, restart_s, monday_s + HOUR_S)
    found = liveness_findings(after)
    assert found, "t9's silence across the restart was missed"
    assert all(line.startswith("terminal_offline s2/t9:") for line in found), found
    loaded = store.detection().memory.liveness
    assert loaded["t1"].shutdown_ns == SATURDAY + (off_s + 15) * NS_PER_S
    assert loaded["t9"].beat_ns > SATURDAY + monday_s * NS_PER_S

    # without the saved state the restarted detection would not know t9 had gone quiet
    fresh = store.run(store.detection(keep_state=False), restart_s, monday_s + HOUR_S)
    assert liveness_findings(fresh) == []


def flaps(device: str, at_s: list[int], down_s: int) -> list[str]:
    """The terminal's link drops at each of ``at_s`` (its last will) and is back
    ``down_s`` later (connected again)."""
    return [
        line
        for t in at_s
        for line in (
            state_point(device, "s1", t, StateReason.LAST_WILL),
            state_point(device, "s1", t + down_s, StateReason.CONNECTED),
        )
    ]


def test_harmless_wifi_flaps_raise_nothing(store: Store) -> None:
    """Each of three terminals loses its Wi-Fi for a few seconds, twice within a quarter
    of an hour, at different times of the day: its heartbeats never miss a beat."""
    lines = []
    for n, first_s in enumerate((2 * HOUR_S + 100, 4 * HOUR_S + 1000, 6 * HOUR_S + 30)):
        device = f"t{n}"
        lines += [state_point(device, "s1", 0, StateReason.CONNECTED)]
        lines += status_points(device, "s1", 10 + n, 9 * HOUR_S, boot_s=0)
        lines += flaps(device, [first_s, first_s + 700], down_s=8)
    store.write(lines)
    assert liveness_findings(store.run(store.detection(), HOUR_S, 8 * HOUR_S)) == []


def test_a_flapping_site_network_is_raised_within_three_windows(store: Store) -> None:
    """Every terminal of the site drops for two minutes every five, for an hour."""
    start_s = 2 * HOUR_S + 60
    lines = []
    for n in range(3):
        device = f"t{n}"
        lines += [state_point(device, "s1", 0, StateReason.CONNECTED)]
        lines += status_points(device, "s1", 10 + n, 5 * HOUR_S, boot_s=0)
        lines += flaps(device, list(range(start_s, start_s + HOUR_S, 300)), down_s=120)
    store.write(lines)
    findings = store.run(store.detection(), HOUR_S, start_s + 15 * 60 - 60)
    found = liveness_findings(findings)
    assert found, "the flapping site was missed for three windows"
    assert all(line.startswith("site_network s1/None:") for line in found), found
