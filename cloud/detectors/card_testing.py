"""Card testing: stolen card numbers tried with small keyed-in payments, slow or fast.

A *probe-like* payment is online, keyed in by hand, of low value for its
terminal, and on a card its site has not seen lately (not keyed in there in the
last ``card_memory_s``, not read from a card there in the same window, not
earlier in the window). Low value is below the terminal's own ~5th percentile,
``exp(amount_log_median - 1.645 * amount_log_sigma)`` from its baseline, and
below ``ceiling_minor`` (10.00): a probe must cost the tester little and go
unnoticed by the cardholder, so a jeweller's smallest usual sale is no probe.
Without a model it is the fixed 2.00 (`MICRO_AMOUNT_MINOR`). A decline with a
system code (91/96) says nothing of the card: such a payment is left out.

The evidence is a CUSUM of the log-likelihood ratio of a marked Poisson process,
kept per site (all its terminals) and per acquirer (its sites), carried across
windows in `Memory.probe_sites` / `probe_acquirers`. In normal trade probe-like
payments arrive at ``mu0 = max(share * payments, normal_floor_per_hour * T)`` in a
window of T hours, ``normal_declined`` of them declined with a card code (05, 14,
51, 54, 57...); card testing adds ``extra = attack_per_hour * T`` more,
``probe_declined`` of them declined so. Each probe-like payment adds
``ln(1 + extra * q1 / (mu0 * q0))`` when declined with a card code and
``ln(1 + extra * (1 - q1) / (mu0 * (1 - q0)))`` otherwise; each window subtracts
``extra``; the sum is floored at 0. Crossing ``threshold`` (12 nats) raises
card_testing. By Lorden's bound a site in normal trade waits at least e^12
windows for a false signal while ``share`` is not below its true share: the
larger of ``normal_share`` (10 % keyed in x 5 % below the 5th percentile) and
``learn_margin`` x the share the site is seen to have in calm windows
(`Memory.probe_share`, its newest ~20,000 payments over a prior of 2,000 at
``normal_share``), so a shop that keys in a third of its trade learns it. A
burst of 4+ declined probes crosses in the window it happens in; three terminals
probed every 2 minutes cross in their first window; one probe every 10 minutes
at one quiet terminal in 25-55 minutes. After a signal the level is held at the
threshold and drains when the probes stop.

The acquirer's test adds up the probe-like payments of its sites whose own test
has not signalled: card testing spread thinly over many merchants.

Alerts: a site's signal gives a finding per terminal that took probes since the
site's evidence rose from 0, at least half as many as the most probed one: the
key stays per terminal, so the lifecycle keeps one alert per terminal for the
whole site incident, the payment KPIs know which terminals it explains, and an
operator knows which keyed entry to lock. Each names the site, its probed
terminals, the probes, the new cards, their decline codes and how long. An
acquirer's signal is one finding naming the acquirer, its sites and terminals.
The IsolationForest trained on normal windows scores how unusual the terminal's
window is; the alert quotes it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from cloud.detectors.carried_state import Memory, ProbeRun, ProbeShare
from cloud.detectors.findings import Finding
from cloud.detectors.fraud_features import MICRO_AMOUNT_MINOR, KeyedPayment, TerminalWindow
from cloud.detectors.trained_model import TrainedModel
from cloud.reading.window import SYSTEM_DECLINE_CODES
from wire.incidents import AlertType
from wire.messages import Severity
from wire.timestamps import NS_PER_HOUR, NS_PER_S

# issuer declines about the card itself: what a tester learns from a probe
PROBE_CODES: Final = frozenset(
    {"04", "05", "14", "15", "41", "43", "51", "54", "56", "57", "59", "62"}
)
LOW_QUANTILE_Z: Final = -1.645  # the 5th percentile of a normal ln(amount)


@dataclass(frozen=True, slots=True)
class CardTestingSettings:
    threshold: float = 12.0  # nats
    attack_per_hour: float = 12.0  # extra probes an hour the test is tuned to
    # share of payments probe-like in normal trade: 10 % keyed in x 5 % below the 5th percentile,
    # or learn_margin x the share a site is seen to have, if more (a prior of prior_payments)
    normal_share: float = 0.005
    learn_margin: float = 2.0
    prior_payments: int = 2_000
    learn_payments: int = 20_000  # the site's newest payments or so make its share
    normal_floor_per_hour: float = 0.1  # a quiet or closed site
    normal_declined: float = 0.15  # of normal probe-like payments, declined with a card code
    probe_declined: float = 0.7  # of probes
    ceiling_minor: int = 1000  # a probe is below 10.00 whatever the terminal sells
    card_memory_s: int = 86_400  # "seen lately" at a site
    cards_per_site: int = 256  # keyed-in cards remembered per site (the newest)


@dataclass(slots=True)
class ProbeCount:
    """A terminal's probe-like payments in one window: approval drop leaves them out."""

    online: int = 0
    declined: int = 0


