"""Series watch in the detection job, against a real influxd.

Sensor readings, payments and gateway stats are written as the gateway stores
them (`wire.points.to_line`, `wire.lineproto.encode_point`): a day of history,
then windows replayed through `Detection.run` as the job does.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.config import load_cloud_config
from cloud.detectors.series_watch import SeriesSettings
from cloud.jobs.cycle import Detection, DetectionSettings
from cloud.jobs.schedule import make_detection, window_ends
from cloud.reading.influxql_reader import InfluxQLReader, ReaderSettings
from cloud.reading.series import GATEWAY_MEASUREMENT
from cloud.reading.window import Shard
from testkit.factories import payment
from testkit.servers import InfluxDB1Server
from wire.incidents import AlertType
from wire.lineproto import encode_point
from wire.messages import Alert, AlertStatus, DeviceState, SensorReading, StateReason
from wire.points import to_line
from wire.timestamps import NS_PER_HOUR, NS_PER_S, parse_iso

pytestmark = pytest.mark.integration

WINDOW_S = 300
T0 = parse_iso("2026-11-23T00:00:00Z")  # history starts here
DAY = 24 * NS_PER_HOUR
SENSOR_EVERY = 60 * NS_PER_S
SITE = "s1"


def sensor_lines(
    device: str, start: int, end: int, *, seed: int, fault: str = "", fault_at: int = 0
) -> Iterator[str]:
    """A sensor every minute: a daily cycle and noise (as firmware_sim's), then ``fault``."""
    rng = random.Random(seed)
    stuck: float | None = None
    for seq, ts in enumerate(range(start + seed * NS_PER_S, end, SENSOR_EVERY), start=1):
        phase = math.sin(2 * math.pi * ((ts - 9 * NS_PER_HOUR) % DAY) / DAY)
        temperature = round(21.0 + 2.0 * phase + rng.gauss(0.0, 0.3), 2)
        if fault and ts >= fault_at:
            if fault == "jump":
                temperature += 6.0
            else:  # stuck: the reading freezes
                stuck = temperature if stuck is None else stuck
                temperature = stuck
        reading = SensorReading(
            site=SITE,
            device=device,
            ts=ts,
            seq=seq,
            temperature_c=temperature,
            humidity_pct=round(min(100.0, max(0.0, 45.0 - 7.0 * phase + rng.gauss(0, 1.5))), 1),
            door_open=rng.random() < 0.05,
            mains_power=True,
        )
        yield to_line(reading)


@pytest.fixture
def database(influxdb_session: InfluxDB1Server) -> str:
    name = f"series_{uuid.uuid4().hex[:8]}"
    influxdb_session.create_database(name)
    return name


@pytest.fixture
def reader(influxdb_session: InfluxDB1Server, database: str) -> Iterator[InfluxQLReader]:
    with InfluxQLReader(ReaderSettings(url=influxdb_session.url, database=database)) as r:
        yield r


def replay(detection: Detection, start: int, end: int) -> list[Alert]:
    alerts: list[Alert] = []
    for window_end in window_ends(start, end, detection.window_ns):
        alerts += detection.run(window_end).alerts
    return alerts


def series_alerts(alerts: list[Alert]) -> list[Alert]:
    return [
        a for a in alerts if a.type == AlertType.SERIES_ANOMALY and a.status == AlertStatus.FIRING
    ]


def detection(reader: InfluxQLReader, series: SeriesSettings | None = None) -> Detection:
    settings = DetectionSettings(window_s=WINDOW_S, series=series or SeriesSettings())
    return Detection(reader, None, settings)


def faulty_sensor_alerts(
    server: InfluxDB1Server, database: str, reader: InfluxQLReader, fault: str
) -> tuple[int, list[Alert]]:
    """A normal sensor and one with ``fault`` after a day and 2 hours: the series alerts."""
    end = T0 + DAY + 6 * NS_PER_HOUR
    fault_at = T0 + DAY + 2 * NS_PER_HOUR
    server.write(sensor_lines("s1-env1", T0, end, seed=1), database)
    server.write(sensor_lines("s1-env2", T0, end, seed=2, fault=fault, fault_at=fault_at), database)
    return fault_at, series_alerts(replay(detection(reader), T0 + DAY, end))


def assert_one_alert_naming_the_sensor(alerts: list[Alert], fault_at: int, delay_s: int) -> None:
    assert [a.device for a in alerts] == ["s1-env2"], alerts
    alert = alerts[0]
    assert alert.site == SITE and alert.severity == "warning"
    assert f"sensor s1-env2 at site {SITE}: temperature_c" in alert.summary
    assert "usually" in alert.summary and "anomaly score" in alert.summary
    assert fault_at <= alert.ts <= fault_at + delay_s * NS_PER_S, alert


def test_a_sensor_that_jumps_raises_one_alert_naming_it(
    influxdb_session: InfluxDB1Server, database: str, reader: InfluxQLReader
) -> None:
    fault_at, alerts = faulty_sensor_alerts(influxdb_session, database, reader, "jump")
    assert_one_alert_naming_the_sensor(alerts, fault_at, WINDOW_S)


def test_a_sensor_that_sticks_raises_one_alert_naming_it(
    influxdb_session: InfluxDB1Server, database: str, reader: InfluxQLReader
) -> None:
    fault_at, alerts = faulty_sensor_alerts(influxdb_session, database, reader, "stuck")
    assert_one_alert_naming_the_sensor(alerts, fault_at, 40 * 60)


def test_a_sensor_going_offline_is_not_raised_for_its_last_readings(
    influxdb_session: InfluxDB1Server, database: str, reader: InfluxQLReader
) -> None:
    fault_at = T0 + DAY + 2 * NS_PER_HOUR
    gone = fault_at + 3 * SENSOR_EVERY  # three odd readings, then the broker's last will
    influxdb_session.write(
        sensor_lines("s1-env1", T0, gone, seed=2, fault="jump", fault_at=fault_at), database
    )
    states = [
        DeviceState(site=SITE, device="s1-env1", ts=T0, online=True, reason=StateReason.CONNECTED),
        DeviceState(
            site=SITE, device="s1-env1", ts=gone, online=False, reason=StateReason.LAST_WILL
        ),
    ]
    influxdb_session.write([to_line(state) for state in states], database)

    alerts = replay(detection(reader), T0 + DAY, fault_at + NS_PER_HOUR)

    assert [a.type for a in alerts if a.device == "s1-env1"] == [AlertType.TERMINAL_OFFLINE]


def test_normal_noisy_sensors_over_a_day_raise_nothing(
    influxdb_session: InfluxDB1Server, database: str, reader: InfluxQLReader
) -> None:
    end = T0 + 2 * DAY
    for n in range(6):
        influxdb_session.write(sensor_lines(f"s1-env{n}", T0, end, seed=10 + n), database)
    watch = detection(reader)

    alerts = replay(watch, T0 + DAY, end)

    assert watch.series.watched == 6 * 3  # temperature, humidity, mains power
    assert [a.summary for a in alerts] == []


def test_the_morning_after_a_night_not_watched_raises_nothing(
    influxdb_session: InfluxDB1Server, database: str, reader: InfluxQLReader
) -> None:
    """Trading hours only, 06:00-21:00, two days: the night between is caught up from
    history, not taken as a jump from last evening's readings."""
    end = T0 + 3 * DAY
    for n in range(6):
        influxdb_session.write(sensor_lines(f"s1-env{n}", T0, end, seed=20 + n), database)
    watch = detection(reader)
    alerts = []
    for day in (T0 + DAY, T0 + 2 * DAY):
        alerts += replay(watch, day + 6 * NS_PER_HOUR, day + 21 * NS_PER_HOUR)

    # (the health rules take the skipped night for an outage: a replay's gap, not live)
    assert [a.summary for a in series_alerts(alerts)] == []


def test_a_restart_warms_up_from_history_and_neither_alarms_nor_forgets(
    influxdb_session: InfluxDB1Server, database: str, reader: InfluxQLReader
) -> None:
    restart = T0 + DAY + 2 * NS_PER_HOUR
    fault_at = restart + 20 * 60 * NS_PER_S  # well inside a new detector's probation
    end = restart + NS_PER_HOUR
    influxdb_session.write(sensor_lines("s1-env1", T0, end, seed=1), database)
    influxdb_session.write(
        sensor_lines("s1-env2", T0, end, seed=2, fault="jump", fault_at=fault_at), database
    )
    assert series_alerts(replay(detection(reader), T0 + DAY, restart)) == []

    after_restart = replay(detection(reader), restart, end)
    without_history = replay(detection(reader, SeriesSettings(warmup_s=0)), restart, end)

    assert [(a.device, a.type) for a in series_alerts(after_restart)] == [
        ("s1-env2", AlertType.SERIES_ANOMALY)
    ]
    assert [a for a in after_restart if a.status == AlertStatus.FIRING] == series_alerts(
        after_restart
    )
    assert series_alerts(without_history) == []  # it would still be learning: blind


def payment_lines(
    acquirer: str, start: int, end: int, *, seed: int, slow_from: int, declined: bool = False
) -> Iterator[str]:
    """Payments through ``acquirer`` at 4 sites, about 5 a minute; from ``slow_from`` on,
    5 x slower (and, with ``declined``, refused with system code 91: an outage)."""
    rng = random.Random(seed)
    ts, seq = start, 0
    while ts < end:
        seq += 1
        slow = ts >= slow_from
        yield to_line(
            payment(
                site=f"s{seq % 4}",
                device=f"{acquirer}-pos{seq % 4}",
                ts=ts,
                seq=seq,
                txn_id=f"{acquirer}-{seq}",
                acquirer=acquirer,
                auth_latency_ms=round(rng.lognormvariate(math.log(300), 0.3) * (5 if slow else 1)),
                approved=not (slow and declined),
                response_code="91" if slow and declined else "00",
            )
        )
        ts += int(rng.expovariate(1 / 12) * NS_PER_S) + 1


def test_acquirer_latency_anomaly_is_raised_unless_the_acquirer_is_down(
    influxdb_session: InfluxDB1Server, database: str, reader: InfluxQLReader
) -> None:
    slow_from = T0 + DAY + NS_PER_HOUR
    end = slow_from + NS_PER_HOUR
    for n, (acquirer, declined) in enumerate((("acq-slow", False), ("acq-down", True))):
        influxdb_session.write(
            payment_lines(acquirer, T0, end, seed=n, slow_from=slow_from, declined=declined),
            database,
        )

    alerts = replay(detection(reader), T0 + DAY, end)

    outages = [a.acquirer for a in alerts if a.type == AlertType.ACQUIRER_OUTAGE]
    assert "acq-down" in outages  # the fleet detector saw the outage: its latency is the outage's
    raised = series_alerts(alerts)
    assert [(a.acquirer, a.site, a.device) for a in raised] == [("acq-slow", None, None)]
    assert "acquirer acq-slow: auth_latency_ms" in raised[0].summary
    assert slow_from < raised[0].ts <= slow_from + 3 * WINDOW_S * NS_PER_S


def stats_lines(start: int, end: int, *, rejecting_from: int) -> Iterator[str]:
    """A gateway's stats every 10 s: ~100 messages/s accepted, rejections from a time on."""
    rng = random.Random(4)
    accepted = rejected = 0.0
    for ts in range(start, end, 10 * NS_PER_S):
        accepted += rng.gauss(1000, 30)
        rejected += 400 if ts >= rejecting_from else 0
        fields = {
            "messages_payment_accepted": accepted,
            "messages_status_accepted": accepted / 10,
            "spool_depth_lines": float(rng.randrange(0, 50)),
            "deadletters_kept": 0.0,
            "forwarder_retries": 0.0,
        }
        if rejected:
            fields["rejected_schema"] = rejected
        yield encode_point(GATEWAY_MEASUREMENT, {"gateway": "gw1"}, fields, ts)


def test_a_gateway_that_starts_rejecting_is_raised_and_idle_counters_are_not(
    influxdb_session: InfluxDB1Server, database: str, reader: InfluxQLReader
) -> None:
    rejecting_from = T0 + DAY + NS_PER_HOUR
    end = rejecting_from + NS_PER_HOUR
    influxdb_session.write(stats_lines(T0, end, rejecting_from=rejecting_from), database)
    watch = detection(reader)

    raised = series_alerts(replay(watch, T0 + DAY, end))

    # messages accepted, rejected, dead-lettered per second and the spool depth
    assert watch.series.watched == 4
    assert len(raised) == 1 and raised[0].site is None, raised
    assert raised[0].summary.startswith("gateway gw1: rejected 40 per s at "), raised[0].summary
    assert rejecting_from < raised[0].ts <= rejecting_from + 2 * WINDOW_S * NS_PER_S


def test_the_config_switches_the_series_watch_and_sets_its_threshold(tmp_path: Path) -> None:
    path = tmp_path / "cloud.toml"
    query = '[query]\nurl = "http://127.0.0.1:1"\ndatabase = "d"\n'
    path.write_text(f'[cloud]\nstate_dir = "{tmp_path}"\nseries_threshold = 0.99\n{query}')
    assert make_detection(load_cloud_config(path), Shard()).settings.series == SeriesSettings(
        threshold=0.99
    )
    path.write_text(f'[cloud]\nstate_dir = "{tmp_path}"\nseries_watch = false\n{query}')
    assert not make_detection(load_cloud_config(path), Shard()).settings.series.enabled
