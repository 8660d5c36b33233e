"""`tillpulse cloud` as an operator runs it: a retrain never silently breaks detection,
a replay never depends on (or moves) the live state, delivery is reported honestly,
a live job outlives an InfluxDB outage, progress, and a fast `--help`."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

import msgspec
import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from cloud.cli import main as cloud_main
from cloud.config import load_cloud_config
from cloud.detectors.trained_model import (
    HOURS_PER_WEEK,
    Baseline,
    Baselines,
    TerminalBaseline,
    TrainedModel,
)
from cloud.jobs import progress, schedule
from cloud.jobs.cycle import CycleReport
from cloud.jobs.progress import Progress
from cloud.jobs.schedule import Delivery, install_model, make_detection, run_live, run_range
from cloud.outputs.fanout import AlertOutputs
from cloud.outputs.webhook import WebhookNotifier
from cloud.reading.window import Shard
from runtime.cli import EXIT_FAILED, EXIT_OK, RuntimeFailure
from testkit.servers import InfluxDB1Server, free_port
from tests.operator_errors import REPO
from wire.messages import Alert, AlertStatus, Severity
from wire.timestamps import NS_PER_S, parse_iso

WINDOW_NS = 300 * NS_PER_S


def model(terminals: int, *, fraud: bool = False, days: float = 7.0) -> TrainedModel:
    usual = msgspec.structs.asdict(
        Baseline(
            rate_per_hour=[1.0] * HOURS_PER_WEEK,
            decline_rate=0.05,
            amount_log_median=7.0,
            amount_log_sigma=1.0,
            temperature_p50=30.0,
            temperature_p99=40.0,
        )
    )
    baselines = Baselines(
        trained_from_ns=0,
        trained_to_ns=int(days * 86400) * NS_PER_S,
        window_s=300,
        terminals={
            f"t{n}": TerminalBaseline(
                **usual, site="s1", acquirer="a1", mcc="5411", profile=0, history_hours=days * 24
            )
            for n in range(terminals)
        },
        profiles=[],
        profile_by_mcc={},
        fleet=Baseline(**usual),
        acquirers={},
    )
    forest = None
    if fraud:
        forest = IsolationForest(n_estimators=5, random_state=0).fit(np.zeros((10, 2)))
    return TrainedModel(baselines, None, forest, {"terminals": terminals})


# -- train: a model is only replaced by one at least as good -----------------------------


def test_a_new_model_keeps_the_previous_one_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    assert install_model(model(10), path, force=False) is None
    kept = install_model(model(10, fraud=True), path, force=False)
    assert kept == tmp_path / "model.skops.previous"
    assert TrainedModel.load(path).fraud is not None
    assert TrainedModel.load(kept).fraud is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.skops", "model.skops.previous"]


@pytest.mark.parametrize(
    ("new", "named"),
    [
        (model(0), "0 terminals with 1 day of payments (needs at least 1)"),
        (model(10, days=0.5), "0 terminals with 1 day"),
        (model(7, fraud=True), "7 terminals, the current model 10 (fewer by more than 20%)"),
        (model(10), "no fraud model, the current model has one"),
    ],
    ids=["empty", "too-short", "fewer-terminals", "no-fraud-model"],
)
def test_a_worse_model_is_refused_unless_forced(
    tmp_path: Path, new: TrainedModel, named: str
) -> None:
    path = tmp_path / "model.skops"
    install_model(model(10, fraud=True), path, force=True)
    before = path.read_bytes()
    with pytest.raises(RuntimeFailure, match="--force") as refused:
        install_model(new, path, force=False)
    assert named in str(refused.value) and f"{path} is left as it is" in str(refused.value)
    assert path.read_bytes() == before
    install_model(new, path, force=True)
    assert len(TrainedModel.load(path).baselines.terminals) == len(new.baselines.terminals)


# -- detect: replay, --alerts-out, delivery ----------------------------------------------


def write_config(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "cloud.toml"
    path.write_text(
        f'[cloud]\nstate_dir = "{tmp_path / "state"}"\n[query]\nurl = "{url}"\n'
        f'database = "tillpulse"\ntimeout_s = 2.0\n{extra}'
    )
    return path


@pytest.mark.integration
def test_a_replay_after_a_live_run_uses_its_own_state_and_replaces_alerts_out(
    tmp_path: Path, influxdb: InfluxDB1Server, capsys: pytest.CaptureFixture[str]
) -> None:
    influxdb.create_database("tillpulse")
    config = write_config(tmp_path, influxdb.url)
    assert cloud_main(["detect", "-c", str(config), "--once", "-q"]) == EXIT_OK
    live_state = tmp_path / "state" / "shard-0-of-1" / "alerts.json"
    live = live_state.read_bytes()  # the live job's last window: now
    capsys.readouterr()

    alerts_out = tmp_path / "alerts.jsonl"
    alerts_out.write_text("an older run's alerts\n")
    replay = ["detect", "-c", str(config), "--alerts-out", str(alerts_out), "-q"]
    replay += ["--from", "2026-11-06T00:00:00Z", "--to", "2026-11-06T01:00:00Z"]
    assert cloud_main(replay) == EXIT_OK
    assert capsys.readouterr().out == "windows: 12, alerts: 0, delivered: 0\n"
    assert alerts_out.read_text() == ""  # replaced: a rerun gives the same file
    assert live_state.read_bytes() == live  # the live state neither read nor moved

    alerts_out.write_text("kept\n")
    assert cloud_main([*replay, "--append"]) == EXIT_OK
    assert capsys.readouterr().out.startswith("windows: 12,")  # again: no replay state kept
    assert alerts_out.read_text() == "kept\n"


class Windows:
    """A detection whose every window raises one alert (what run_range needs of one)."""

    window_ns = WINDOW_NS

    class alerts:  # the attribute of a Detection
        last_window_ns = None

    def run(self, end_ns: int) -> CycleReport:
        alert = Alert(
            alert_id=f"a-{end_ns}",
            ts=end_ns,
            type="terminal_offline",
            severity=Severity.WARNING,
            status=AlertStatus.FIRING,
            site="s1",
            device="t1",
            score=0.9,
            detector="test",
            summary="t1 offline",
        )
        return CycleReport(end_ns, [], [alert], 0.0, 0.0, 1)


def test_alerts_an_output_could_not_take_are_reported_not_delivered() -> None:
    webhook = WebhookNotifier(f"http://127.0.0.1:{free_port()}/hook", timeout_s=0.5, attempts=1)
    outputs = AlertOutputs(webhook=webhook)
    start = parse_iso("2026-11-06T00:00:00Z")
    try:
        delivery = run_range(Windows(), outputs, start, start + 2 * WINDOW_NS)  # type: ignore[arg-type]
    finally:
        outputs.close()
    assert (delivery.windows, delivery.alerts, delivery.undelivered) == (2, 2, 2)
    summary = delivery.summary()
    assert summary.startswith("windows: 2, alerts: 2, delivered: 0, not delivered: 2 (webhook: ")


def test_an_output_down_is_logged_once_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    webhook = WebhookNotifier(f"http://127.0.0.1:{free_port()}/hook", timeout_s=0.5, attempts=1)
    outputs = AlertOutputs(webhook=webhook)
    start = parse_iso("2026-11-06T00:00:00Z")
    try:
        with caplog.at_level(logging.INFO):
            run_range(Windows(), outputs, start, start + 3 * WINDOW_NS)  # type: ignore[arg-type]
    finally:
        outputs.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["output_failed"]


def test_a_delivery_summary_without_failures_says_so() -> None:
    assert Delivery(windows=3, alerts=2).summary() == "windows: 3, alerts: 2, delivered: 2"


def test_a_live_job_waits_out_an_influxdb_outage_logging_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(schedule, "OUTAGE_BACKOFF", (0.05, 0.1))
    config = load_cloud_config(write_config(tmp_path, f"http://127.0.0.1:{free_port()}"))
    detection = make_detection(config, Shard())
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    with caplog.at_level(logging.INFO):
        delivery = run_live(config, detection, AlertOutputs(), every_s=0.05, stop=stop)
    assert delivery.windows == 0
    outages = [r for r in caplog.records if r.getMessage() == "influxdb_unavailable"]
    assert len(outages) == 1


# -- check-config --connect ---------------------------------------------------------------


@pytest.mark.integration
def test_check_config_connect_reports_each_server(
    tmp_path: Path, influxdb: InfluxDB1Server, capsys: pytest.CaptureFixture[str]
) -> None:
    influxdb.create_database("tillpulse")
    port = free_port()
    config = write_config(tmp_path, influxdb.url, f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n')
    assert cloud_main(["check-config", "-c", str(config), "--connect"]) == EXIT_FAILED
    out, err = capsys.readouterr()
    assert f"[query] InfluxDB {influxdb.url}: ok" in out
    assert err.count("\n") == 1 and f"MQTT broker 127.0.0.1:{port}: cannot connect" in err


# -- progress, sample-config, --help ------------------------------------------------------


def test_progress_off_a_terminal_is_log_records(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO):
        assert list(Progress("log").track(range(3), "train: days")) == [0, 1, 2]
    lines = [r for r in caplog.records if r.getMessage() == "progress"]
    assert len(lines) == 2  # after the first item: an ETA needs one done
    assert list(Progress("off").track([1], "x")) == [1]


def test_sample_config_prints_the_example_that_check_config_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cloud_main(["sample-config"]) == EXIT_OK
    text = capsys.readouterr().out
    assert text == (REPO / "cloud" / "deploy" / "cloud.example.toml").read_text()
    out = tmp_path / "cloud.toml"
    assert cloud_main(["sample-config", "--out", str(out)]) == EXIT_OK
    assert load_cloud_config(out).query.database == "tillpulse"


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import sys; from cloud.cli import _parser; _parser().format_help(); "
        "heavy = {'sklearn', 'rich', 'numpy', 'paho', 'influxdb_client', 'cloud.jobs'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert done.stdout.strip() == "[]"
