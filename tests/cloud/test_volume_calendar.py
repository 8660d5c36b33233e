"""The operator calendar as context for the volume detectors, and how it is configured.

Unit level, in the style of ``test_volume_dispersion`` (its synthetic fleet, training and
replay). What an operator checks: a sale day's surge is a note (info) naming the entry,
a closed shop is no volume drop (but a closed shop taking payments still is a warning), a
holiday's drop and surge are notes; a sale day in the history is not learnt as a usual
day; a calendar file that cannot be used stops `tillpulse cloud` with one line.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from cloud.cli import main as cloud_main
from cloud.config import load_cloud_config
from cloud.detectors.findings import Finding
from cloud.jobs.schedule import make_detection
from cloud.reading.window import Shard
from tests.cloud.test_volume_dispersion import (
    TRAINED_TO,
    Edit,
    history,
    model_from,
    replay,
    synthetic,
    trained,
)
from wire.calendar import Calendar, CalendarDay, DayKind
from wire.incidents import AlertType
from wire.messages import Severity
from wire.timestamps import NS_PER_DAY, NS_PER_HOUR

DAY = dt.date(2026, 11, 3)  # the Tuesday after the history (TRAINED_TO is Monday 2026-11-02)
DAY_NS = TRAINED_TO + NS_PER_DAY
BUSY = "t045"  # the busiest grocery till
QUIET = "t044"  # a restaurant


def calendar(kind: DayKind, name: str = "", sites: tuple[str, ...] = ()) -> Calendar:
    return Calendar(day=[CalendarDay(kind=kind, dates=[DAY], name=name, sites=list(sites))])


def on_the_day(factor: float, devices: frozenset[str] | None = None) -> Edit:
    """Counts of ``devices`` (all: None) times ``factor`` on DAY."""

    def edit(device: str, start: int, count: int) -> int:
        if DAY_NS <= start < DAY_NS + NS_PER_DAY and (devices is None or device in devices):
            return round(count * factor)
        return count

    return edit


def volume(cal: Calendar | None, edit: Edit, kind: AlertType) -> list[Finding]:
    """The findings of ``kind`` over the Monday and the Tuesday (DAY) after the history."""
    fleet, model = trained("nb", 2.6)
    result = replay(fleet, model, weeks=2 / 7, edit=edit, calendar=cal)
    return [f for f in result.findings if f.type == kind]


def severities(findings: list[Finding], device: str | None = None) -> set[Severity]:
    return {f.severity for f in findings if device is None or f.device == device}


def test_a_surge_on_a_sale_day_is_a_note_that_names_the_sale() -> None:
    sale = on_the_day(4.0)
    assert Severity.WARNING in severities(volume(None, sale, AlertType.VOLUME_SURGE))  # teeth
    surges = volume(calendar(DayKind.SALE, "Black Friday"), sale, AlertType.VOLUME_SURGE)
    assert surges and severities(surges) == {Severity.INFO}
    assert all("Black Friday: a sale day in the operator calendar" in f.summary for f in surges)
    assert all(f.evidence["calendar"] == "Black Friday" for f in surges)


def test_a_drop_on_a_sale_day_is_still_a_warning() -> None:
    # more payments were expected, not fewer: a silent till is news
    silent = on_the_day(0.0, frozenset({BUSY}))
    drops = volume(calendar(DayKind.SALE, "Black Friday"), silent, AlertType.VOLUME_DROP)
    assert severities(drops, BUSY) == {Severity.WARNING}


def test_a_closed_shop_is_no_volume_drop_but_a_closed_shop_taking_payments_is_a_surge() -> None:
    closed = calendar(DayKind.CLOSED, "stocktaking", sites=(f"site-{BUSY}",))
    silent = on_the_day(0.0, frozenset({BUSY}))
    assert severities(volume(None, silent, AlertType.VOLUME_DROP), BUSY) == {Severity.WARNING}
    assert severities(volume(closed, silent, AlertType.VOLUME_DROP), BUSY) == set()
    busy = on_the_day(4.0, frozenset({BUSY}))
    surges = [f for f in volume(closed, busy, AlertType.VOLUME_SURGE) if f.device == BUSY]
    assert surges and severities(surges) == {Severity.WARNING}
    assert "stocktaking: a closed day" in surges[0].summary


def test_on_a_holiday_drop_and_surge_are_notes() -> None:
    holiday = calendar(DayKind.HOLIDAY, "St Andrew's Day")
    silent, busy = on_the_day(0.0, frozenset({BUSY})), on_the_day(4.0, frozenset({QUIET}))
    assert severities(volume(None, silent, AlertType.VOLUME_DROP), BUSY) == {Severity.WARNING}
    assert severities(volume(holiday, silent, AlertType.VOLUME_DROP), BUSY) == {Severity.INFO}
    assert severities(volume(None, busy, AlertType.VOLUME_SURGE), QUIET) == {Severity.WARNING}
    assert severities(volume(holiday, busy, AlertType.VOLUME_SURGE), QUIET) == {Severity.INFO}


def test_a_sale_day_in_the_history_is_not_learnt_as_usual() -> None:
    fleet = synthetic("nb", 2.6)
    counts = history(fleet, fleet, 14, 0, seed=1)
    sale_day = 8  # a Tuesday of the history: three times the payments
    counts[:, sale_day * 24 : sale_day * 24 + 24] *= 3
    sale = dt.date(2026, 10, 27)
    assert TRAINED_TO - (14 - sale_day) * NS_PER_DAY == _ns(sale)
    black_friday = Calendar(day=[CalendarDay(kind=DayKind.SALE, dates=[sale])])

    def tuesday_busy_hours(cal: Calendar | None) -> float:
        """Learnt over true rate, Tuesday 11:00-17:00, fleet median."""
        model = model_from(fleet, counts, calendar=cal)
        tuesday = slice(24 + 11, 24 + 17)
        ratios = [
            np.mean(np.array(model.baselines.terminals[d].rate_per_hour[tuesday]) / r[tuesday])
            for d, r in zip(fleet.devices, fleet.rates, strict=True)
        ]
        return float(np.median(ratios))

    assert tuesday_busy_hours(None) > 1.3  # the sale day, learnt: every Tuesday a half sale
    assert 0.9 < tuesday_busy_hours(black_friday) < 1.1


def _ns(date: dt.date) -> int:
    return (date - dt.date(1970, 1, 1)).days * NS_PER_DAY


CONFIG = (
    '[cloud]\nstate_dir = "{state}"\n{extra}[query]\nurl = "http://127.0.0.1:9"\ndatabase = "d"\n'
)


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "cloud.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state", extra=extra))
    return path


@pytest.mark.parametrize(
    ("calendar_text", "fault"),
    [
        (None, "cannot read it"),
        ("[[day]\nkind = 'sale'\n", "not valid TOML"),
        ("[[day]]\nkind = 'party'\ndates = [2026-11-27]\n", "kind = sale|holiday|closed"),
    ],
)
def test_an_unusable_calendar_in_the_config_is_one_line_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], calendar_text: str | None, fault: str
) -> None:
    cal = tmp_path / "calendar.toml"
    if calendar_text is not None:
        cal.write_text(calendar_text)
    path = write_config(tmp_path, f'calendar = "{cal}"\n')
    for command in (["check-config"], ["detect", "--once"], ["train"]):
        assert cloud_main([*command, "--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert "cloud.calendar" in err and str(cal) in err and fault in err, err


@pytest.mark.parametrize("command", [["detect", "--once"], ["train"]])
def test_an_unusable_calendar_on_the_command_line_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    cal = tmp_path / "calendar.toml"
    cal.write_text("[[day]]\nkind = 'sale'\n")  # no dates
    path = write_config(tmp_path)
    assert cloud_main([*command, "--config", str(path), "--calendar", str(cal)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(cal) in err and "dates" in err, err


def test_the_configured_calendar_reaches_the_detectors_and_the_option_overrides_it(
    tmp_path: Path,
) -> None:
    configured, given = tmp_path / "a.toml", tmp_path / "b.toml"
    configured.write_text('[[day]]\nkind = "closed"\ndates = [2026-12-25]\nname = "Christmas"\n')
    given.write_text('[[day]]\nkind = "sale"\ndates = [2026-11-27]\nname = "Black Friday"\n')
    config = load_cloud_config(write_config(tmp_path, f'calendar = "{configured}"\n'))
    christmas = _ns(dt.date(2026, 12, 25)) + 12 * NS_PER_HOUR
    detection = make_detection(config, Shard())
    assert detection.settings.calendar is not None
    entry = detection.settings.calendar.on("site-1", "5411", christmas)
    assert entry is not None and entry.name == "Christmas"
    override = make_detection(config, Shard(), calendar=given).settings.calendar
    assert override is not None and override.on("site-1", "5411", christmas) is None
