"""Fleet-wide detectors: acquirer outages and card velocity (raised by the lead shard).

Acquirer outage (root cause across the fleet): an acquirer whose declines
are far above its usual rate (a binomial tail below ``outage_p``), failing
most authorisations at half its sites or more, and either at
``outage_min_sites`` sites at once or mostly with codes that blame the
processing chain (91, 96) rather than the card (one site under card testing
declines with 05/14/54: not an outage; an acquirer that only one site uses
can still be seen failing by its codes); or whose median authorisation
latency is ``latency_factor`` times its usual, at ``outage_min_sites`` sites
and most of its sites. An acquirer used by a few
terminals sends a handful of authorisations a window, too few for any one
window to be sure, so a sequential test accumulates the evidence over
windows: a CUSUM of each window's log-likelihood ratio of its system-coded
declines (91/96) under ``outage_system_share`` against the acquirer's usual
rate of them, crossing ``outage_cusum_threshold`` nats. One alert names the acquirer;
the terminal alerts it would otherwise cause are not raised.

Card velocity: one card used at ``velocity_terminals`` different terminals
in ``velocity_sites`` different sites within ``velocity_horizon_s``. Card
uses are remembered (bounded by the horizon) in `cloud.detectors.carried_state`. Cards that
the history shows at several sites within an hour (fleet cards, family
cards) are left out: that is their normal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from scipy.stats import binom

from cloud.detectors.carried_state import CardUse, Memory
from cloud.detectors.findings import Finding
from cloud.detectors.trained_model import AcquirerBaseline, TrainedModel
from cloud.reading.influxql_reader import Table
from cloud.reading.window import AcquirerWindow
from wire.incidents import AlertType
from wire.messages import Severity
from wire.timestamps import NS_PER_S

DEFAULT_DECLINE_RATE: Final = 0.05
DEFAULT_SYSTEM_DECLINE_RATE: Final = 0.002


@dataclass(frozen=True, slots=True)
class FleetSettings:
    outage_p: float = 1e-9  # binomial tail of the window's declines under the usual rate
    outage_min_decline_rate: float = 0.3
    outage_min_sites: int = 2
    outage_system_share: float = 0.6  # of the declines, with a processing-chain code
    outage_cusum_threshold: float = 12.0  # nats; as the terminals' approval-drop test
    latency_factor: float = 4.0
    velocity_terminals: int = 4
    velocity_sites: int = 4
    velocity_horizon_s: float = 1800.0


def down_acquirers(
    acquirers: dict[str, AcquirerWindow],
    memory: Memory,
    model: TrainedModel | None,
    settings: FleetSettings,
) -> dict[str, str]:
    """Acquirers that are failing in this window, with what was seen; updates the memory."""
    down: dict[str, str] = {}
    for name, window in acquirers.items():
        usual = model.acquirer(name) if model is not None else None
        p0 = usual.decline_rate if usual is not None else DEFAULT_DECLINE_RATE
        evidence = _system_decline_evidence(name, window, memory, usual, settings)
        declined = window.count - window.approved
        rate = declined / window.count if window.count else 0.0
        tail = float(binom.sf(declined - 1, window.count, p0)) if window.count else 1.0
        systemic = (
            declined > 0 and window.system_declines >= settings.outage_system_share * declined
        )
        reasons = []
        if (
            tail < settings.outage_p
            and rate >= settings.outage_min_decline_rate
            and (window.failing_sites >= settings.outage_min_sites or systemic)
            and window.failing_sites * 2 >= window.sites
        ):
            reasons.append(
                f"{declined} of {window.count} authorisations declined ({rate:.0%}, usually "
                f"{p0:.1%}), {window.system_declines} of them with system codes (91/96), "
                f"most of them at {window.failing_sites} of {window.sites} sites"
            )
        if usual is not None and window.latency_median_ms is not None and usual.latency_median_ms:
            factor = window.latency_median_ms / usual.latency_median_ms
            slow_limit = settings.latency_factor * usual.latency_median_ms
            slow = sum(ms >= slow_limit for ms in window.site_latency_ms)
            # slow at several sites and most of them: one slow terminal is its own fault
            if (
                factor >= settings.latency_factor
                and slow >= settings.outage_min_sites
                and slow * 2 >= window.sites
            ):
                reasons.append(
                    f"median authorisation latency {window.latency_median_ms:.0f} ms, "
                    f"{factor:.0f} x its usual {usual.latency_median_ms:.0f} ms, "
                    f"slow at {slow} of {window.sites} sites"
                )
        if evidence is not None and not reasons:
            reasons.append(evidence)
        if reasons:
            down[name] = "; ".join(reasons)
    return down


def _system_decline_evidence(
    name: str,
    window: AcquirerWindow,
    memory: Memory,
    usual: AcquirerBaseline | None,
    settings: FleetSettings,
) -> str | None:
    """The acquirer's CUSUM over windows of system-coded declines, if it crossed."""
    p0 = usual.system_decline_rate if usual is not None else DEFAULT_SYSTEM_DECLINE_RATE
    p1 = max(settings.outage_system_share, 10 * p0)
    system, others = window.system_declines, window.count - window.system_declines
    step = system * math.log(p1 / p0) + others * math.log((1 - p1) / (1 - p0))
    level = max(0.0, memory.acquirer_cusum.get(name, 0.0) + step)
    crossed = level >= settings.outage_cusum_threshold
    # restart halfway after a signal, as the terminals' approval-drop test does
    memory.acquirer_cusum[name] = settings.outage_cusum_threshold / 2 if crossed else level
    if not crossed:
        return None
    return (
        f"{system} of {window.count} authorisations in the window declined with system codes "
        f"(91/96; usually {p0:.2%}), evidence over recent windows {level:.1f} nats over the "
        f"{settings.outage_cusum_threshold:.0f} threshold, at {window.sites} site(s)"
    )


