"""Fleet-wide detectors: acquirer outages and card velocity (raised by the lead shard).

Acquirer outage (root cause across the fleet), CRITICAL: an acquirer whose
declines are far above its usual rate (a binomial tail below ``outage_p``),
failing most authorisations at half its sites or more, and either at
``outage_min_sites`` sites at once or mostly with codes that blame the
processing chain (91, 96) rather than the card (one site under card testing
declines with 05/14/54: not an outage; an acquirer that only one site uses
can still be seen failing by its codes); or whose sites' median latency is
``latency_factor`` times their usual at ``outage_min_sites`` sites and half
of them or more, with system declines whose binomial tail is under
``slow_declines_p``, in one window (slow alone may be a blip; one site is
enough only for an acquirer that one site uses: elsewhere it is one
terminal's failing route, its own alerts). An acquirer used by a few
terminals sends a handful of authorisations a window, too few for any one
window to be sure, so a sequential test accumulates the evidence over
windows: a CUSUM of each window's log-likelihood ratio of its system-coded
declines (91/96) under ``outage_system_share`` against the acquirer's usual
rate of them, crossing ``outage_cusum_threshold`` nats.

Degrading acquirer, the same alert at WARNING: its latency rising at most of
its sites, before it declines. Each window, each site's median latency is
taken against the site's usual (the median of its terminals' own baselines:
a site's network is its own; the acquirer's usual for a site without one),
and the lower median of those ln-ratios across its sites (a strict majority
of its sites is at least that slow) minus ln(``degrading_reference``),
clipped to +-``degrading_clip``, is added to a CUSUM carried in
`cloud.detectors.carried_state` (`LatencyRun`). A window with fewer than
``outage_min_sites`` sites adds nothing (one site cannot be told from its
own network). Crossing ``degrading_threshold`` with ``outage_min_sites``
sites and half of them or more at the reference raises it; it is held at the
threshold while the rise goes on and released once it drained to half.
The clip makes a short blip (a window or two) too little, and the reference
sits above a daily rush. While it is degrading, a second CUSUM of its
system-coded declines at ``degrading_system_share`` (10 x its usual at least)
against its usual share escalates it to CRITICAL at
``degrading_declines_threshold`` nats: declines have followed. Same key,
so `cloud.jobs.alert_lifecycle` fires the open alert again at CRITICAL (same
alert id) rather than opening a second one.

Either way one alert names the acquirer; its terminals' alerts it would
otherwise cause (approval drop, latency spike, decline-code mix) are not
raised: the acquirer is in the ``down`` set those detectors leave out.

Card velocity: one card used at ``velocity_terminals`` different terminals
in ``velocity_sites`` different sites within ``velocity_horizon_s``. Card
uses are remembered (bounded by the horizon) in `cloud.detectors.carried_state`. Cards that
the history shows at several sites within an hour (fleet cards, family
cards) are left out: that is their normal.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from typing import Final

from scipy.stats import binom

from cloud.detectors.carried_state import CardUse, LatencyRun, Memory
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
    latency_factor: float = 4.0  # slow this much at most sites, and declining: an outage
    slow_declines_p: float = 1e-3  # binomial tail of its system declines that is declining
    # degrading: a CUSUM over windows of the lower median, across its sites, of ln(site
    # median latency / its usual) minus ln(degrading_reference), each window clipped
    degrading_reference: float = 1.4  # x usual: a daily rush slows it less than this
    degrading_clip: float = 0.5  # nats a window adds at most: a 5-min blip cannot raise it
    degrading_threshold: float = 1.2  # nats: more than two clipped windows
    # while degrading: a CUSUM of its system-coded declines at this share (10 x usual at
    # least) against its usual share; crossing the threshold makes it CRITICAL
    degrading_system_share: float = 0.05
    degrading_declines_threshold: float = 9.0  # nats: about three of them close together
    velocity_terminals: int = 4
    velocity_sites: int = 4
    velocity_horizon_s: float = 1800.0


@dataclass(frozen=True, slots=True)
class AcquirerVerdict:
    """Why an acquirer is raised: CRITICAL once it declines, WARNING while it is only slow."""

    why: str
    severity: Severity


def down_acquirers(
    acquirers: dict[str, AcquirerWindow],
    memory: Memory,
    model: TrainedModel | None,
    settings: FleetSettings,
    *,
    start_ns: int,
    end_ns: int,
) -> dict[str, AcquirerVerdict]:
    """Acquirers that are failing or degrading in this window, and why; updates the memory."""
    down: dict[str, AcquirerVerdict] = {}
    site_usual = _site_latencies(model)
    for name, window in acquirers.items():
        usual = model.acquirer(name) if model is not None else None
        evidence = _system_decline_evidence(name, window, memory, usual, settings)
        known = site_usual.get(name, {})
        ratios = _latency_ratios(window, usual, known)
        # an acquirer that one site uses: that site's codes are all it has to go by
        slow_sites = 1 if len(known) == 1 else settings.outage_min_sites
        failing = _decline_burst(window, usual, settings) or _slow_and_declining(
            window, ratios, usual, settings, slow_sites
        )
        if evidence is not None and failing is None:
            failing = evidence
        slow = _latency_trend(name, ratios, memory, settings, (start_ns, end_ns))
        if failing is None and slow is not None:
            run = memory.acquirer_latency[name]
            failing = _declines_following(run, window, usual, settings)
        if failing is not None:
            why = failing if slow is None else f"{failing}; {slow}"
            down[name] = AcquirerVerdict(why, Severity.CRITICAL)
        elif slow is not None:
            down[name] = AcquirerVerdict(slow, Severity.WARNING)
    return down


def _decline_burst(
    window: AcquirerWindow, usual: AcquirerBaseline | None, settings: FleetSettings
) -> str | None:
    """Declines far above the usual rate in this one window, at most of its sites."""
    p0 = usual.decline_rate if usual is not None else DEFAULT_DECLINE_RATE
    declined = window.count - window.approved
    rate = declined / window.count if window.count else 0.0
    tail = float(binom.sf(declined - 1, window.count, p0)) if window.count else 1.0
    systemic = declined > 0 and window.system_declines >= settings.outage_system_share * declined
    if (
        tail < settings.outage_p
        and rate >= settings.outage_min_decline_rate
        and (window.failing_sites >= settings.outage_min_sites or systemic)
        and window.failing_sites * 2 >= window.sites
    ):
        return (
            f"{declined} of {window.count} authorisations declined ({rate:.0%}, usually "
            f"{p0:.1%}), {window.system_declines} of them with system codes (91/96), "
            f"most of them at {window.failing_sites} of {window.sites} sites"
        )
    return None


@functools.lru_cache(maxsize=2)  # per model: not every window over every terminal
def _site_latencies(model: TrainedModel | None) -> dict[str, dict[str, float]]:
    """Per acquirer, each site's usual median latency (ms): the median of its terminals'
    own (those with enough history to have one). Read only."""
    by_site: dict[tuple[str, str], list[float]] = {}
    for device in model.baselines.terminals if model is not None else ():
        own = model.own_baseline(device) if model is not None else None
        if own is not None and own.latency_log_median > 0.0:
            by_site.setdefault((own.acquirer, own.site), []).append(own.latency_log_median)
    out: dict[str, dict[str, float]] = {}
    for (acquirer, site), logs in by_site.items():
        out.setdefault(acquirer, {})[site] = math.exp(statistics.median(logs))
    return out


def _latency_ratios(
    window: AcquirerWindow, usual: AcquirerBaseline | None, site_usual: dict[str, float]
) -> list[float]:
    """ln(median latency / usual) of each of its sites in the window, sorted: against
    the site's own usual (its network's share), else the acquirer's."""
    if usual is None or not usual.latency_median_ms:
        return []
    return sorted(
        math.log(ms / site_usual.get(site, usual.latency_median_ms))
        for site, ms in window.site_latency_ms.items()
        if ms > 0
    )


