"""cloud.evaluation.scoring: scoring alerts against ground-truth labels, with constructed inputs."""

from __future__ import annotations

import io
from pathlib import Path

import msgspec
import pytest
from rich.console import Console

from cloud.cli import main as cloud_main
from cloud.evaluation.scoring import (
    NOT_SCORED_NOTE,
    Report,
    TypeRow,
    evaluate,
    print_report,
    read_alerts_jsonl,
    render_table,
    report_json,
    targets_check,
)
from wire.incidents import AlertType
from wire.incidents import InjectionType as I
from wire.labels import (
    GroundTruthLabel,
    label_matches,
    label_type,
    make_label,
    read_labels,
    write_labels,
)
from wire.messages import Alert, AlertStatus, Severity, encode
from wire.timestamps import NS_PER_S, parse_iso

T0 = parse_iso("2026-11-23T10:00:00Z")
W = 60.0  # detection window, seconds
_ids = iter(range(1_000_000))


def ns(seconds: float) -> int:
    return T0 + round(seconds * NS_PER_S)


def alert(
    kind: str,
    at_s: float,
    *,
    alert_id: str | None = None,
    status: AlertStatus = AlertStatus.FIRING,
    severity: Severity = Severity.WARNING,
    site: str | None = None,
    device: str | None = None,
    acquirer: str | None = None,
) -> Alert:
    return Alert(
        alert_id=alert_id or f"a{next(_ids)}",
        ts=ns(at_s),
        type=kind,
        severity=severity,
        status=status,
        site=site,
        device=device,
        acquirer=acquirer,
        score=0.9,
        detector="test",
        summary="constructed",
    )


def label(
    label_id: str,
    kind: I,
    start_s: float,
    end_s: float,
    *,
    sites: tuple[str, ...] = (),
    devices: tuple[str, ...] = (),
    acquirers: tuple[str, ...] = (),
) -> GroundTruthLabel:
    return make_label(
        label_id,
        kind,
        (ns(start_s), ns(end_s)),
        sites=sites,
        devices=devices,
        acquirers=acquirers,
    )


def run(alerts: list[Alert], labels: list[GroundTruthLabel], **kw: float) -> Report:
    kw.setdefault("terminal_hours", 1000.0)
    return evaluate(alerts, labels, window_s=W, **kw)


def row(report: Report, kind: str) -> TypeRow:
    (found,) = [r for r in report.rows if r.type == kind]
    return found


CARD_TESTING = label("t-1", I.CARD_TESTING, 600, 1200, sites=("s0001",), devices=("s0001-pos1",))
OUTAGE = label(
    "t-2",
    I.ACQUIRER_OUTAGE,
    0,
    1800,
    sites=("s0001", "s0002"),
    devices=("s0001-pos1", "s0002-pos1"),
    acquirers=("acq-b",),
)


def test_a_perfect_detector_scores_one_with_its_delays() -> None:
    alerts = [
        alert("card_testing", 660, site="s0001", device="s0001-pos1"),
        alert("card_testing", 900, site="s0001", device="s0001-pos1"),
        alert("acquirer_outage", 120, acquirer="acq-b"),
    ]
    report = run(alerts, [CARD_TESTING, OUTAGE])
    card = row(report, "card_testing")
    assert (card.labels, card.detected, card.alerts, card.true_alerts) == (1, 1, 2, 2)
    assert (card.precision, card.recall, card.f1) == (1.0, 1.0, 1.0)
    assert card.delay is not None
    assert (card.delay.median_s, card.delay.median_windows) == (60.0, 1.0)
    outage = row(report, "acquirer_outage")
    assert outage.f1 == 1.0
    assert outage.delay is not None and outage.delay.max_windows == 2.0
    overall = report.overall
    assert (overall.macro_f1, overall.micro_precision, overall.micro_recall) == (1.0, 1.0, 1.0)
    assert overall.delay is not None
    assert (overall.delay.median_s, overall.delay.median_windows) == (90.0, 1.5)
    assert (overall.false_alerts, overall.unexplained_by_type) == (0, 0)
    assert report.missed == [] and report.false_alerts == []
    assert [r.type for r in report.rows] == ["acquirer_outage", "card_testing"]  # enum order
    assert report.grace_s == 2 * W
    assert (
        targets_check(report, min_f1=0.9, max_median_delay_windows=2, max_false_per_1000h=1) == []
    )