@dataclass(slots=True)
class _Pool:
    """A site's or an acquirer's window as the test sees it."""

    payments: int = 0
    usual: float = 0.0  # probe-like payments expected in normal trade
    probes: int = 0  # keyed-in low-value
    cards: list[KeyedPayment] = field(default_factory=list)  # of them on a new card
    devices: Counter[str] = field(default_factory=Counter)
    sites: Counter[str] = field(default_factory=Counter)

    def add(self, other: _Pool) -> None:
        self.payments += other.payments
        self.usual += other.usual
        self.probes += other.probes
        self.cards += other.cards
        self.devices.update(other.devices)
        self.sites.update(other.sites)


@dataclass(slots=True)
class CardTesting:
    findings: list[Finding]
    probes: dict[str, ProbeCount]  # by device


def low_value_limit(model: TrainedModel | None, device: str, mcc: str, ceiling: int) -> int:
    """Amounts (minor units) below this are low for the terminal."""
    if model is None:
        return MICRO_AMOUNT_MINOR
    baseline = model.baseline_for(device, mcc)
    fifth = math.exp(baseline.amount_log_median + LOW_QUANTILE_Z * baseline.amount_log_sigma)
    return min(ceiling, math.ceil(fifth))


def card_testing(  # noqa: PLR0917 - the window, what is known, and the settings
    windows: dict[str, TerminalWindow],
    memory: Memory,
    model: TrainedModel | None,
    unusual: dict[str, float],
    start_ns: int,
    end_ns: int,
    settings: CardTestingSettings,
) -> CardTesting:
    """Card-testing findings of the window ``[start, end)``; updates the memory."""
    hours = (end_ns - start_ns) / NS_PER_HOUR
    probes: dict[str, ProbeCount] = {}
    sites: dict[str, _Pool] = {}
    acquirer_of: dict[str, str] = {}
    for site, terminals in _by_site(windows).items():
        sites[site] = _observe(site, terminals, memory, model, end_ns, settings, probes)
        acquirer_of[site] = terminals[0][1].acquirer
    findings: list[Finding] = []
    acquirers: dict[str, _Pool] = {}
    for site in sorted(sites.keys() | memory.probe_sites.keys()):
        pool = sites.get(site, _Pool())
        before = memory.probe_sites.get(site, ProbeRun()).level
        level = _step(memory.probe_sites, site, pool, hours, start_ns, settings)
        after = memory.probe_sites.get(site, ProbeRun()).level
        if site in sites and max(before, after) < settings.threshold / 2:
            _learn(memory.probe_share.setdefault(site, ProbeShare()), pool, settings)
        if level is not None:
            run = memory.probe_sites[site]
            findings += _site_findings(site, run, unusual, end_ns, _score(level, settings))
        elif site in acquirer_of:
            acquirers.setdefault(acquirer_of[site], _Pool()).add(pool)
    for acquirer in sorted(acquirers.keys() | memory.probe_acquirers.keys()):
        pool = acquirers.get(acquirer, _Pool())
        level = _step(memory.probe_acquirers, acquirer, pool, hours, start_ns, settings)
        if level is not None:
            run = memory.probe_acquirers[acquirer]
            findings.append(_acquirer_finding(acquirer, run, end_ns, _score(level, settings)))
    return CardTesting(findings, probes)