def _slow_and_declining(
    window: AcquirerWindow,
    ratios: list[float],
    usual: AcquirerBaseline | None,
    settings: FleetSettings,
    min_sites: int,
) -> str | None:
    """``latency_factor`` x usual at ``min_sites`` sites and half of them or more, with
    system declines beyond chance, in this one window: an outage starting (slow alone may
    be a blip; one terminal's slow, failing route at one site is its own fault)."""
    slow = sum(r >= math.log(settings.latency_factor) for r in ratios)
    if usual is None or slow < min_sites or slow * 2 < len(ratios):
        return None
    p0 = usual.system_decline_rate
    system = window.system_declines
    if not system or binom.sf(system - 1, window.count, p0) >= settings.slow_declines_p:
        return None
    return (
        f"authorisations {math.exp(ratios[(len(ratios) - 1) // 2]):.0f} x slower than usual "
        f"at {slow} of {len(ratios)} sites, {system} of {window.count} declined with "
        f"system codes (91/96; usually {p0:.2%})"
    )


def _latency_trend(
    name: str,
    ratios: list[float],
    memory: Memory,
    settings: FleetSettings,
    span: tuple[int, int],
) -> str | None:
    """What the acquirer's latency CUSUM says while it is raised (module docstring)."""
    if not ratios:  # no payment through it, or no baseline: no evidence either way
        return None
    run = memory.acquirer_latency.setdefault(name, LatencyRun())
    typical = ratios[(len(ratios) - 1) // 2]  # a strict majority of its sites is this slow
    slow = sum(r >= math.log(settings.degrading_reference) for r in ratios)
    # one site alone cannot tell the acquirer from its own network: no evidence either way
    if len(ratios) >= settings.outage_min_sites:
        most = slow >= settings.outage_min_sites and slow * 2 >= len(ratios)
        _latency_step(run, typical, most, settings, span[0])
    if not run.raised:
        return None
    minutes = (span[1] - run.since_ns) / NS_PER_S / 60
    return (
        f"degrading: latency {math.exp(typical):.1f}x usual at {slow} of {len(ratios)} "
        f"sites, rising for {minutes:.0f} min"
    )


def _latency_step(
    run: LatencyRun, typical: float, most_slow: bool, settings: FleetSettings, start_ns: int
) -> None:
    """Add the window's evidence: raised at the threshold if most sites are slow, held
    there while the rise goes on, released once it drained to half."""
    if run.level == 0.0:  # a new run: it rises from this window on
        run.since_ns = start_ns
    clip = settings.degrading_clip
    step = min(clip, max(-clip, typical - math.log(settings.degrading_reference)))
    run.level = min(settings.degrading_threshold, max(0.0, run.level + step))
    if run.level >= settings.degrading_threshold:
        run.raised = run.raised or most_slow
    elif run.level < settings.degrading_threshold / 2:
        run.raised, run.declines = False, 0.0


def _declines_following(
    run: LatencyRun, window: AcquirerWindow, usual: AcquirerBaseline | None, settings: FleetSettings
) -> str | None:
    """A slow acquirer's system-coded declines, once they rose beyond chance."""
    p0 = usual.system_decline_rate if usual is not None else DEFAULT_SYSTEM_DECLINE_RATE
    p1 = max(settings.degrading_system_share, 10 * p0)
    run.declines = max(0.0, run.declines + _system_llr(window, p0, p1))
    if run.declines < settings.degrading_declines_threshold:
        return None
    run.declines = settings.degrading_declines_threshold  # held there while they go on
    return (
        f"declines follow: {window.system_declines} of {window.count} authorisations in the "
        f"window declined with system codes (91/96; usually {p0:.2%})"
    )


def _system_llr(window: AcquirerWindow, p0: float, p1: float) -> float:
    """Log-likelihood ratio of the window's system-coded declines at rate p1 against p0."""
    system, others = window.system_declines, window.count - window.system_declines
    return system * math.log(p1 / p0) + others * math.log((1 - p1) / (1 - p0))


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
    level = max(0.0, memory.acquirer_cusum.get(name, 0.0) + _system_llr(window, p0, p1))
    crossed = level >= settings.outage_cusum_threshold
    # restart halfway after a signal, as the terminals' approval-drop test does
    memory.acquirer_cusum[name] = settings.outage_cusum_threshold / 2 if crossed else level
    if not crossed:
        return None
    return (
        f"{window.system_declines} of {window.count} authorisations in the window declined "
        f"with system codes (91/96; usually {p0:.2%}), evidence over recent windows "
        f"{level:.1f} nats over the {settings.outage_cusum_threshold:.0f} threshold, at "
        f"{window.sites} site(s)"
    )


def slow_together(
    findings: list[Finding],
    acquirers: dict[str, AcquirerWindow],
    down: dict[str, AcquirerVerdict],
    settings: FleetSettings,
) -> dict[str, AcquirerVerdict]:
    """Acquirers whose terminals' latency spikes came together this window, at
    ``outage_min_sites`` sites or more and at least half of the sites it served: the
    acquirer slowing down (degrading), seen by its terminals' own tests a window or two
    before its trend is conclusive. Raised as that, they fold into it (root cause)."""
    sites_by_acquirer: dict[str, set[str]] = {}
    for finding in findings:
        if finding.type == AlertType.LATENCY_SPIKE and finding.acquirer and finding.site:
            sites_by_acquirer.setdefault(finding.acquirer, set()).add(finding.site)
    together: dict[str, AcquirerVerdict] = {}
    for name, sites in sites_by_acquirer.items():
        window = acquirers.get(name)
        if name in down or window is None:
            continue
        if len(sites) >= settings.outage_min_sites and 2 * len(sites) >= window.sites:
            why = (
                f"degrading: its terminals slowed together at {len(sites)} of its "
                f"{window.sites} sites (their own latency tests crossed in the same window)"
            )
            together[name] = AcquirerVerdict(why, Severity.WARNING)
    return together


def acquirer_findings(down: dict[str, AcquirerVerdict], end_ns: int) -> list[Finding]:
    """One finding per raised acquirer; a degrading one keeps its key as it escalates."""
    return [
        Finding(
            type=AlertType.ACQUIRER_OUTAGE,
            detector="fleet.acquirer_outage",
            severity=verdict.severity,
            score=1.0 if verdict.severity is Severity.CRITICAL else 0.5,
            ts=end_ns,
            acquirer=name,
            summary=(
                f"acquirer {name} is failing: {verdict.why}; its terminals' declines are "
                "this outage"
                if verdict.severity is Severity.CRITICAL
                else f"acquirer {name} is {verdict.why}; its terminals' slow authorisations "
                "are this incident"
            ),
        )
        for name, verdict in sorted(down.items())
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