def test_a_missed_label_lowers_recall_and_is_listed() -> None:
    other = label("t-3", I.CARD_TESTING, 3000, 3600, sites=("s0009",), devices=("s0009-pos2",))
    report = run([alert("card_testing", 700, device="s0001-pos1")], [CARD_TESTING, other])
    card = row(report, "card_testing")
    assert (card.precision, card.recall) == (1.0, 0.5)
    assert card.f1 == pytest.approx(2 / 3)
    (missed,) = report.missed
    assert (missed.label_id, missed.type, missed.devices) == ("t-3", "card_testing", ["s0009-pos2"])
    assert missed.start == "2026-11-23T10:50:00.000Z"
    misses = targets_check(report, min_f1=0.9, max_median_delay_windows=2, max_false_per_1000h=1)
    assert len(misses) == 1 and misses[0].startswith("card_testing: F1 0.67 < 0.9")


def test_alerts_outside_the_window_or_on_another_terminal_are_false() -> None:
    alerts = [
        alert("card_testing", 599, device="s0001-pos1"),  # before the start
        alert("card_testing", 1200 + 2 * W, device="s0001-pos1"),  # end + grace: exclusive
        alert("card_testing", 700, site="s0001", device="s0001-pos2"),  # same site, other terminal
    ]
    report = run(alerts, [CARD_TESTING])
    card = row(report, "card_testing")
    assert (card.alerts, card.true_alerts, card.detected) == (3, 0, 0)
    assert (card.precision, card.recall, card.f1) == (0.0, 0.0, 0.0)
    assert report.overall.false_alerts == 3
    assert [a.overlaps for a in report.false_alerts] == [[], [], []]
    assert report.false_alerts[0].ts == "2026-11-23T10:09:59.000Z"
    assert report.false_alerts[1].device == "s0001-pos2"  # listed in ts order


def test_a_late_alert_within_the_grace_is_a_detection() -> None:
    late = [alert("card_testing", 1200 + 1.5 * W, device="s0001-pos1")]
    card = row(run(late, [CARD_TESTING]), "card_testing")
    assert card.f1 == 1.0
    assert card.delay is not None and card.delay.median_windows == 11.5
    no_grace = run(late, [CARD_TESTING], grace_s=0)
    assert row(no_grace, "card_testing").f1 == 0.0
    assert no_grace.overall.false_alerts == 1


def test_an_escalation_counts_once_and_resolved_alerts_are_ignored() -> None:
    alerts = [
        alert("card_testing", 900, alert_id="x", severity=Severity.CRITICAL, device="s0001-pos1"),
        alert("card_testing", 660, alert_id="x", device="s0001-pos1"),
        alert("card_testing", 1300, alert_id="x", status=AlertStatus.RESOLVED, device="s0001-pos1"),
        alert("tamper", 50, alert_id="y", status=AlertStatus.RESOLVED, device="s0005-pos1"),
    ]
    report = run(alerts, [CARD_TESTING])
    card = row(report, "card_testing")
    assert (card.alerts, card.true_alerts) == (1, 1)
    assert card.delay is not None and card.delay.median_s == 60.0  # the earliest firing message
    assert report.overall.firing_alerts == 1
    assert [r.type for r in report.rows] == ["card_testing"]
    assert report.false_alerts == []


def test_an_alert_that_stays_at_info_is_a_note_and_one_that_escalates_counts_from_then() -> None:
    """A surge on an announced sale day is reported at info: neither false nor a detection."""
    alerts = [
        alert("volume_surge", 100, alert_id="sale", severity=Severity.INFO, device="s0009-pos1"),
        alert("volume_surge", 400, alert_id="sale", severity=Severity.INFO, device="s0009-pos1"),
        alert("card_testing", 620, alert_id="x", severity=Severity.INFO, device="s0001-pos1"),
        alert("card_testing", 720, alert_id="x", severity=Severity.CRITICAL, device="s0001-pos1"),
    ]
    report = run(alerts, [CARD_TESTING])
    assert report.overall.notes == 1
    assert report.overall.false_alerts == 0
    assert report.overall.firing_alerts == 1
    card = row(report, "card_testing")
    assert card.delay is not None and card.delay.median_s == 120.0  # from the escalation


def test_site_level_and_acquirer_level_matching() -> None:
    flapping = label("t-4", I.NETWORK_FLAPPING, 0, 900, sites=("s0003",), devices=("s0003-pos1",))
    alerts = [
        alert("site_network", 60, site="s0003"),
        alert("site_network", 120, site="s0004"),
        alert("acquirer_outage", 60, acquirer="acq-b"),
        alert("acquirer_outage", 60, acquirer="acq-c"),
        alert("acquirer_outage", 60, site="s0002", acquirer="acq-c"),  # the site is the subject
    ]
    report = run(alerts, [flapping, OUTAGE])
    network = row(report, "network_flapping")
    assert (network.alerts, network.true_alerts, network.recall) == (2, 1, 1.0)
    outage = row(report, "acquirer_outage")
    assert (outage.alerts, outage.true_alerts, outage.recall) == (3, 2, 1.0)
    assert {(a.site, a.acquirer) for a in report.false_alerts} == {("s0004", None), (None, "acq-c")}


