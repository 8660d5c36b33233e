"""Payment KPIs per terminal against its own baselines: volume, latency, decline codes.

(The fourth KPI, the approval rate, is `cloud.detectors.payments`' approval drop.) A
terminal takes a payment or two in a window, so one window alone says
little: each detector accumulates evidence across windows in
`Memory.evidence`, and the evidence, not the clock, decides. Each leaves
out what another finding of the same window already explains (root cause).
A CUSUM that signals is held at its threshold: while the change goes on the
next window signals again (one alert, kept open); once it ends, it drains.

Volume drop / surge: two negative-binomial CUSUMs on the terminal's online
payments per window against the count its hour-of-week rates
(`Baseline.rate_per_hour`) expect, for a fall to ``volume_drop_to`` and a rise
to ``volume_surge_to`` times the usual. Real hourly counts vary more than
Poisson: an hour's count is Poisson at the rate times a gamma factor of mean 1
and variance ``dispersion`` (learned per terminal and hour of the week,
`TerminalBaseline.dispersion`), so the count of the hour so far is negative
binomial, variance ``mu + dispersion mu^2``, and the windows of one hour share
that factor. Each window adds the log-likelihood ratio of its count given the
earlier windows of the same clock hour (`nb_llr` of the hour so far, minus
that of the hour before this window); with ``dispersion`` 0 that is the
Poisson ``n ln(ratio) - expected (ratio - 1)``. Crossing ``volume_threshold``
nats signals (the sum of conditional log-likelihood ratios is a likelihood
ratio: Lorden's bound, at least e^threshold windows between false alarms when
the baseline is right). The baseline is an estimate from a few weeks: the
expected count is taken at the cautious end of its 2-sigma range, sigma from
the negative-binomial variance (the low end for a drop, the high end for a
surge), and only hours of the week with ``volume_min_weeks`` sightings or more
behind their rate are judged (`TerminalBaseline.rate_weight`: its own days 1 each,
the same hour of the other days of its kind a quarter each, since any change of
its opening hours: `cloud.detectors.volume_baseline`; a week of history judges
the weekdays; fewer: a closed Sunday seen once cannot be told from a quiet one;
models without it: the sightings of each hour of the week in its history).
Payments an attack adds (card testing) explain a surge; a terminal that is
offline, on a site whose network is down, authorising offline or cleanly shut
down explains a drop.

The operator calendar (`wire.calendar`, optional) is context: on a sale day a
surge is at most ``info`` (a note; its summary names the day), on a holiday both
sides are, on a closed day no drop is judged (a surge stays a warning: a closed
shop taking payments). New opening hours are learnt live too: a clock hour that
has been quiet (windows at most ``volume_drop_to`` times the usual count, missing
``QUIET_MIN_USUAL`` payments that day; calendar days do not count) on
``volume_quiet_days`` days in a row is
not judged for a drop from the next day, until a window of it trades as usual
again (`TerminalEvidence.quiet_hours`): a merchant who changed hours after the
training is raised on the first mornings at most; a terminal connected but
silent for days keeps its drop for those days, then its silence is its hours.

Latency spike: a CUSUM over the terminal's online authorisations, in arrival
order, of ln(latency) in robust sigmas of its own baseline minus
``latency_reference``, each clipped at ``latency_clip`` so that the slow tail
every acquirer has cannot raise it alone; ``latency_threshold`` sigmas signal.
A terminal whose acquirer is down is left out: the acquirer outage
(`cloud.detectors.fleet_wide`) is the root cause.

Decline-code mix: the terminal's online declines by response code, decayed
with a half-life of ``codes_half_life_s`` by the clock (a closed night fades
them too), against its usual mix (its own, shrunk to its merchant category's):
a G-test below ``codes_p``, and the code that rose the most at ``codes_rise``
times its usual share. Left out: an acquirer that is down (its 91/96 codes)
and card testing (its probes' declines).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final

from scipy.stats import chi2

from cloud.detectors.carried_state import CountRun, Memory, QuietHour, TerminalEvidence
from cloud.detectors.findings import Evidence, Finding
from cloud.detectors.fraud_features import TerminalWindow
from cloud.detectors.trained_model import (
    TerminalBaseline,
    TrainedModel,
    hour_of_week,
    hours_of_week_seen,
)
from cloud.reading.window import DeviceStates
from wire.calendar import Calendar, CalendarDay, DayKind
from wire.incidents import AlertType
from wire.messages import Severity
from wire.timestamps import NS_PER_DAY, NS_PER_HOUR, NS_PER_S

UNSEEN_CODE_SHARE: Final = 0.01  # a decline code the baseline never saw
FORGET_BELOW: Final = 0.01  # decayed decline counts under this are dropped from memory
QUIET_MIN_USUAL: Final = 2.0  # payments a clock hour must miss in a day to count as quiet

DROP_EXPLAINED_BY: Final = frozenset(
    {AlertType.TERMINAL_OFFLINE, AlertType.OFFLINE_BACKLOG, AlertType.SITE_NETWORK}
)
SURGE_EXPLAINED_BY: Final = frozenset({AlertType.CARD_TESTING})
CODES_EXPLAINED_BY: Final = frozenset({AlertType.CARD_TESTING})


@dataclass(frozen=True, slots=True)
class KpiSettings:
    volume_threshold: float = 12.0  # nats
    volume_drop_to: float = 0.25  # the fall tested for: to a quarter of the usual
    volume_surge_to: float = 3.0  # the rise tested for: three times the usual
    volume_min_weeks: int = 2  # sightings of an hour of the week before it is judged
    volume_floor_per_hour: float = 1.0  # surge: expect at least this (a closed shop's refund)
    volume_quiet_days: int = 2  # a clock hour quiet this many days in a row: new hours
    latency_threshold: float = 10.0  # robust sigmas of ln(latency), accumulated
    latency_reference: float = 1.5  # sigmas each payment must exceed to add evidence
    latency_clip: float = 4.0  # sigmas: one slow answer adds at most clip - reference
    codes_half_life_s: float = 3600.0
    codes_min_declines: float = 8.0
    codes_p: float = 1e-6
    codes_rise: float = 3.0  # the rising code's share, as a multiple of its usual share


@dataclass(frozen=True, slots=True)
class Explained:
    """Who this window's other findings and the broker already account for."""

    devices: dict[str, set[str]]  # device -> alert types raised for it this window
    sites: set[str]  # sites whose network is down
    shut_down: set[str]  # devices the broker saw stop cleanly
    acquirers: set[str]  # acquirers that are down

    @classmethod
    def of(
        cls, findings: list[Finding], states: dict[str, DeviceStates], down_acquirers: set[str]
    ) -> Explained:
        devices: dict[str, set[str]] = {}
        for finding in findings:
            if finding.device is not None:
                devices.setdefault(finding.device, set()).add(finding.type)
        return cls(
            devices=devices,
            sites={f.site for f in findings if f.type == AlertType.SITE_NETWORK and f.site},
            shut_down={device for device, state in states.items() if state.shut_down},
            acquirers=down_acquirers,
        )

    def by(self, device: str, types: frozenset[AlertType]) -> bool:
        return not types.isdisjoint(self.devices.get(device, ()))


