"""A window with the detectors' memory reads what changed, and detects as reading it all.

Each acquirer's figures, counted from the payments the window reads, are what the
server's aggregates over the same points say.

Against a real influxd: a job that reads every device's 15-minute lookback in every
window (as the first cycle of a job does) and one that reads what changed since its
memory (cloud.reading.window) run side by side over the same terminals, some of them
misbehaving (paper out, clock stepped back, reboot, an outage, a last will, flapping).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import msgspec
import pytest

from cloud.detectors.findings import Finding
from cloud.jobs.cycle import Detection, DetectionSettings
from cloud.reading.influxql_reader import InfluxQLReader, ReaderSettings
from cloud.reading.window import (
    ACQUIRER_COLUMNS,
    AcquirerWindow,
    WindowData,
    acquirer_windows,
    fetch_window,
)
from testkit.factories import next_status, payment
from testkit.servers import InfluxDB1Server
from wire.incidents import AlertType
from wire.messages import DeviceState, StateReason
from wire.points import to_line
from wire.timestamps import NS_PER_S

T0 = 1_795_593_600 * NS_PER_S  # 2026-11-25T08:00:00Z
WINDOW_S = 300
END_S = 3600
DEVICES = ("t1", "t2", "t3", "t4", "t5", "t6", "t7")


class ReadsEverything(Detection):
    """Every window read as the first cycle of a job reads it."""

    def fetch(self, end_ns: int) -> WindowData:
        return fetch_window(self.reader, end_ns - self.window_ns, end_ns, shard=self.shard)


def beats(device: str, true_s: range, *, boot_s: int, **change: float) -> list[str]:
    """Heartbeats at true times ``true_s`` (seconds after T0) of a terminal booted at
    ``boot_s``; ``clock_s`` shifts the time it stamps, other keys are status fields."""
    clock_s = int(change.pop("clock_s", 0))
    return [
        to_line(
            msgspec.structs.replace(
                next_status(),
                site="s1",
                device=device,
                ts=T0 + (at_s + clock_s) * NS_PER_S,
                seq=at_s // 60 + 1,  # a sequence through the reboot too: no restart
                uptime_s=at_s - boot_s,
                charging=True,
                **change,
            )
        )
        for at_s in true_s
    ]


def state(device: str, at_s: int, reason: StateReason) -> str:
    online = reason is StateReason.CONNECTED
    return to_line(
        DeviceState(site="s1", device=device, ts=T0 + at_s * NS_PER_S, online=online, reason=reason)
    )


def fleet() -> list[str]:
    minutes = range(0, END_S + 600, 60)
    lines = [state(device, 0, StateReason.CONNECTED) for device in DEVICES]
    lines += beats("t1", minutes, boot_s=-1000)
    lines += beats("t2", range(0, 1500, 60), boot_s=-500)
    lines += beats("t2", range(1500, END_S + 600, 60), boot_s=-500, paper_pct=0.0)
    lines += beats("t3", range(0, 1800, 60), boot_s=-700)
    lines += beats("t3", range(1800, END_S + 600, 60), boot_s=-700, clock_s=-240)
    lines += beats("t4", range(0, 2040, 60), boot_s=-900)
    lines += beats("t4", range(2040, END_S + 600, 60), boot_s=2010)  # rebooted
    lines += beats("t5", range(0, 1200, 60), boot_s=-300)
    lines += beats("t5", range(2100, END_S + 600, 60), boot_s=-300)  # 15 minutes silent
    lines += [state("t6", 0, StateReason.LAST_WILL)]  # composed at connect
    lines += beats("t6", range(0, 2400, 60), boot_s=-100)  # then the broker published it
    lines += beats("t7", minutes, boot_s=-200)
    for at_s in (2000, 2100, 2200):
        lines += [
            state("t7", at_s, StateReason.LAST_WILL),
            state("t7", at_s + 20, StateReason.CONNECTED),
        ]
    return lines


@pytest.fixture
def reader(influxdb_session: InfluxDB1Server) -> Iterator[InfluxQLReader]:
    database = f"reads_{uuid.uuid4().hex[:8]}"
    influxdb_session.create_database(database)
    influxdb_session.write(fleet(), database)
    with InfluxQLReader(ReaderSettings(url=influxdb_session.url, database=database)) as reader:
        yield reader


def memory_of(job: Detection) -> object:
    """The job's device memory, its times to the second: taken alone, the newest heartbeat
    is measured against the clock reference of the last one taken, not of the one before
    it (here they differ by the sequence digits of the point times)."""
    devices = {
        device: msgspec.structs.replace(state, skew_s=round(state.skew_s))
        for device, state in job.memory.devices.items()
    }
    liveness = {
        device: [value // NS_PER_S for value in msgspec.structs.astuple(live)]
        for device, live in job.memory.liveness.items()
    }
    return msgspec.to_builtins({"devices": devices, "liveness": liveness})


def keys(findings: list[Finding]) -> list[tuple[tuple[str, str, str, str, str], str]]:
    return sorted((finding.key, finding.summary) for finding in findings)


def test_a_window_reads_what_changed_and_finds_what_reading_everything_finds(
    reader: InfluxQLReader,
) -> None:
    settings = DetectionSettings(window_s=WINDOW_S)
    everything, changed = ReadsEverything(reader, None, settings), Detection(reader, None, settings)
    heartbeat_rows: dict[int, int] = {}
    found: set[str] = set()
    for end_s in range(900, END_S + 1, WINDOW_S):
        end_ns = T0 + end_s * NS_PER_S
        expected = keys(everything.run(end_ns).findings)
        rows: list[int] = []
        reader.on_query = lambda q, n, rows=rows: rows.append(n) if "status" in q else None
        got = keys(changed.run(end_ns).findings)
        reader.on_query = None
        heartbeat_rows[end_s] = sum(rows)
        assert got == expected, f"window ending at +{end_s} s"
        found |= {f"{key[0]} {key[2]}" for key, _ in got}

    assert {
        f"{AlertType.PAPER_OUT} t2",
        f"{AlertType.CLOCK_SKEW} t3",
        f"{AlertType.TERMINAL_OFFLINE} t5",
        f"{AlertType.TERMINAL_OFFLINE} t6",
        f"{AlertType.TERMINAL_OFFLINE} t7",  # flapping
    } <= found
    assert memory_of(changed) == memory_of(everything)
    # the first cycle reads the 15-minute lookback; with nothing amiss, a window then
    # reads each terminal's newest heartbeat only
    assert heartbeat_rows[900] == 7 * 15
    assert heartbeat_rows[1200] == len(DEVICES)


def test_acquirer_figures_from_the_rows_are_the_servers_aggregates(
    influxdb_session: InfluxDB1Server,
) -> None:
    database = f"acquirers_{uuid.uuid4().hex[:8]}"
    influxdb_session.create_database(database)
    payments = [
        payment(
            site=f"s{n % 5}",
            device=f"s{n % 5}-t{n % 3}",
            ts=T0 + n * NS_PER_S,
            seq=n + 1,
            txn_id=f"x{n}",
            acquirer=("acq-a", "acq-b", "acq-c")[n % 3],
            approved=not declined(n),
            response_code=("91", "96", "05")[n % 3] if declined(n) else "00",
            auth_latency_ms=100.0 + (n * 37) % 400,
            offline=n % 11 == 0,
        )
        for n in range(240)
    ]
    influxdb_session.write([to_line(p) for p in payments], database)
    with InfluxQLReader(ReaderSettings(url=influxdb_session.url, database=database)) as reader:
        rows = reader.select("payment", ACQUIRER_COLUMNS, T0, T0 + 300 * NS_PER_S)
        by_server = server_acquirer_windows(reader)
    assert acquirer_windows(rows) == by_server
    assert any(window.failing_sites for window in by_server.values())
    assert any(window.system_declines for window in by_server.values())


def declined(n: int) -> bool:
    """Every fourth payment, and every one of acquirer acq-b at site s4 (a failing site)."""
    return n % 4 == 0 or (n % 5 == 4 and n % 3 == 1)


def server_acquirer_windows(reader: InfluxQLReader) -> dict[str, AcquirerWindow]:
    """The same figures aggregated by influxd, as windows were read before issue #18."""
    span = f"time >= {T0} AND time < {T0 + 300 * NS_PER_S} AND offline = 0"
    head = 'SELECT count(approved), sum(approved), median(auth_latency_ms) FROM "payment"'
    declines = reader.query(
        f'SELECT count(approved) FROM "payment" WHERE {span} '
        "AND (response_code = '91' OR response_code = '96') GROUP BY acquirer"
    )
    system = {s.tags["acquirer"]: s.values[0][1] for s in declines}
    out: dict[str, AcquirerWindow] = {}
    for total in reader.query(f"{head} WHERE {span} GROUP BY acquirer"):
        acquirer = total.tags["acquirer"]
        sites = reader.query(f"{head} WHERE {span} AND acquirer = '{acquirer}' GROUP BY site")
        _, count, approved, latency = total.values[0]
        out[acquirer] = AcquirerWindow(
            count=count,
            approved=approved,
            latency_median_ms=latency,
            sites=len(sites),
            failing_sites=sum(
                1 for s in sites if (s.values[0][1] - s.values[0][2]) * 2 > s.values[0][1]
            ),
            system_declines=system.get(acquirer, 0),
            site_latency_ms={s.tags["site"]: s.values[0][3] for s in sites},
        )
    return out