def test_an_alert_without_a_subject_is_fleet_wide() -> None:
    fraud = label("t-5", I.VELOCITY_FRAUD, 0, 600, sites=("s0001",), devices=("s0001-pos1",))
    report = run([alert("card_velocity", 300)], [fraud])
    assert row(report, "velocity_fraud").f1 == 1.0


def test_transport_faults_are_listed_but_not_scored() -> None:
    dup = label("t-6", I.DUPLICATE_SENDS, 0, 3600, sites=("s0001",), devices=("s0001-pos1",))
    report = run([alert("card_testing", 660, device="s0001-pos1")], [CARD_TESTING, dup])
    dup_row = row(report, "duplicate_sends")
    assert not dup_row.scored and dup_row.note == NOT_SCORED_NOTE
    assert (dup_row.labels, dup_row.f1, dup_row.recall) == (1, None, None)
    assert report.overall.labels == 1
    assert report.overall.macro_f1 == 1.0
    assert report.missed == []


def test_unexplained_by_type_versus_false_alerts_per_1000_terminal_hours() -> None:
    alerts = [
        alert("low_battery", 700, device="s0001-pos1"),  # on a label: unexplained, not false
        alert("approval_drop", 700, site="s0001"),  # on a label of another type: the same
        alert("low_battery", 5000, device="s0001-pos1"),  # after every label: false
        alert("tamper", 700, device="s0007-pos1"),
        alert("volume_drop", 700, site="s0007"),
    ]
    report = run(alerts, [CARD_TESTING], terminal_hours=1500.0)
    overall = report.overall
    assert (overall.false_alerts, overall.unexplained_by_type) == (3, 5)
    assert overall.false_per_1000h == pytest.approx(2.0)
    assert overall.unexplained_per_1000h == pytest.approx(5 * 1000 / 1500)
    overlaps = {a.alert_id: a.overlaps for a in report.false_alerts}
    assert sorted(map(tuple, overlaps.values())) == [(), (), (), ("t-1",), ("t-1",)]
    decline = row(report, "decline_spike")  # approval_drop maps to it: a row without labels
    assert (decline.labels, decline.alerts, decline.precision) == (0, 1, 0.0)
    assert (decline.recall, decline.f1) == (None, None)
    card = row(report, "card_testing")  # labels, no alerts
    assert (card.precision, card.recall, card.f1) == (None, 0.0, 0.0)
    assert overall.macro_f1 == 0.0  # decline_spike has no F1, card_testing 0
    misses = targets_check(report, min_f1=0.9, max_median_delay_windows=2, max_false_per_1000h=1)
    assert any("no label detected" in m for m in misses)
    assert any("2.00 false alerts per 1,000 terminal-hours > 1" in m for m in misses)


def test_nothing_at_all_gives_n_a_not_zero_or_one() -> None:
    report = run([], [])
    overall = report.overall
    assert report.rows == []
    assert (overall.macro_f1, overall.micro_precision, overall.micro_recall) == (None, None, None)
    assert overall.delay is None and overall.false_per_1000h == 0.0
    assert (
        targets_check(report, min_f1=0.9, max_median_delay_windows=2, max_false_per_1000h=1) == []
    )
    with pytest.raises(ValueError, match="positive"):
        evaluate([], [], window_s=0, terminal_hours=1)


def test_the_delay_target() -> None:
    slow = [alert("card_testing", 600 + 3 * W, device="s0001-pos1")]
    misses = targets_check(
        run(slow, [CARD_TESTING]), min_f1=0.9, max_median_delay_windows=2, max_false_per_1000h=1
    )
    assert misses == ["median detection delay 3.00 windows > 2 windows"]


def test_the_json_round_trips() -> None:
    alerts = [
        alert("card_testing", 660, device="s0001-pos1"),
        alert("low_battery", 5000, device="s0001-pos1"),
    ]
    dup = label("t-6", I.CORRUPT_FRAMES, 0, 3600, sites=("s0001",), devices=("s0001-pos1",))
    report = run(alerts, [CARD_TESTING, OUTAGE, dup])
    data = report_json(report)
    assert msgspec.json.decode(data, type=Report) == report
    plain = msgspec.json.decode(data)
    assert plain["overall"]["false_alerts"] == 1
    assert plain["rows"][0]["type"] == "acquirer_outage" and plain["rows"][0]["f1"] == 0.0