@dataclass(frozen=True, slots=True)
class _Cycle:
    """One window as the detectors see it."""

    start_ns: int
    end_ns: int
    explained: Explained
    settings: KpiSettings
    trained_to_ns: int
    calendar: Calendar | None


def kpi_findings(  # noqa: PLR0917 - the window, what is known, and the settings
    windows: dict[str, TerminalWindow],
    memory: Memory,
    model: TrainedModel | None,
    explained: Explained,
    start_ns: int,
    end_ns: int,
    settings: KpiSettings,
    *,
    calendar: Calendar | None = None,
) -> list[Finding]:
    """Volume, latency and decline-code findings for the terminals of this window;
    ``calendar``: the operator's days, context for the volume findings."""
    if model is None:
        return []
    trained_to = model.baselines.trained_to_ns
    cycle = _Cycle(start_ns, end_ns, explained, settings, trained_to, calendar)
    findings: list[Finding] = []
    terminals = {d for d, state in memory.devices.items() if state.kind == "terminal"}
    for device in sorted(terminals | windows.keys()):
        window = windows.get(device)
        site = window.site if window is not None else memory.devices[device].site
        evidence = memory.evidence.setdefault(device, TerminalEvidence())
        own = model.own_baseline(device)
        if own is not None:
            findings += _volume(device, site, window, evidence, own, cycle)
        if window is None:
            _decay_declines(evidence, end_ns, settings)  # a closed shop's evidence fades too
            continue
        if own is not None:
            latency = _latency(device, window, evidence, own, cycle)
            if latency is not None:
                findings.append(latency)
        mix = model.baseline_for(device, window.mcc).decline_codes
        codes = _decline_mix(device, window, evidence, mix, cycle)
        if codes is not None:
            findings.append(codes)
    return findings