def _by_site(
    windows: dict[str, TerminalWindow],
) -> dict[str, list[tuple[str, TerminalWindow]]]:
    sites: dict[str, list[tuple[str, TerminalWindow]]] = {}
    for device, window in sorted(windows.items()):
        sites.setdefault(window.site, []).append((device, window))
    return sites


def _observe(  # noqa: PLR0917
    site: str,
    terminals: list[tuple[str, TerminalWindow]],
    memory: Memory,
    model: TrainedModel | None,
    end_ns: int,
    settings: CardTestingSettings,
    probes: dict[str, ProbeCount],
) -> _Pool:
    """The site's probe-like payments of the window; remembers its keyed-in cards."""
    known = _recent_cards(memory, site, end_ns, settings)
    presented = set().union(*(window.presented for _, window in terminals))
    pool = _Pool()
    for device, window in terminals:
        pool.payments += window.payments
        limit = low_value_limit(model, device, window.mcc, settings.ceiling_minor)
        for payment in window.keyed:
            if payment.amount_minor >= limit or payment.code in SYSTEM_DECLINE_CODES:
                continue
            pool.probes += 1
            pool.devices[device] += 1
            pool.sites[site] += 1
            if payment.card in known or payment.card in presented:
                continue
            known[payment.card] = end_ns
            pool.cards.append(payment)
            count = probes.setdefault(device, ProbeCount())
            count.online += 1
            count.declined += not payment.approved
    _remember(memory, site, known, settings.cards_per_site)
    pool.usual = pool.payments * _usual_share(memory.probe_share.get(site), settings)
    return pool


def _usual_share(seen: ProbeShare | None, settings: CardTestingSettings) -> float:
    if seen is None:
        return settings.normal_share
    prior = settings.prior_payments
    learned = (seen.probe_like + settings.normal_share * prior) / (seen.payments + prior)
    return max(settings.normal_share, settings.learn_margin * learned)


def _learn(seen: ProbeShare, pool: _Pool, settings: CardTestingSettings) -> None:
    """Count a calm window (its test stayed under half the threshold) as normal trade."""
    seen.probe_like += len(pool.cards)
    seen.payments += pool.payments
    if seen.payments > settings.learn_payments:
        keep = settings.learn_payments / seen.payments
        seen.probe_like, seen.payments = seen.probe_like * keep, seen.payments * keep


def _recent_cards(
    memory: Memory, site: str, end_ns: int, settings: CardTestingSettings
) -> dict[str, int]:
    """The site's keyed-in cards of the last ``card_memory_s``."""
    oldest = end_ns - settings.card_memory_s * NS_PER_S
    return {card: ns for card, ns in memory.keyed_cards.get(site, {}).items() if ns >= oldest}


def _remember(memory: Memory, site: str, known: dict[str, int], keep: int) -> None:
    if not known:
        memory.keyed_cards.pop(site, None)
        return
    # insertion order is time order: the first ones are the oldest
    memory.keyed_cards[site] = dict(list(known.items())[-keep:])


def _step(  # noqa: PLR0917
    runs: dict[str, ProbeRun],
    key: str,
    pool: _Pool,
    hours: float,
    start_ns: int,
    settings: CardTestingSettings,
) -> float | None:
    """One window of the CUSUM of ``runs[key]``; its level if it signals."""
    run = runs.get(key) or ProbeRun(since_ns=start_ns)
    level = max(0.0, run.level + _llr(pool, hours, settings))
    if level == 0.0:
        runs.pop(key, None)  # only evidence above 0 is carried: bounded by the attacks
        return None
    runs[key] = run
    _count(run, pool)
    signals = level >= settings.threshold
    # held at the threshold after a signal: an attack that goes on keeps it there
    run.level = min(level, settings.threshold)
    return level if signals else None


