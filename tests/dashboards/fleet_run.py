"""A small simulated fleet through the real pipeline, for the dashboard query tests.

firmware_sim (the `demo` scenario's incidents, an hour apart: an offline terminal,
an acquirer outage, a card-testing attack, a tamper), paced at 1800x, →
Mosquitto → a gateway → influxd, plus a few
edge agents' `HostHealth` samples (the simulator has no Pi of its own), then
the cloud detectors over the simulated day so `anomaly` points exist.

influxd is down while the fleet publishes, so the gateway's spool fills and
its `gateway_stats` points (on the wall clock) show a backlog and a forwarder
lag, as they would in an outage; then influxd comes back and the spool drains.
The caller shortens the gateway's stats period (`STATS_EVERY_S`) to keep this
to seconds.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import msgspec

from cloud.jobs.cycle import Detection, DetectionSettings
from cloud.jobs.schedule import window_ends
from cloud.outputs.anomaly_points import AnomalyWriter
from cloud.reading.influxql_reader import InfluxQLReader, ReaderSettings
from firmware_sim.mqtt_fleet import MqttFleet
from firmware_sim.report import RunStats
from firmware_sim.run_loop import run
from firmware_sim.run_setup import SimSettings, build_simulation
from firmware_sim.scenario_file import Scenario
from runtime.influx_sinks.v1 import V1Sink
from testkit.mqtt_collector import publish_all
from testkit.servers import InfluxDB1Server, MosquittoServer, wait_until
from tests.gateway.test_service import DB, running_gateway, write_config
from wire.labels import GroundTruthLabel
from wire.messages import HostHealth, encode
from wire.timestamps import NS_PER_HOUR
from wire.topics import Stream, device_topic

NS_PER_DAY = 24 * NS_PER_HOUR
TERMINALS = 12
SIM_HOURS = 6
DETECTION_WINDOW_S = 300
EDGE_AGENTS = 3
SIM_START_UTC_H = 8  # yesterday 08:00 UTC: the shops are open
ACCEL = 1800.0
SCENARIO = """
name = "dashboards"
[[injection]]
type = "terminal_offline"
start = "1h"
duration = "30m"
targets = "random 1"
[[injection]]
type = "acquirer_outage"
start = "2h"
duration = "45m"
targets = "random 1"
intensity = 0.8
[[injection]]
type = "card_testing"
start = "3h"
duration = "20m"
targets = "random 1"
intensity = 30
[[injection]]
type = "tamper"
start = "4h"
duration = "1h"
targets = "random 1"
"""
# At 1800x the default 2 minutes of allowed lateness (event time) are 67 ms of wall time,
# less than the devices' MQTT clients drift apart: payments would be late and the
# 1-minute aggregates sparse. An hour (2 s here) keeps them whole, as a live fleet's are.
AGGREGATES = """
[aggregates]
allowed_lateness_s = 3600
max_open_windows = 120
"""
STATS_EVERY_S = 2.0
OUTAGE_STATS_POINTS = 1  # more stats points taken while influxd is down, after the fleet
CAUGHT_UP_POINTS = 2  # after the outage, with a write latency: the forwarder writes again


@dataclass(frozen=True)
class FleetRun:
    influx: InfluxDB1Server
    database: str
    labels: list[GroundTruthLabel]
    sim_start_ns: int
    sim_end_ns: int
    wall_start_ns: int  # the gateway started: its gateway_stats points follow
    wall_end_ns: int
    anomalies: int


def _host_health(now_ns: int) -> list[tuple[str, bytes]]:
    """Samples of a few edge agents from ``now`` on, a second apart (outbox filling, draining)."""
    out = []
    for agent in range(EDGE_AGENTS):
        site, device = f"edge-site-{agent}", f"pi-{agent}"
        for seq, depth in enumerate((0, 40, 120, 15)):
            message = HostHealth(
                site=site,
                device=device,
                ts=now_ns + seq * 1_000_000_000,
                seq=seq,
                cpu_temp_c=51.5,
                load1=0.4,
                mem_used_pct=31.0,
                disk_used_pct=12.0,
                clock_synced=True,
                outbox_depth=depth + agent,
                outbox_dropped=seq,
            )
            out.append((device_topic(site, device, Stream.HEALTH), encode(message)))
    return out


def _detect(influx: InfluxDB1Server, start_ns: int, end_ns: int) -> int:
    """The cloud detectors (no trained model: rules only) over the run; anomalies written."""
    writer = AnomalyWriter(V1Sink(influx.url, DB))
    with InfluxQLReader(ReaderSettings(url=influx.url, database=DB)) as reader:
        detection = Detection(reader, None, DetectionSettings(window_s=DETECTION_WINDOW_S))
        written = 0
        for window_end in window_ends(start_ns, end_ns, detection.window_ns):
            alerts = detection.run(window_end).alerts
            if alerts:
                written += writer.write(alerts)
    return written


def run_fleet(workdir: Path, broker: MosquittoServer, influx: InfluxDB1Server) -> FleetRun:
    influx.create_database(DB)
    now = time.time_ns()
    sim_start = now - now % NS_PER_DAY - NS_PER_DAY + SIM_START_UTC_H * NS_PER_HOUR
    settings = SimSettings(
        terminals=TERMINALS,
        sensors=2,
        seed=3,
        start_ns=sim_start,
        duration_ns=SIM_HOURS * NS_PER_HOUR,
        scenario=msgspec.toml.decode(SCENARIO, type=Scenario),
        status_every_s=300.0,
        sensor_every_s=300.0,
    )
    simulation = build_simulation(settings)
    config = write_config(workdir, broker, influx, gateway_id=f"gw-{uuid.uuid4().hex[:6]}")
    with config.open("a", encoding="utf-8") as toml:
        toml.write(AGGREGATES)
    wall_start = time.time_ns()
    with running_gateway(config) as gateway:
        influx.stop()
        stats = RunStats()
        run(simulation, MqttFleet(broker.host, broker.port, stats), accel=ACCEL, stats=stats)
        publish_all(broker.host, broker.port, _host_health(time.time_ns()))
        wait_until(
            lambda: gateway.ingest.stats.acked >= stats.acknowledged + EDGE_AGENTS * 4,
            60,
            message=lambda: f"gateway acked {gateway.ingest.stats.acked} of {stats.acknowledged}",
        )
        outage_points = gateway.spool.stats().appends + OUTAGE_STATS_POINTS
        wait_until(
            lambda: gateway.spool.stats().appends >= outage_points, 30, message="stats spooled"
        )
        influx.start()
        restored = time.time_ns()
        wait_until(
            lambda: _written_since(influx, "forwarder_latency_p50_s", restored) >= CAUGHT_UP_POINTS,
            60,
            message="gateway_stats after the outage",
        )
    anomalies = _detect(influx, sim_start, sim_start + settings.duration_ns)
    return FleetRun(
        influx=influx,
        database=DB,
        labels=simulation.labels,
        sim_start_ns=sim_start,
        sim_end_ns=sim_start + settings.duration_ns,
        wall_start_ns=wall_start,
        wall_end_ns=time.time_ns(),
        anomalies=anomalies,
    )


def _written_since(influx: InfluxDB1Server, field: str, since_ns: int) -> int:
    """How many gateway_stats points since ``since_ns`` carry ``field``."""
    rows = influx.series_values(
        f'SELECT count("{field}") FROM "gateway_stats" WHERE time >= {since_ns}', DB
    )
    return int(rows[0][1]) if rows else 0