def poisson_llr(count: int, expected: float, ratio: float) -> float:
    """Log-likelihood ratio of ``count`` under a Poisson mean of ``ratio x expected``
    against one of ``expected``."""
    return count * math.log(ratio) - expected * (ratio - 1.0)


def nb_llr(count: int, expected: float, ratio: float, dispersion: float) -> float:
    """Log-likelihood ratio of ``count`` under a negative binomial of mean ``ratio x
    expected`` against one of mean ``expected``, both of variance ``mu + dispersion mu^2``
    (size k = 1 / dispersion); Poisson when ``dispersion`` is 0."""
    if dispersion <= 0.0:
        return poisson_llr(count, expected, ratio)
    k = 1.0 / dispersion
    return count * math.log(ratio) + (count + k) * math.log((k + expected) / (k + ratio * expected))


def _expected(
    own: TerminalBaseline, cycle: _Cycle, floor_per_hour: float, sigmas: float
) -> tuple[float, float]:
    """Expected online payments in the window at ``sigmas`` standard errors from the
    hour-of-week estimate (``floor_per_hour`` at least), and the fewest sightings of
    the hours it spans in the terminal's history."""
    seen = own.rate_weight or _seen(cycle.trained_to_ns, own.history_hours)
    expected, fewest = 0.0, float(1 << 30)
    t = cycle.start_ns
    while t < cycle.end_ns:
        hour_end = min(cycle.end_ns, t - t % NS_PER_HOUR + NS_PER_HOUR)
        how = hour_of_week(t)
        rate = max(own.rate_per_hour[how], floor_per_hour)
        variance = rate + _dispersion(own, how) * rate * rate  # of one hour's count
        error = math.sqrt(variance / max(1.0, seen[how]))  # of a mean over seen[how] hours
        expected += max(0.0, rate + sigmas * error) * (hour_end - t) / NS_PER_HOUR
        fewest = min(fewest, seen[how])
        t = hour_end
    return expected, fewest


def _dispersion(own: TerminalBaseline, how: int) -> float:
    return own.dispersion[how] if own.dispersion else 0.0


@functools.cache
def _seen(trained_to_ns: int, history_hours: float) -> list[int]:
    return hours_of_week_seen(trained_to_ns - round(history_hours * NS_PER_HOUR), trained_to_ns)