def acquirer_findings(down: dict[str, str], end_ns: int) -> list[Finding]:
    return [
        Finding(
            type=AlertType.ACQUIRER_OUTAGE,
            detector="fleet.acquirer_outage",
            severity=Severity.CRITICAL,
            score=1.0,
            ts=end_ns,
            acquirer=name,
            summary=f"acquirer {name} is failing: {why}; its terminals' declines are this outage",
        )
        for name, why in sorted(down.items())
    ]


def velocity_findings(
    uses: Table,
    memory: Memory,
    model: TrainedModel | None,
    end_ns: int,
    settings: FleetSettings,
) -> list[Finding]:
    horizon = end_ns - int(settings.velocity_horizon_s * NS_PER_S)
    usual = set(model.baselines.multi_site_cards) if model is not None else set()
    touched: set[str] = set()
    for ts, device, site, card in zip(
        uses.time, uses["device"], uses["site"], uses["card_token"], strict=True
    ):
        memory.cards.setdefault(card, []).append(CardUse(int(ts), site, device))
        touched.add(card)
    for card in list(memory.cards):
        recent = [use for use in memory.cards[card] if use.ts_ns >= horizon]
        if recent:
            memory.cards[card] = recent
        else:
            del memory.cards[card]
    findings: list[Finding] = []
    for card in sorted(touched - usual):
        recent = memory.cards.get(card, [])
        devices = {use.device for use in recent}
        sites = {use.site for use in recent}
        if len(devices) < settings.velocity_terminals or len(sites) < settings.velocity_sites:
            continue
        last = max(recent, key=lambda use: use.ts_ns)
        minutes = (last.ts_ns - min(use.ts_ns for use in recent)) / NS_PER_S / 60
        findings.append(
            Finding(
                type=AlertType.CARD_VELOCITY,
                detector="fraud.card_velocity",
                severity=Severity.CRITICAL,
                score=min(1.0, len(devices) / (2 * settings.velocity_terminals)),
                ts=end_ns,
                site=last.site,
                device=last.device,
                subject=card,
                summary=(
                    f"card {card} used at {len(devices)} terminals in {len(sites)} sites "
                    f"within {minutes:.0f} minutes ({', '.join(sorted(sites)[:8])}); "
                    "a card is normally used at one place at a time"
                ),
                evidence={"terminals": len(devices), "sites": len(sites)},
            )
        )
    return findings