def test_the_table_renders_types_and_figures() -> None:
    alerts = [
        alert("card_testing", 660, device="s0001-pos1"),
        alert("low_battery", 5000, alert_id="battery-1", device="s0001-pos1"),
    ]
    dup = label("t-6", I.DUPLICATE_SENDS, 0, 3600, sites=("s0001",), devices=("s0001-pos1",))
    report = run(alerts, [CARD_TESTING, OUTAGE, dup], terminal_hours=500.0)
    out = io.StringIO()
    console = Console(file=out, width=240, color_system=None)
    console.print(render_table(report))
    text = out.getvalue()
    for expected in ("card_testing", "acquirer_outage", "duplicate_sends", NOT_SCORED_NOTE):
        assert expected in text
    assert "60 s (1.0 w)" in text and "1.00" in text and "overall" in text
    assert "2.00 per 1,000 terminal-hours" in text
    out.truncate(0)
    print_report(report, console, limit=1)
    text = out.getvalue()
    assert "missed labels (1)" in text and "t-2" in text and "acq-b; s0001, s0002" in text
    assert "battery-1" in text and "none: a false alert" in text


def test_read_alerts_jsonl(tmp_path: Path) -> None:
    alerts = [alert("tamper", 10, device="s0001-pos1"), alert("paper_out", 20, site="s0001")]
    path = tmp_path / "alerts.jsonl"
    path.write_bytes(b"".join(encode(a) + b"\n" for a in alerts) + b"\n")
    assert read_alerts_jsonl(path) == alerts
    path.write_bytes(encode(alerts[0]) + b'\n{"schema":"alert/1"}\n')
    with pytest.raises(ValueError, match=rf"alert file {path}, line 2: "):
        read_alerts_jsonl(path)


# A vendor's own labels: types are alert types (or injection types), in the wire schema.


def vendor_line(
    label_id: str, kind: str, start_s: float, end_s: float, **targets: list[str]
) -> bytes:
    return msgspec.json.encode(
        {
            "label_id": label_id,
            "type": kind,
            "sites": targets.get("sites", []),
            "devices": targets.get("devices", []),
            "acquirers": targets.get("acquirers", []),
            "start_ns": ns(start_s),
            "end_ns": ns(end_s),
            "start": "",
            "end": "",
        }
    )


def test_a_vendor_label_file_with_alert_types_scores_true_positives(tmp_path: Path) -> None:
    labels_path = tmp_path / "vendor.labels.jsonl"
    labels_path.write_bytes(
        b"\n".join(
            [
                vendor_line("v-1", "site_network", 0, 900, sites=["s0003"]),
                vendor_line("v-2", "terminal_offline", 0, 900, devices=["s0001-pos1"]),
                vendor_line("v-3", "low_battery", 0, 900, devices=["s0002-pos1"]),
                vendor_line("v-4", "card_velocity", 0, 900, sites=["s0004"]),
            ]
        )
        + b"\n"
    )
    labels = read_labels(labels_path)
    assert [lb.type for lb in labels] == [
        AlertType.SITE_NETWORK,
        I.TERMINAL_OFFLINE,  # a name that is both reads as the injection type
        AlertType.LOW_BATTERY,
        AlertType.CARD_VELOCITY,
    ]
    alerts = [
        alert("site_network", 60, site="s0003"),
        alert("site_network", 60, site="s0009"),  # another site: false
        alert("offline_backlog", 120, device="s0001-pos1"),  # detects terminal_offline
        alert("low_battery", 300, device="s0002-pos1"),
        alert("card_velocity", 400, site="s0004", device="s0004-pos2"),  # not that terminal
    ]
    alerts_path = tmp_path / "alerts.jsonl"
    alerts_path.write_bytes(b"".join(encode(a) + b"\n" for a in alerts))
    report = run(read_alerts_jsonl(alerts_path), labels)
    network = row(report, "site_network")
    assert (network.labels, network.detected, network.alerts, network.true_alerts) == (1, 1, 2, 1)
    assert network.delay is not None and network.delay.median_s == 60.0
    assert "network_flapping" not in {r.type for r in report.rows}  # counted as site_network
    offline = row(report, "terminal_offline")
    assert (offline.labels, offline.detected, offline.true_alerts, offline.f1) == (1, 1, 1, 1.0)
    battery = row(report, "low_battery")  # an alert type that detects no injection
    assert (battery.scored, battery.precision, battery.recall) == (True, 1.0, 1.0)
    velocity = row(report, "card_velocity")
    assert (velocity.alerts, velocity.true_alerts, velocity.recall) == (1, 0, 0.0)
    assert [m.label_id for m in report.missed] == ["v-4"]
    assert [r.type for r in report.rows] == [
        "terminal_offline",
        "low_battery",
        "site_network",
        "card_velocity",
    ]
    assert {a.site for a in report.false_alerts} == {"s0009", "s0004"}