def _volume(  # noqa: PLR0917
    device: str,
    site: str,
    window: TerminalWindow | None,
    evidence: TerminalEvidence,
    own: TerminalBaseline,
    cycle: _Cycle,
) -> list[Finding]:
    settings, explained = cycle.settings, cycle.explained
    count = window.online if window is not None else 0
    day = _calendar_day(cycle, site, window.mcc if window is not None else own.mcc)
    # a calendar day is not a usual one: it says nothing about the hours
    new_hours = day is None and _quiet_by_now(evidence, own, cycle, count)
    drop_explained = (
        new_hours
        or explained.by(device, DROP_EXPLAINED_BY)
        or site in explained.sites
        or device in explained.shut_down
    )
    sides = (
        # the cautious end of the estimate: its low end for a drop, its high end for a surge
        (AlertType.VOLUME_DROP, evidence.volume_drop, settings.volume_drop_to, 0.0, -2.0,
         drop_explained),
        (AlertType.VOLUME_SURGE, evidence.volume_surge, settings.volume_surge_to,
         settings.volume_floor_per_hour, 2.0, explained.by(device, SURGE_EXPLAINED_BY)),
    )  # fmt: skip
    out: list[Finding] = []
    for kind, run, ratio, floor, sigmas, blocked in sides:
        expected, fewest = _expected(own, cycle, floor, sigmas)
        if blocked or _most_severe(kind, day) is None or fewest < settings.volume_min_weeks:
            run.level = 0.0
            run.hour_ns, run.hour_payments, run.hour_expected = 0, 0, 0.0
            continue
        if run.level == 0.0:  # a new run: what it has seen starts here
            run.since_ns, run.payments, run.expected = cycle.start_ns, 0, 0.0
        run.level = max(0.0, run.level + _hour_llr(run, own, cycle, count, expected, ratio))
        run.payments += count
        run.expected += expected
        if run.level < settings.volume_threshold:
            continue
        how = hour_of_week(cycle.start_ns)
        spread = 1.0 + _dispersion(own, how) * own.rate_per_hour[how]  # variance / mean
        out.append(_volume_finding(kind, device, site, count, run, (own, spread), cycle, day))
        run.level = settings.volume_threshold  # held there (module docstring)
    return out


def _calendar_day(cycle: _Cycle, site: str, mcc: str) -> CalendarDay | None:
    return cycle.calendar.on(site, mcc, cycle.start_ns) if cycle.calendar is not None else None


def _most_severe(kind: AlertType, day: CalendarDay | None) -> Severity | None:
    """The highest severity a volume finding of ``kind`` may have on ``day`` of the operator
    calendar; None: not judged at all (a closed shop takes no payments: no drop)."""
    if day is None:
        return Severity.WARNING
    if day.kind is DayKind.CLOSED:
        return None if kind is AlertType.VOLUME_DROP else Severity.WARNING
    if day.kind is DayKind.HOLIDAY or kind is AlertType.VOLUME_SURGE:  # a sale's surge
        return Severity.INFO
    return Severity.WARNING


def _clock(ts_ns: int) -> tuple[int, int]:
    """(days since 1970-01-01 UTC, clock hour)."""
    day, rest = divmod(ts_ns, NS_PER_DAY)
    return day, rest // NS_PER_HOUR


def _quiet_by_now(
    evidence: TerminalEvidence, own: TerminalBaseline, cycle: _Cycle, count: int
) -> bool:
    """Whether this clock hour has been quiet on ``volume_quiet_days`` days in a row before
    today: the terminal's new hours, not a fault, until the model learns them; it is judged
    again from the first window it trades as usual in.

    A window is quiet at most ``volume_drop_to`` times its usual count; an hour is quiet on
    a day once its quiet windows missed ``QUIET_MIN_USUAL`` payments."""
    day, hour = _clock(cycle.start_ns)
    usual, _ = _expected(own, cycle, 0.0, 0.0)
    quiet = evidence.quiet_hours.get(hour)
    if count > 0 and count >= usual:  # it trades in this hour
        evidence.quiet_hours.pop(hour, None)
        return False
    if usual > 0.0 and count <= cycle.settings.volume_drop_to * usual:
        quiet = evidence.quiet_hours.setdefault(hour, QuietHour())
        if quiet.today != day:
            quiet.today, quiet.missed = day, 0.0
        quiet.missed += usual - count
        if quiet.missed >= QUIET_MIN_USUAL and quiet.day != day:
            quiet.days = quiet.days + 1 if quiet.day == day - 1 else 1
            quiet.day = day
    if quiet is None:
        return False
    before_today = quiet.days - (1 if quiet.day == day else 0)
    return before_today >= cycle.settings.volume_quiet_days


