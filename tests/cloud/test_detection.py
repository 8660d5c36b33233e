"""The detectors against a real influxd loaded with simulated fleets.

Three quiet days train the model; then a fourth quiet day must raise no
alert, and a day of the `everything` scenario must raise an alert for every
injected anomaly the data can show, and nothing else. The command line runs
train, detect (anomalies into InfluxDB, alerts on a real Mosquitto) and
evaluate end to end.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.cli import main as cloud_main
from cloud.detectors.trained_model import TrainedModel
from cloud.evaluation.scoring import evaluate, read_alerts_jsonl
from cloud.jobs.cycle import Detection, DetectionSettings
from cloud.jobs.schedule import window_ends
from cloud.jobs.training import train
from cloud.reading.influxql_reader import InfluxQLReader, ReaderSettings
from testkit.fleet_loader import load_fleet
from testkit.mqtt_collector import Collector
from testkit.servers import InfluxDB1Server, MosquittoServer
from wire.incidents import NOT_IN_THE_DATA
from wire.labels import GroundTruthLabel, write_labels
from wire.messages import Alert, decode_as
from wire.timestamps import parse_iso

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TERMINALS = 40
SEED = 7
WINDOW_S = 300
DAY_START = "06:00:00Z"
DAY_END = "21:00:00Z"


class Fleet:
    def __init__(self, server: InfluxDB1Server, database: str) -> None:
        self.server = server
        self.database = database
        load_fleet(
            server, database, terminals=TERMINALS, sensors=4, start="2026-11-02T00:00:00Z",
            hours=4 * 24, seed=SEED,
        )  # fmt: skip
        loaded = load_fleet(
            server, database, terminals=TERMINALS, sensors=4, start="2026-11-06T00:00:00Z",
            hours=24, scenario="everything", seed=SEED,
        )  # fmt: skip
        self.labels: list[GroundTruthLabel] = loaded.labels
        self.reader = InfluxQLReader(ReaderSettings(url=server.url, database=database))
        self.model = train(
            self.reader,
            parse_iso("2026-11-02T00:00:00Z"),
            parse_iso("2026-11-05T00:00:00Z"),
            window_s=WINDOW_S,
        )

    def replay(self, day: str) -> list[Alert]:
        detection = Detection(self.reader, self.model, DetectionSettings(window_s=WINDOW_S))
        start, end = parse_iso(f"{day}T{DAY_START}"), parse_iso(f"{day}T{DAY_END}")
        alerts: list[Alert] = []
        for window_end in window_ends(start, end, detection.window_ns):
            alerts += detection.run(window_end).alerts
        return alerts


@pytest.fixture(scope="module")
def fleet(influxdb_session: InfluxDB1Server) -> Iterator[Fleet]:
    database = f"detect_{uuid.uuid4().hex[:8]}"
    influxdb_session.create_database(database)
    fleet = Fleet(influxdb_session, database)
    yield fleet
    fleet.reader.close()


def test_a_quiet_day_raises_no_alert(fleet: Fleet) -> None:
    alerts = fleet.replay("2026-11-05")
    assert [a.summary for a in alerts] == []


def test_every_injected_anomaly_is_alerted_and_nothing_else(fleet: Fleet) -> None:
    alerts = fleet.replay("2026-11-06")
    report = evaluate(alerts, fleet.labels, window_s=WINDOW_S, terminal_hours=TERMINALS * 15)
    scored = [row for row in report.rows if row.scored and row.labels]
    assert {row.type for row in scored} == {
        label.type for label in fleet.labels if label.type not in NOT_IN_THE_DATA
    }
    assert [m.label_id for m in report.missed] == []
    assert report.overall.false_alerts == 0, [a.alert_id for a in report.false_alerts]
    for row in scored:
        assert row.f1 is not None and row.f1 >= 0.5, row
    # root cause: the outage is one acquirer alert, not an alert per terminal
    outage = [a for a in alerts if a.type == "acquirer_outage" and a.status == "firing"]
    assert len(outage) == 1 and outage[0].acquirer is not None and outage[0].device is None
    assert all(a.summary for a in alerts)


def test_the_model_round_trips_through_its_file(fleet: Fleet, tmp_path: Path) -> None:
    fleet.model.save(tmp_path / "model.skops")
    loaded = TrainedModel.load(tmp_path / "model.skops")
    assert loaded.baselines == fleet.model.baselines
    assert loaded.metadata["terminals"] == TERMINALS


def test_a_file_that_is_not_a_model_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    path.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"model .*model\.skops"):
        TrainedModel.load(path)


def test_train_detect_evaluate_from_the_command_line(
    fleet: Fleet, mosquitto: MosquittoServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cloud.toml"
    config.write_text(
        f"""
[cloud]
state_dir = "{tmp_path / "state"}"
window_s = {WINDOW_S}
[query]
url = "{fleet.server.url}"
database = "{fleet.database}"
[influxdb]
dialect = "v1"
url = "{fleet.server.url}"
database = "{fleet.database}"
[mqtt]
host = "{mosquitto.address[0]}"
port = {mosquitto.port}
"""
    )
    train_args = ["--from", "2026-11-02T00:00:00Z", "--to", "2026-11-05T00:00:00Z"]
    assert cloud_main(["train", "--config", str(config), *train_args]) == 0
    alerts_file = tmp_path / "alerts.jsonl"
    with Collector(*mosquitto.address, "tp/v1/alerts/#") as collector:
        detect = ["--from", "2026-11-06T13:55:00Z", "--to", "2026-11-06T14:30:00Z"]
        args = ["detect", "--config", str(config), *detect, "--alerts-out", str(alerts_file)]
        assert cloud_main(args) == 0
        sent = read_alerts_jsonl(alerts_file)
        assert any(a.type == "card_testing" for a in sent)
        collector.wait_for_count(len(sent))
        received = [decode_as(payload, Alert) for _, payload, _ in collector.messages]
    assert sorted(a.alert_id for a in received) == sorted(a.alert_id for a in sent)
    rows = fleet.server.series_values(
        "SELECT alert_id FROM anomaly WHERE \"type\" = 'card_testing'", fleet.database
    )
    assert {row[1] for row in rows} >= {a.alert_id for a in sent if a.type == "card_testing"}

    labels = tmp_path / "labels.jsonl"
    write_labels(labels, fleet.labels)
    report = tmp_path / "report.json"
    evaluate_args = ["--labels", str(labels), "--alerts", str(alerts_file)]
    evaluate_args += ["--terminals", str(TERMINALS), "--hours", "1", "--report-out", str(report)]
    assert cloud_main(["evaluate", *evaluate_args]) == 0
    assert "tillpulse cloud evaluate" in capsys.readouterr().out  # the table; figures: JSON
    rows_by_type = {row["type"]: row for row in json.loads(report.read_bytes())["rows"]}
    assert rows_by_type["card_testing"]["detected"] == 1


def test_a_wrong_database_is_a_clear_error(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cloud.toml"
    config.write_text(
        f'[cloud]\nstate_dir = "{tmp_path}"\n[query]\nurl = "{fleet.server.url}"\n'
        'database = "no_such_db"\n'
    )
    args = ["detect", "--config", str(config), "--from", "2026-11-06T13:00:00Z"]
    assert cloud_main([*args, "--to", "2026-11-06T13:10:00Z"]) == 1
    assert "no_such_db" in capsys.readouterr().err