def test_the_cli_scores_a_vendor_label_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels_path = tmp_path / "vendor.labels.jsonl"
    labels_path.write_bytes(vendor_line("v-1", "site_network", 0, 900, sites=["s0003"]) + b"\n")
    alerts_path = tmp_path / "alerts.jsonl"
    alerts_path.write_bytes(encode(alert("site_network", 60, site="s0003")) + b"\n")
    report_path = tmp_path / "report.json"
    args = ["evaluate", "--labels", str(labels_path), "--alerts", str(alerts_path)]
    args += ["--terminals", "10", "--hours", "1", "--window", "60s"]
    assert cloud_main([*args, "--report-out", str(report_path)]) == 0
    assert "tillpulse cloud evaluate" in capsys.readouterr().out  # the table; figures: JSON
    report = msgspec.json.decode(report_path.read_bytes(), type=Report)
    assert (row(report, "site_network").f1, report.overall.micro_precision) == (1.0, 1.0)
    assert cloud_main([*args, "--json"]) == 0  # the same report on stdout, for a pipe
    assert msgspec.json.decode(capsys.readouterr().out, type=Report) == report


def test_the_table_in_a_pipe_is_not_clipped_to_80_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels_path = tmp_path / "labels.jsonl"
    labels_path.write_bytes(vendor_line("v-1", "site_network", 0, 900, sites=["s0003"]) + b"\n")
    alerts_path = tmp_path / "alerts.jsonl"
    alerts_path.write_bytes(encode(alert("site_network", 60, site="s0003")) + b"\n")
    args = ["evaluate", "--labels", str(labels_path), "--alerts", str(alerts_path)]
    assert cloud_main([*args, "--terminals", "10", "--hours", "1"]) == 0
    out = capsys.readouterr().out
    assert "median delay" in out and "micro precision / recall, macro F1" in out
    assert max(len(line) for line in out.splitlines()) > 80


def test_a_label_of_an_unknown_type_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels_path = tmp_path / "vendor.labels.jsonl"
    good = vendor_line("v-1", "site_network", 0, 900, sites=["s0003"])
    labels_path.write_bytes(good + b"\n\n" + vendor_line("v-2", "printer_jam", 0, 900) + b"\n")
    alerts_path = tmp_path / "alerts.jsonl"
    alerts_path.write_bytes(b"")
    args = ["evaluate", "--labels", str(labels_path), "--alerts", str(alerts_path)]
    assert cloud_main([*args, "--terminals", "10", "--hours", "1"]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"tillpulse cloud evaluate: label file {labels_path}, line 3: ")
    assert "unknown label type 'printer_jam'" in err
    for accepted in ("network_flapping", "site_network", "terminal_offline", "low_battery"):
        assert accepted in err
    assert captured.out == ""


def test_label_types_and_matching() -> None:
    assert label_type("network_flapping") is I.NETWORK_FLAPPING
    assert label_type("paper_out") is I.PAPER_OUT
    assert label_type("volume_drop") is AlertType.VOLUME_DROP
    with pytest.raises(ValueError, match="unknown label type 'x'"):
        label_type("x")
    assert label_matches("site_network", I.NETWORK_FLAPPING)  # DETECTS
    assert label_matches("site_network", AlertType.SITE_NETWORK)  # the same type
    assert label_matches("offline_backlog", I.TERMINAL_OFFLINE)
    assert not label_matches("offline_backlog", AlertType.SITE_NETWORK)
    assert not label_matches("low_battery", I.TERMINAL_OFFLINE)
    assert not label_matches("not_a_type", AlertType.LOW_BATTERY)
    for kind in AlertType:  # every alert type can be a label type, and is matched by itself
        assert label_matches(kind.value, label_type(kind.value))


def test_simulator_labels_round_trip_as_injection_types(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    write_labels(path, [CARD_TESTING, OUTAGE])
    assert read_labels(path) == [CARD_TESTING, OUTAGE]
    assert all(type(lb.type) is I for lb in read_labels(path))
    path.write_bytes(b'{"label_id": "x"}\n')
    with pytest.raises(ValueError, match=rf"label file {path}, line 1: Object missing"):
        read_labels(path)