def _llr(pool: _Pool, hours: float, settings: CardTestingSettings) -> float:
    """Log-likelihood ratio of the window: card testing at ``attack_per_hour`` vs normal."""
    usual = max(pool.usual, settings.normal_floor_per_hour * hours)
    extra = settings.attack_per_hour * hours
    q0, q1 = settings.normal_declined, settings.probe_declined
    declined = math.log1p(extra * q1 / (usual * q0))
    other = math.log1p(extra * (1 - q1) / (usual * (1 - q0)))
    return sum(declined if _card_declined(p) else other for p in pool.cards) - extra


def _card_declined(payment: KeyedPayment) -> bool:
    return not payment.approved and payment.code in PROBE_CODES


def _count(run: ProbeRun, pool: _Pool) -> None:
    run.probes += pool.probes
    run.cards += len(pool.cards)
    for payment in pool.cards:
        if not payment.approved:
            run.declined += 1
            run.codes[payment.code] = run.codes.get(payment.code, 0) + 1
    for device, n in pool.devices.items():
        run.devices[device] = run.devices.get(device, 0) + n
    for site, n in pool.sites.items():
        run.sites[site] = run.sites.get(site, 0) + n


def _site_findings(
    site: str, run: ProbeRun, unusual: dict[str, float], end_ns: int, score: float
) -> list[Finding]:
    what = (
        f"card testing at site {site}: {_tally(run, end_ns)} at "
        f"{len(run.devices)} terminal(s) ({_top(run.devices.items())})"
    )
    findings = []
    most = max(run.devices.values(), default=0)
    # the attack's terminals, not one that took a stray keyed-in payment meanwhile
    for device in sorted(d for d, n in run.devices.items() if 2 * n >= most):
        model_score = unusual.get(device)
        unusual_text = (
            "" if model_score is None else f"; fraud model anomaly score {model_score:.2f}"
        )
        findings.append(
            Finding(
                type=AlertType.CARD_TESTING,
                detector="fraud.card_testing",
                severity=Severity.CRITICAL,
                score=max(model_score or 0.0, score),
                ts=end_ns,
                site=site,
                device=device,
                summary=f"{device}: {what}{unusual_text}",
                evidence=_evidence(run, end_ns),
            )
        )
    return findings


def _acquirer_finding(acquirer: str, run: ProbeRun, end_ns: int, score: float) -> Finding:
    return Finding(
        type=AlertType.CARD_TESTING,
        detector="fraud.card_testing",
        severity=Severity.CRITICAL,
        score=score,
        ts=end_ns,
        acquirer=acquirer,
        summary=(
            f"card testing spread over acquirer {acquirer}: {_tally(run, end_ns)} at "
            f"{len(run.sites)} site(s) ({_top(run.sites.items())}), "
            f"{len(run.devices)} terminal(s) ({_top(run.devices.items())})"
        ),
        evidence=_evidence(run, end_ns),
    )


def _tally(run: ProbeRun, end_ns: int) -> str:
    minutes = (end_ns - run.since_ns) / (60 * NS_PER_S)
    return (
        f"{run.probes} low-value keyed-in payments, {run.cards} on cards new to the site, "
        f"{run.declined} declined (codes {_top(run.codes.items()) or 'none'}) "
        f"over {minutes:.0f} min"
    )


def _top(counts: Iterable[tuple[str, int]], shown: int = 8) -> str:
    ranked = sorted(counts, key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{name} x{n}" for name, n in ranked[:shown])
    return text + (f", +{len(ranked) - shown} more" if len(ranked) > shown else "")


def _score(level: float, settings: CardTestingSettings) -> float:
    return min(1.0, level / (2 * settings.threshold))


def _evidence(run: ProbeRun, end_ns: int) -> dict[str, float | int | str]:
    return {
        "probes": run.probes,
        "cards": run.cards,
        "declined": run.declined,
        "minutes": (end_ns - run.since_ns) / (60 * NS_PER_S),
        "terminals": len(run.devices),
    }
