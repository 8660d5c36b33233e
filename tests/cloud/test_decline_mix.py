"""Decline-code mix evidence fades by the clock: a closed night forgets an evening's attack.

Unit level, with a model built in memory: one terminal whose usual declines are
mostly code 05 sees a burst of code 91 declines in the evening; the shop then
closes (no payments, no windows) until the morning.
"""

from __future__ import annotations

from cloud.detectors.carried_state import DeviceMemory, Memory
from cloud.detectors.fraud_features import TerminalWindow
from cloud.detectors.kpis import Explained, KpiSettings, kpi_findings
from cloud.detectors.trained_model import (
    TrainedModel,
)
from testkit import models
from wire.incidents import AlertType
from wire.timestamps import NS_PER_HOUR, NS_PER_S, parse_iso

DEVICE = "s1-pos1"
WINDOW_NS = 300 * NS_PER_S
EVENING = parse_iso("2026-11-10T19:00:00Z")
NEXT_MORNING = parse_iso("2026-11-11T08:00:00Z")
USUAL_CODES = {"05": 0.8, "51": 0.15, "91": 0.05}


def model() -> TrainedModel:
    # no payments expected (no volume judgement): decline codes only
    own = models.terminal_baseline("s1", decline_codes=USUAL_CODES)
    return models.model_of(
        {DEVICE: own},
        trained_to_ns=EVENING - 24 * NS_PER_HOUR,
        fleet=models.usual_baseline(decline_codes=USUAL_CODES),
    )


def declines(codes: dict[str, int]) -> dict[str, TerminalWindow]:
    n = sum(codes.values())
    window = TerminalWindow("s1", "acq", "5411", payments=n, online=n, declined=n, codes=codes)
    window.latencies = [300.0] * n
    return {DEVICE: window}


def run(memory: Memory, windows: dict[str, TerminalWindow], start_ns: int) -> set[str]:
    explained = Explained(devices={}, sites=set(), shut_down=set(), acquirers=set())
    findings = kpi_findings(
        windows, memory, model(), explained, start_ns, start_ns + WINDOW_NS, KpiSettings()
    )
    return {f.type for f in findings if f.device == DEVICE}


def test_an_evening_burst_of_one_code_is_a_decline_mix_and_a_closed_night_forgets_it() -> None:
    memory = Memory(devices={DEVICE: DeviceMemory(site="s1", kind="terminal")})
    assert AlertType.DECLINE_MIX in run(memory, declines({"91": 12}), EVENING)
    # closed: no payments, so no window of this terminal, all night long
    t = EVENING + WINDOW_NS
    while t < NEXT_MORNING:
        run(memory, {}, t)
        t += WINDOW_NS
    # the first customers of the morning: a couple of ordinary declines
    assert AlertType.DECLINE_MIX not in run(memory, declines({"05": 2}), NEXT_MORNING)
    assert sum(memory.evidence[DEVICE].recent_declines.values()) < 3  # 13 h: 2^-13 of 12, + 2


def test_without_the_clock_the_same_morning_still_holds_the_evening() -> None:
    """The same burst followed at once by the morning's declines (no night between):
    what the night's decay is worth."""
    memory = Memory(devices={DEVICE: DeviceMemory(site="s1", kind="terminal")})
    run(memory, declines({"91": 12}), EVENING)
    assert AlertType.DECLINE_MIX in run(memory, declines({"05": 2}), EVENING + WINDOW_NS)
