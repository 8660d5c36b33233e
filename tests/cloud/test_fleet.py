"""Acquirer outage root cause: a failing acquirer is told from card testing and from chance."""

from __future__ import annotations

import dataclasses
import random

from cloud.detectors.carried_state import Memory
from cloud.detectors.fleet_wide import FleetSettings, down_acquirers
from cloud.detectors.trained_model import AcquirerBaseline, Baseline, Baselines, TrainedModel
from cloud.reading.window import AcquirerWindow

SETTINGS = FleetSettings()


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
        site_latency_ms=latencies,
    )


def model_with(acquirer: str, latency_median_ms: float) -> TrainedModel:
    usual = AcquirerBaseline(
        decline_rate=0.04, latency_median_ms=latency_median_ms, latency_p95_ms=900.0
    )
    fleet = Baseline(
        rate_per_hour=[1.0] * 168,
        decline_rate=0.04,
        amount_log_median=7.0,
        amount_log_sigma=0.5,
        temperature_p50=30.0,
        temperature_p99=40.0,
    )
    baselines = Baselines(
        trained_from_ns=0,
        trained_to_ns=1,
        window_s=300,
        terminals={},
        profiles=[],
        profile_by_mcc={},
        fleet=fleet,
        acquirers={acquirer: usual},
    )
    return TrainedModel(baselines, None, None, {})


def test_a_busy_acquirer_declining_at_its_usual_rate_is_never_down() -> None:
    rng = random.Random(1)
    memory = Memory()
    for _ in range(2_000):  # about a week of working windows
        count = 800
        declined = sum(rng.random() < 0.04 for _ in range(count))
        system = sum(rng.random() < 0.05 for _ in range(declined))
        down = down_acquirers(
            {"acq": window(count, declined, system, 40, 0)}, memory, None, SETTINGS
        )
        assert down == {}


def test_a_small_acquirer_failing_with_system_codes_is_down_within_two_windows() -> None:
    memory = Memory()
    first = down_acquirers({"acq-c": window(4, 2, 2, 1, 0)}, memory, None, SETTINGS)
    second = down_acquirers({"acq-c": window(2, 2, 2, 1, 1)}, memory, None, SETTINGS)
    assert first == {}
    assert "system codes" in second["acq-c"] and "1 site" in second["acq-c"]


def test_card_testing_at_one_site_is_not_an_acquirer_outage() -> None:
    memory = Memory()
    for _ in range(4):  # 150 probes a window, 85 % declined as do-not-honour / invalid card
        down = down_acquirers({"acq-a": window(400, 135, 1, 12, 1)}, memory, None, SETTINGS)
        assert down == {}


def test_a_big_outage_is_down_in_its_first_window() -> None:
    down = down_acquirers({"acq-b": window(900, 700, 680, 30, 28)}, Memory(), None, SETTINGS)
    assert "700 of 900 authorisations declined" in down["acq-b"]


def test_an_acquirer_slow_at_most_of_its_sites_is_down() -> None:
    model = model_with("acq-b", latency_median_ms=300.0)
    slow = window(300, 10, 0, 3, 0, site_latency_ms=(2_500.0, 2_900.0, 350.0))
    down = down_acquirers({"acq-b": slow}, Memory(), model, SETTINGS)
    assert "slow at 2 of 3 sites" in down["acq-b"]


def test_one_slow_terminal_does_not_make_its_acquirer_slow() -> None:
    model = model_with("acq-b", latency_median_ms=300.0)
    # one slow terminal's site, and a site under card testing that declines fast
    two_sites = window(40, 20, 0, 2, 1, site_latency_ms=(2_093.0, 320.0))
    # its many slow payments make the acquirer's median 7 x usual
    two_sites = dataclasses.replace(two_sites, latency_median_ms=2_093.0)
    assert down_acquirers({"acq-b": two_sites}, Memory(), model, SETTINGS) == {}
