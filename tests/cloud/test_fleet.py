"""Acquirer outage root cause: a failing acquirer is told from card testing and from chance.

Its latency trend (a degrading acquirer) is tested on realistic traffic in
tests/cloud/test_degrading_acquirer.py; here, the rules on hand-made windows.
"""

from __future__ import annotations

import dataclasses
import math
import random

from cloud.detectors.carried_state import Memory
from cloud.detectors.fleet_wide import FleetSettings, down_acquirers
from cloud.detectors.trained_model import (
    MIN_HISTORY_HOURS,
    AcquirerBaseline,
    TrainedModel,
)
from cloud.reading.window import AcquirerWindow
from testkit import models
from wire.messages import Severity

SETTINGS = FleetSettings()
WINDOW_NS = 300 * 10**9


def window(  # noqa: PLR0917
    count: int,
    declined: int,
    system: int,
    sites: int,
    failing: int,
    site_latency_ms: tuple[float, ...] = (),
) -> AcquirerWindow:
    latencies = list(site_latency_ms) or [300.0] * sites
    return AcquirerWindow(
        count=count,
        approved=count - declined,
        latency_median_ms=sorted(latencies)[len(latencies) // 2],
        sites=sites,
        failing_sites=failing,
        system_declines=system,
        site_latency_ms={f"s{i}": ms for i, ms in enumerate(latencies)},
    )


def down_in(windows: list[AcquirerWindow], model: TrainedModel | None, name: str) -> list[bool]:
    """Whether ``name`` is down in each of consecutive 5-minute windows."""
    memory = Memory()
    return [
        name
        in down_acquirers(
            {name: w}, memory, model, SETTINGS, start_ns=i * WINDOW_NS, end_ns=(i + 1) * WINDOW_NS
        )
        for i, w in enumerate(windows)
    ]


def model_with(acquirer: str, latency_median_ms: float, sites: int = 0) -> TrainedModel:
    """Its usual figures, and a terminal with its own baseline at each of ``sites`` sites."""
    usual = AcquirerBaseline(
        decline_rate=0.04, latency_median_ms=latency_median_ms, latency_p95_ms=900.0
    )
    payments = {
        "rate_per_hour": [1.0] * 168,
        "decline_rate": 0.04,
        "amount_log_median": 7.0,
        "amount_log_sigma": 0.5,
    }
    terminals = {
        f"s{i}-pos1": models.terminal_baseline(
            f"s{i}",
            acquirer=acquirer,
            profile=-1,
            history_hours=MIN_HISTORY_HOURS,
            latency_log_median=math.log(latency_median_ms),
            latency_log_sigma=0.4,
            **payments,
        )
        for i in range(sites)
    }
    return models.model_of(
        terminals,
        trained_to_ns=1,
        fleet=models.usual_baseline(**payments),
        acquirers={acquirer: usual},
    )


def test_a_busy_acquirer_declining_at_its_usual_rate_is_never_down() -> None:
    rng = random.Random(1)
    memory = Memory()
    for i in range(2_000):  # about a week of working windows
        count = 800
        declined = sum(rng.random() < 0.04 for _ in range(count))
        system = sum(rng.random() < 0.05 for _ in range(declined))
        down = down_acquirers(
            {"acq": window(count, declined, system, 40, 0)}, memory, None, SETTINGS,
            start_ns=i * WINDOW_NS, end_ns=(i + 1) * WINDOW_NS,
        )  # fmt: skip
        assert down == {}


def test_a_small_acquirer_failing_with_system_codes_is_down_within_two_windows() -> None:
    memory = Memory()
    first = down_acquirers(
        {"acq-c": window(4, 2, 2, 1, 0)}, memory, None, SETTINGS, start_ns=0, end_ns=WINDOW_NS
    )
    second = down_acquirers(
        {"acq-c": window(2, 2, 2, 1, 1)}, memory, None, SETTINGS,
        start_ns=WINDOW_NS, end_ns=2 * WINDOW_NS,
    )  # fmt: skip
    assert first == {}
    assert "system codes" in second["acq-c"].why and "1 site" in second["acq-c"].why
    assert second["acq-c"].severity is Severity.CRITICAL


def test_card_testing_at_one_site_is_not_an_acquirer_outage() -> None:
    # 150 probes a window, 85 % declined as do-not-honour / invalid card
    assert down_in([window(400, 135, 1, 12, 1)] * 4, None, "acq-a") == [False] * 4


def test_a_big_outage_is_down_in_its_first_window() -> None:
    down = down_acquirers(
        {"acq-b": window(900, 700, 680, 30, 28)}, Memory(), None, SETTINGS,
        start_ns=0, end_ns=WINDOW_NS,
    )  # fmt: skip
    assert "700 of 900 authorisations declined" in down["acq-b"].why
    assert down["acq-b"].severity is Severity.CRITICAL


def test_an_acquirer_slow_at_most_of_its_sites_for_15_minutes_is_degrading() -> None:
    model = model_with("acq-b", latency_median_ms=300.0)
    slow = window(300, 10, 0, 3, 0, site_latency_ms=(2_500.0, 2_900.0, 350.0))
    # 8 x usual at 2 of 3 sites: one window is a blip, the third is a trend
    assert down_in([slow] * 3, model, "acq-b") == [False, False, True]
    memory = Memory()
    for i in range(3):
        down = down_acquirers(
            {"acq-b": slow}, memory, model, SETTINGS,
            start_ns=i * WINDOW_NS, end_ns=(i + 1) * WINDOW_NS,
        )  # fmt: skip
    assert down["acq-b"].severity is Severity.WARNING
    assert "at 2 of 3 sites, rising for 15 min" in down["acq-b"].why


def test_an_acquirer_slow_and_declining_at_most_of_its_sites_is_down_in_its_first_window() -> None:
    model = model_with("acq-c", latency_median_ms=300.0)
    # a few authorisations, 25 x slow at 2 of 3 sites, 3 of them system-declined
    outage = window(5, 3, 3, 3, 1, site_latency_ms=(7_500.0, 8_000.0, 350.0))
    down = down_acquirers(
        {"acq-c": outage}, Memory(), model, SETTINGS, start_ns=0, end_ns=WINDOW_NS
    )
    assert down["acq-c"].severity is Severity.CRITICAL
    assert "slower than usual at 2 of 3 sites, 3 of 5 declined" in down["acq-c"].why
    # as slow without the declines: one window may be a blip
    assert down_in([dataclasses.replace(outage, system_declines=0)], model, "acq-c") == [False]
    # one slow, failing site: one terminal's route, unless the acquirer has no other site
    one_site = window(4, 2, 2, 1, 0, site_latency_ms=(9_000.0,))
    assert down_in([one_site], model_with("acq-c", 300.0, sites=3), "acq-c") == [False]
    assert down_in([one_site], model_with("acq-c", 300.0, sites=1), "acq-c") == [True]


def test_one_slow_terminal_does_not_make_its_acquirer_slow() -> None:
    model = model_with("acq-b", latency_median_ms=300.0)
    # one slow terminal's site, and a site under card testing that declines fast
    two_sites = window(40, 20, 0, 2, 1, site_latency_ms=(2_093.0, 320.0))
    # its many slow payments make the acquirer's median 7 x usual
    two_sites = dataclasses.replace(two_sites, latency_median_ms=2_093.0)
    assert down_in([two_sites] * 12, model, "acq-b") == [False] * 12
