"""Volume drop / surge on real histories: short ones, and merchants whose opening hours change.

Unit level, in the style of ``test_volume_dispersion`` (its synthetic fleet, training and
replay): 48 terminals open 07-21, overdispersed counts. A week of history must be enough
to judge the busy weekday hours (day-of-week weighting and the category's day levels:
`cloud.detectors.volume_baseline`), at the same false-alert budget. A merchant who now
opens at 10:00 must not raise volume drops every morning: the change is found in
training when the history holds it (even two days of it), and learnt live within days
when it does not (`KpiSettings.volume_quiet_days`); a till that really goes silent in its
new hours is still raised.

Run ``python -m tests.cloud.test_volume_history`` for the figures in docs/detectors.md.
"""

from __future__ import annotations

import numpy as np
import pytest

from cloud.detectors.trained_model import TrainedModel
from tests.cloud.test_volume_dispersion import (
    BUDGET,
    OPENS,
    TRAINED_TO,
    Replay,
    Synthetic,
    history,
    model_from,
    per_thousand,
    replay,
    silent_till_delay,
    synthetic,
    trained,
)
from wire.incidents import AlertType
from wire.timestamps import NS_PER_DAY, NS_PER_HOUR

SHAPES = (("nb", 2.6), ("nb", 6.4), ("qp", 2.6), ("qp", 6.4))
NEW_OPENS = 10  # the new opening hour (`trained(..., new_hours_days=...)`)
WINDOW_NS = 300 * 10**9