def _hour_llr(  # noqa: PLR0917
    run: CountRun, own: TerminalBaseline, cycle: _Cycle, count: int, expected: float, ratio: float
) -> float:
    """The window's log-likelihood ratio given the earlier windows of its clock hour.

    The windows of an hour share its gamma factor: the hour so far is one negative
    binomial draw, and the window adds what it changes in that draw's evidence.
    """
    hour_ns = cycle.start_ns - cycle.start_ns % NS_PER_HOUR
    if run.hour_ns != hour_ns:  # a new hour: a new gamma factor
        run.hour_ns, run.hour_payments, run.hour_expected = hour_ns, 0, 0.0
    dispersion = _dispersion(own, hour_of_week(cycle.start_ns))
    before = nb_llr(run.hour_payments, run.hour_expected, ratio, dispersion)
    run.hour_payments += count
    run.hour_expected += expected
    llr = nb_llr(run.hour_payments, run.hour_expected, ratio, dispersion) - before
    if ratio < 1.0:
        # what a burst adds (an attack, a rush) is the surge side's business: a busy hour
        # counts for the drop side as at most a surge's worth, so that the quiet window
        # after it does not look like a drop from the burst's level
        most = math.floor(cycle.settings.volume_surge_to * run.hour_expected)
        run.hour_payments = min(run.hour_payments, most)
    return llr


def _volume_finding(  # noqa: PLR0917
    kind: AlertType,
    device: str,
    site: str,
    count: int,
    run: CountRun,
    baseline: tuple[TerminalBaseline, float],  # and its hourly variance / mean now
    cycle: _Cycle,
    day: CalendarDay | None,
) -> Finding:
    own, spread = baseline
    history_days = own.history_hours / 24
    threshold = cycle.settings.volume_threshold
    minutes = (cycle.end_ns - run.since_ns) / NS_PER_S / 60
    word, edge = ("few", "at least") if kind is AlertType.VOLUME_DROP else ("many", "at most")
    evidence: Evidence = {
        "payments": run.payments,
        "expected": round(run.expected, 2),
        "minutes": round(minutes),
        "cusum": run.level,
        "variance_ratio": round(spread, 2),
    }
    context = ""
    if day is not None:
        evidence["calendar"] = day.name or day.kind.value
        context = f"; {_day_name(day)}: a {day.kind.value} day in the operator calendar"
    return Finding(
        type=kind,
        detector=f"kpi.{kind.value}",
        severity=_most_severe(kind, day) or Severity.WARNING,
        score=min(1.0, run.level / (2 * threshold)),
        ts=cycle.end_ns,
        site=site,
        device=device,
        summary=(
            f"{device}: too {word} payments: {run.payments} online in the last "
            f"{minutes:.0f} min vs {edge} {run.expected:.0f} expected (its hour-of-week "
            f"baseline over {history_days:.0f} days, at 2 sigmas; its hourly counts vary "
            f"{spread:.1f}x as much as Poisson; {count} in the last window), evidence "
            f"{run.level:.1f} nats over the {threshold:.0f} threshold{context}"
        ),
        evidence=evidence,
    )


def _day_name(day: CalendarDay) -> str:
    return day.name or ", ".join(d.isoformat() for d in day.dates)


