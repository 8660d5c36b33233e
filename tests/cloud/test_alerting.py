"""AlertManager: sequences of findings, window by window, and the alerts they give."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

from cloud.detectors.findings import Finding
from cloud.jobs.alert_lifecycle import AlertManager, alert_id
from wire.messages import Alert, AlertStatus, Severity, decode_as, encode

S = 1_000_000_000
WINDOW = 300 * S  # 5-minute windows
T0 = 1_795_593_600 * S  # 2026-11-25T08:00:00Z
ALERT_ID = re.compile(r"\A[A-Za-z0-9_.:-]{1,128}\Z")


def w(index: int) -> int:
    """End of window ``index``."""
    return T0 + index * WINDOW


def finding(
    index: int,
    *,
    severity: Severity = Severity.WARNING,
    score: float = 0.6,
    device: str | None = "t1",
    **fields: str | None,
) -> Finding:
    defaults: dict[str, str | None] = {
        "type": "terminal_offline",
        "detector": "health.offline",
        "site": "s1",
        "summary": "no heartbeat for 6 min (expected every 60 s)",
    }
    defaults.update(fields)
    return msgspec.convert(
        {**defaults, "device": device, "severity": severity, "score": score, "ts": w(index)},
        Finding,
    )


def card_finding(token: str) -> Finding:
    return finding(
        0, device=None, site=None, type="card_velocity", detector="fraud.velocity", subject=token
    )


def run(manager: AlertManager, windows: Sequence[Sequence[Finding]], start: int = 0) -> list[Alert]:
    """Step through consecutive windows from ``start``; all alerts emitted, in order."""
    alerts: list[Alert] = []
    for offset, findings in enumerate(windows):
        alerts += manager.step(w(start + offset), findings)
    return alerts


def flapping(on: list[bool]) -> list[list[Finding]]:
    """A finding in window i when ``on[i]``."""
    return [[finding(i)] if present else [] for i, present in enumerate(on)]


def test_a_new_finding_fires_one_alert_carrying_its_figures() -> None:
    manager = AlertManager(state_path=None)
    [alert] = manager.step(w(0), [finding(0, severity=Severity.CRITICAL, score=0.9)])
    assert alert.status is AlertStatus.FIRING
    assert (alert.ts, alert.type, alert.site, alert.device, alert.acquirer) == (
        w(0),
        "terminal_offline",
        "s1",
        "t1",
        None,
    )
    assert (alert.severity, alert.score, alert.detector) == (
        Severity.CRITICAL,
        0.9,
        "health.offline",
    )
    assert alert.summary == "no heartbeat for 6 min (expected every 60 s)"
    assert ALERT_ID.match(alert.alert_id)
    assert decode_as(encode(alert), Alert) == alert
    assert manager.stats.fired == 1
    assert manager.open_alerts == 1


def test_the_same_key_while_open_is_deduplicated() -> None:
    manager = AlertManager(state_path=None)
    alerts = run(manager, [[finding(i, score=0.5 + i / 10)] for i in range(5)])
    assert len(alerts) == 1
    assert manager.stats.deduplicated == 4


def test_distinct_subjects_are_distinct_alerts() -> None:
    manager = AlertManager(state_path=None)
    alerts = manager.step(
        w(0),
        [
            finding(0, device="t1"),
            finding(0, device="t2"),
            finding(0, device=None, site=None, acquirer="acq1", type="acquirer_outage"),
            card_finding("ct1_AAAAAAAAAAAAAAAAAAAAAA"),
            card_finding("ct1_BBBBBBBBBBBBBBBBBBBBBB"),
        ],
    )
    assert len({a.alert_id for a in alerts}) == 5
    fleet = alerts[2]
    assert (fleet.site, fleet.device, fleet.acquirer) == (None, None, "acq1")
    assert (alerts[3].site, alerts[3].device, alerts[3].acquirer) == (None, None, None)


def test_an_escalation_fires_the_same_alert_again_at_the_higher_severity() -> None:
    manager = AlertManager(state_path=None)
    alerts = run(
        manager,
        [
            [finding(0, score=0.5)],
            [finding(1, score=0.7)],
            [finding(2, severity=Severity.CRITICAL, score=0.6)],
            [finding(3, severity=Severity.CRITICAL)],
            [finding(4, severity=Severity.WARNING)],
        ],
    )
    first, escalated = alerts
    assert escalated.alert_id == first.alert_id
    assert (escalated.status, escalated.severity) == (AlertStatus.FIRING, Severity.CRITICAL)
    assert (escalated.ts, escalated.score) == (w(2), 0.7)  # the peak score so far
    assert (manager.stats.escalated, manager.stats.deduplicated) == (1, 3)


def test_an_open_alert_resolves_after_clear_windows_absent_windows() -> None:
    manager = AlertManager(clear_windows=2, state_path=None)
    on = [True, True, True, False, True, False, False, False]
    fired, resolved = run(manager, flapping(on))
    assert resolved.alert_id == fired.alert_id
    assert resolved.status is AlertStatus.RESOLVED
    assert resolved.ts == w(6)  # absent in windows 5 and 6; the gap at 3 was too short
    assert resolved.severity is Severity.WARNING
    assert "cleared" in resolved.summary
    assert "firing for 30m00s since 2026-11-25T08:00:00Z" in resolved.summary
    assert "reported in 4 windows" in resolved.summary
    assert decode_as(encode(resolved), Alert) == resolved
    assert manager.stats.resolved == 1
    assert manager.open_alerts == 0


def test_a_flapping_condition_gives_one_alert_per_cooldown() -> None:
    """On for one window, off for two (so each episode clears): 6 episodes in 90 minutes."""
    manager = AlertManager(clear_windows=2, cooldown_s=1800, state_path=None)
    alerts = run(manager, flapping([True, False, False] * 6))  # windows 0-17
    assert [(a.status, a.ts) for a in alerts] == [
        (AlertStatus.FIRING, w(0)),
        (AlertStatus.RESOLVED, w(2)),
        (AlertStatus.FIRING, w(9)),  # the cooldown after w(2) ended with w(8)
        (AlertStatus.RESOLVED, w(11)),
    ]
    assert manager.stats.suppressed == 4  # windows 3, 6, 12 and 15
    without = run(
        AlertManager(clear_windows=2, cooldown_s=0, state_path=None),
        flapping([True, False, False] * 6),
    )
    assert len(without) == 12


def test_flapping_within_the_cooldown_is_muted_and_after_it_fires_anew() -> None:
    manager = AlertManager(clear_windows=2, cooldown_s=1800, state_path=None)
    on = [True, False, False, True, False, True, False, False, True, True]
    alerts = run(manager, flapping(on))
    statuses = [(a.status, a.ts) for a in alerts]
    assert statuses == [
        (AlertStatus.FIRING, w(0)),
        (AlertStatus.RESOLVED, w(2)),
        (AlertStatus.FIRING, w(8)),  # w(2) + 30 min: the cooldown is over
    ]
    assert alerts[2].alert_id != alerts[0].alert_id
    assert manager.stats.suppressed == 2  # windows 3 and 5


def test_a_condition_that_comes_back_and_stays_is_announced_when_the_cooldown_ends() -> None:
    manager = AlertManager(clear_windows=1, cooldown_s=1800, state_path=None)
    alerts = run(manager, flapping([True, False] + [True] * 8))
    assert [(a.status, a.ts) for a in alerts] == [
        (AlertStatus.FIRING, w(0)),
        (AlertStatus.RESOLVED, w(1)),
        (AlertStatus.FIRING, w(7)),
    ]
    assert manager.stats.suppressed == 5  # windows 2-6


def test_a_higher_severity_breaks_through_the_cooldown() -> None:
    manager = AlertManager(clear_windows=1, cooldown_s=1800, state_path=None)
    windows = [
        [finding(0)],
        [],
        [finding(2)],
        [finding(3, severity=Severity.CRITICAL)],
    ]
    alerts = run(manager, windows)
    assert [(a.status, a.severity, a.ts) for a in alerts] == [
        (AlertStatus.FIRING, Severity.WARNING, w(0)),
        (AlertStatus.RESOLVED, Severity.WARNING, w(1)),
        (AlertStatus.FIRING, Severity.CRITICAL, w(3)),
    ]
    assert manager.stats.suppressed == 1


def test_no_cooldown_fires_every_episode() -> None:
    manager = AlertManager(clear_windows=1, cooldown_s=0, state_path=None)
    alerts = run(manager, flapping([True, False] * 3))
    assert [a.status for a in alerts] == [AlertStatus.FIRING, AlertStatus.RESOLVED] * 3


def test_ids_are_deterministic_for_a_replay() -> None:
    on = [True, True, False, False, True, False, False] * 3
    first = run(AlertManager(cooldown_s=0, state_path=None), flapping(on))
    replay = run(AlertManager(cooldown_s=0, state_path=None), flapping(on))
    assert first == replay
    assert len({a.alert_id for a in first}) == 6  # one per episode
    key = finding(0).key
    assert alert_id(key, w(0)) == first[0].alert_id
    assert alert_id(key, w(1)) != alert_id(key, w(0))
    long_type = ("x" * 64, "", "", "", "ct1_" + "9" * 22)
    assert ALERT_ID.match(alert_id(long_type, 2**63 - 1))


def test_windows_go_forward_only() -> None:
    manager = AlertManager(state_path=None)
    manager.step(w(5), [])
    with pytest.raises(ValueError, match="not after the last one processed"):
        manager.step(w(4), [])
    with pytest.raises(ValueError, match="not after the last one processed"):
        manager.step(w(5), [])
    assert manager.step(w(6), []) == []
    assert manager.last_window_ns == w(6)


def test_an_alert_the_wire_refuses_is_skipped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    manager = AlertManager(state_path=None)
    pan = finding(0, summary="card 4111 1111 1111 1111 tried 40 times")
    bad_id = finding(0, device="bad/device")
    good = finding(0, device="t2")
    with caplog.at_level(logging.ERROR, logger="cloud.jobs.alert_lifecycle"):
        alerts = manager.step(w(0), [pan, bad_id, good])
    assert [a.device for a in alerts] == ["t2"]
    assert manager.stats.invalid == 2
    assert "4111" not in caplog.text
    assert caplog.text.count("alert_invalid") == 2


def test_a_long_summary_is_truncated() -> None:
    [alert] = AlertManager(state_path=None).step(w(0), [finding(0, summary="x" * 5000)])
    assert alert.summary == "x" * 2000


def test_state_persists_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "state" / "alerts.json"
    first = AlertManager(clear_windows=2, cooldown_s=1800, state_path=path)
    [fired] = first.step(w(0), [finding(0)])
    assert path.exists()
    assert not path.with_name("alerts.json.tmp").exists()

    second = AlertManager(clear_windows=2, cooldown_s=1800, state_path=path)
    assert second.last_window_ns == w(0)
    with pytest.raises(ValueError):
        second.step(w(0), [finding(0)])
    assert second.step(w(1), [finding(1)]) == []  # still open: deduplicated
    assert second.step(w(2), []) == []
    [resolved] = second.step(w(3), [])
    assert (resolved.alert_id, resolved.status) == (fired.alert_id, AlertStatus.RESOLVED)

    third = AlertManager(clear_windows=2, cooldown_s=1800, state_path=path)
    assert third.step(w(4), [finding(4)]) == []  # the cooldown came along too
    assert third.stats.suppressed == 1


def test_a_corrupt_state_file_is_moved_aside_and_the_manager_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "alerts.json"
    path.write_bytes(b'{"version": 1, "incidents": [{"key": ')
    with caplog.at_level(logging.WARNING, logger="cloud.jobs.alert_lifecycle"):
        manager = AlertManager(state_path=path)
    assert manager.stats.state_corrupt == 1
    assert "alert_state_corrupt" in caplog.text
    [aside] = tmp_path.glob("alerts.json.corrupt-*")
    assert aside.read_bytes().startswith(b'{"version": 1')
    assert manager.last_window_ns is None
    assert len(manager.step(w(0), [finding(0)])) == 1
    assert AlertManager(state_path=path).stats.state_corrupt == 0  # saved afresh


@pytest.mark.parametrize(
    "content",
    [b'{"version": 99, "incidents": []}', b'{"version": 1, "incidents": 7}', b"\x00\xff"],
)
def test_an_unknown_version_or_shape_is_treated_as_corrupt(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "alerts.json"
    path.write_bytes(content)
    assert AlertManager(state_path=path).stats.state_corrupt == 1
    assert not path.exists()


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="clear_windows"):
        AlertManager(clear_windows=0, state_path=None)
    with pytest.raises(ValueError, match="cooldown_s"):
        AlertManager(cooldown_s=-1, state_path=None)