def drops_in_old_hours(result: Replay) -> list[tuple[str, int, int]]:
    """(device, day after the history, clock hour) of each volume drop that begins in the
    hours the shops no longer open."""
    out = []
    for kind, device, end in result.alerts:
        day, rest = divmod(end - WINDOW_NS - TRAINED_TO, NS_PER_DAY)
        if kind is AlertType.VOLUME_DROP and OPENS <= rest // NS_PER_HOUR < NEW_OPENS:
            out.append((device, int(day), int(rest // NS_PER_HOUR)))
    return out


def drop_days(result: Replay) -> list[int]:
    """Days after the history on which a volume drop begins."""
    return sorted(
        {
            int((end - WINDOW_NS - TRAINED_TO) // NS_PER_DAY)
            for kind, _, end in result.alerts
            if kind is AlertType.VOLUME_DROP
        }
    )


@pytest.mark.parametrize("days", [7, 10])
@pytest.mark.parametrize(("shape", "level"), SHAPES)
def test_a_short_history_stays_under_the_false_alert_budget(
    shape: str, level: float, days: int
) -> None:
    fleet, model = trained(shape, level, days=days)
    result = replay(fleet, model)
    assert per_thousand(result) <= BUDGET, result.alerts


def test_a_week_of_history_judges_the_weekdays_and_not_yet_the_weekend() -> None:
    _, model = trained("nb", 2.6, days=7)
    weights = np.array(model.baselines.terminals["t045"].rate_weight).reshape(7, 24)
    # its own day and the same hour of the four other weekdays at a quarter each: 2 sightings,
    # what volume_min_weeks asks; Saturday and Sunday lend each other a quarter: 1.25
    assert np.allclose(weights[:5], 2.0) and np.allclose(weights[5:], 1.25)


@pytest.mark.parametrize(("shape", "level", "within_min"), [("nb", 2.6, 30), ("qp", 2.6, 30)])
def test_a_week_of_history_is_enough_to_catch_a_silent_till_in_a_busy_hour(
    shape: str, level: float, within_min: float
) -> None:
    # before day-of-week weighting an hour of the week seen once was not judged at all
    delay = silent_till_delay(*trained(shape, level, days=7))
    assert delay is not None and delay <= within_min


@pytest.mark.parametrize("new_days", [7, 2])
@pytest.mark.parametrize(("shape", "level"), SHAPES)
def test_new_opening_hours_in_the_history_raise_no_drop_in_the_old_hours(
    shape: str, level: float, new_days: int
) -> None:
    fleet, model = trained(shape, level, new_hours_days=new_days)
    result = replay(fleet, model, weeks=1)
    assert drops_in_old_hours(result) == []
    assert per_thousand(result) <= BUDGET, result.alerts


@pytest.mark.parametrize("new_days", [7, 2])
def test_a_till_silent_in_its_new_hours_is_still_a_volume_drop(new_days: int) -> None:
    # only the hours that changed are learnt from the days since: a busy hour is judged as before
    delay = silent_till_delay(*trained("nb", 2.6, new_hours_days=new_days), minutes=60)
    assert delay is not None and delay <= 40


@pytest.mark.parametrize("new_days", [7, 2])
def test_the_change_of_hours_is_found_on_its_day_for_the_busy_tills(new_days: int) -> None:
    fleet, model = trained("nb", 2.6, new_hours_days=new_days)
    changed_on = TRAINED_TO - new_days * NS_PER_DAY
    busy = [d for i, d in enumerate(fleet.devices) if fleet.rates[i].max() >= 30]
    for device in busy:
        own = model.baselines.terminals[device]
        assert (own.hours_changed_ns, own.hours_changed) == (changed_on, [7, 8, 9]), device


@pytest.mark.parametrize(("shape", "level"), SHAPES)
@pytest.mark.parametrize("days", [7, 14])
def test_steady_hours_are_not_taken_for_a_change(shape: str, level: float, days: int) -> None:
    _, model = trained(shape, level, days=days)
    assert [d for d, t in model.baselines.terminals.items() if t.hours_changed] == []


def new_hours_after_training(shape: str, level: float) -> tuple[Synthetic, TrainedModel]:
    """Trained on two weeks of the old hours; the shops open at 10:00 from the first day after."""
    old = synthetic(shape, level)
    return synthetic(shape, level, opens=NEW_OPENS), model_from(old, history(old, old, 14, 0, 1))


@pytest.mark.parametrize(("shape", "level"), SHAPES)
def test_new_hours_after_training_stop_alerting_within_two_days(shape: str, level: float) -> None:
    fleet, model = new_hours_after_training(shape, level)
    result = replay(fleet, model, weeks=1)
    # the first mornings are drops (nothing says the hours changed yet); after drops in the
    # same hours on volume_quiet_days = 2 days in a row those hours are its new hours
    assert drop_days(result) and max(drop_days(result)) <= 1, result.alerts


def test_new_hours_learnt_live_still_let_a_silent_till_be_caught() -> None:
    fleet, model = new_hours_after_training("nb", 2.6)
    delay = silent_till_delay(fleet, model, day=3)  # Thursday, after the mornings were learnt
    assert delay is not None and delay <= 30


def _minutes(fleet: Synthetic, model: TrainedModel, day: int) -> str:
    """Minutes to the drop of the busiest grocery till silent from :15 of its busiest hour."""
    delay = silent_till_delay(fleet, model, day=day, minutes=90)
    return "-" if delay is None else f"{delay:.0f}"


if __name__ == "__main__":
    for days in (7, 10, 14):
        for shape, level in SHAPES:
            fleet, model = trained(shape, level, days=days)
            print(
                f"{days} days of history, {shape} {level}x: false volume alerts per 1,000 "
                f"terminal-hours {per_thousand(replay(fleet, model)):.2f}; a busy till silent "
                f"on Monday: raised after {_minutes(fleet, model, 0)} min"
            )
    for shape, level in SHAPES:
        for new_days in (7, 2):
            fleet, model = trained(shape, level, new_hours_days=new_days)
            found = sum(1 for t in model.baselines.terminals.values() if t.hours_changed)
            result = replay(fleet, model, weeks=1)
            old_hours = len(drops_in_old_hours(result))
            print(
                f"new hours in the last {new_days} of 14 days, {shape} {level}x: change found "
                f"for {found}/48 terminals; drops in the old hours {old_hours}, "
                f"false alerts per 1,000 terminal-hours {per_thousand(result):.2f}; "
                f"a busy till silent: raised after {_minutes(fleet, model, 0)} min"
            )
        fleet, model = new_hours_after_training(shape, level)
        result = replay(fleet, model, weeks=1)
        print(
            f"new hours after training, {shape} {level}x: drops begin on days {drop_days(result)} "
            f"after it ({len(result.alerts)} alerts in the week); a busy till silent on day 3: "
            f"raised after {_minutes(fleet, model, 3)} min"
        )