def _latency(
    device: str,
    window: TerminalWindow,
    evidence: TerminalEvidence,
    own: TerminalBaseline,
    cycle: _Cycle,
) -> Finding | None:
    settings = cycle.settings
    if own.latency_log_sigma <= 0.0 or window.acquirer in cycle.explained.acquirers:
        evidence.latency_cusum = 0.0
        return None
    level = evidence.latency_cusum
    clip = settings.latency_clip
    for latency in window.latencies:  # in arrival order
        z = (math.log(max(latency, 1.0)) - own.latency_log_median) / own.latency_log_sigma
        level = max(0.0, level + min(clip, max(-clip, z)) - settings.latency_reference)
    if level < settings.latency_threshold:
        evidence.latency_cusum = level
        return None
    evidence.latency_cusum = settings.latency_threshold  # held there (module docstring)
    ordered = sorted(window.latencies)
    median = ordered[len(ordered) // 2]
    usual = math.exp(own.latency_log_median)
    return Finding(
        type=AlertType.LATENCY_SPIKE,
        detector="kpi.latency_spike",
        severity=Severity.WARNING,
        score=min(1.0, level / (2 * settings.latency_threshold)),
        ts=cycle.end_ns,
        site=window.site,
        device=device,
        acquirer=window.acquirer,
        summary=(
            f"{device}: authorisations slow: median {median:.0f} ms over its "
            f"{len(ordered)} online payments in the last window, {median / usual:.1f} x its "
            f"usual {usual:.0f} ms (robust spread x{math.exp(own.latency_log_sigma):.2f}); "
            f"evidence {level:.1f} sigmas over the {settings.latency_threshold:.0f} threshold; "
            f"acquirer {window.acquirer} is not down"
        ),
        evidence={"median_ms": median, "usual_ms": round(usual, 1), "cusum": level},
    )


def _decay_declines(
    evidence: TerminalEvidence, now_ns: int, settings: KpiSettings
) -> dict[str, float]:
    """The terminal's recent declines decayed to ``now_ns``: by the time since they were
    last decayed, so evidence fades over a closed night as over a busy hour."""
    since_ns = evidence.declines_at_ns or now_ns
    decay = 0.5 ** (max(0, now_ns - since_ns) / NS_PER_S / settings.codes_half_life_s)
    recent = {c: n * decay for c, n in evidence.recent_declines.items() if n * decay > FORGET_BELOW}
    evidence.recent_declines, evidence.declines_at_ns = recent, now_ns
    return recent


def _decline_mix(
    device: str,
    window: TerminalWindow,
    evidence: TerminalEvidence,
    usual: dict[str, float],
    cycle: _Cycle,
) -> Finding | None:
    settings, explained = cycle.settings, cycle.explained
    recent = _decay_declines(evidence, cycle.end_ns, settings)
    blocked = window.acquirer in explained.acquirers or explained.by(device, CODES_EXPLAINED_BY)
    if not blocked:
        for code, n in window.codes.items():
            recent[code] = recent.get(code, 0.0) + n
    evidence.recent_declines = recent
    total = sum(recent.values())
    if blocked or not usual or total < settings.codes_min_declines:
        return None
    weights = {c: usual.get(c, UNSEEN_CODE_SHARE) for c in usual.keys() | recent.keys()}
    norm = sum(weights.values())
    share = {c: w / norm for c, w in weights.items()}
    g = 2 * sum(n * math.log(n / (total * share[c])) for c, n in recent.items() if n > 0)
    p_value = float(chi2.sf(g, len(share) - 1))
    code = max(recent, key=lambda c: recent[c] - total * share[c])
    now_share = recent[code] / total
    if p_value >= settings.codes_p or now_share < settings.codes_rise * share[code]:
        return None
    return Finding(
        type=AlertType.DECLINE_MIX,
        detector="kpi.decline_mix",
        severity=Severity.WARNING,
        score=min(1.0, -math.log10(max(p_value, 1e-300)) / 20),
        ts=cycle.end_ns,
        site=window.site,
        device=device,
        acquirer=window.acquirer,
        summary=(
            f"{device}: declines with code {code} rose to {now_share:.0%} of its recent "
            f"declines ({recent[code]:.0f} of {total:.0f}, counted with a "
            f"{settings.codes_half_life_s / 60:.0f}-min half-life) vs {share[code]:.1%} usually "
            f"(its own mix and its merchant category's); G-test p = {p_value:.1e}"
        ),
        evidence={
            "code": code,
            "count": round(recent[code], 1),
            "declines": round(total, 1),
            "usual_share": round(share[code], 4),
            "p": p_value,
        },
    )
