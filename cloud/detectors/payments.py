"""Per-terminal payment detectors: approval drop and amount outliers; card testing.

Approval drop is a sequential test (Bernoulli CUSUM, in `Memory.evidence`):
each online authorisation adds log(p1/p0) when declined and log((1-p1)/(1-p0))
when approved, where p0 is the terminal's usual decline rate and p1 a
clearly raised one; the sum (floored at 0) crossing ``decline_threshold``
nats means the declines are too many to be chance. A busy terminal crosses
it within minutes, a quiet one needs more payments: the evidence, not the
clock, decides. Payments through an acquirer that is down are left out
(the outage is their root cause, reported once by `cloud.detectors.fleet_wide`),
and so are the probe-like payments card testing counts, whether or not it has
signalled yet: they are its evidence, and a tester's declines are not the
terminal's.

Card testing (`cloud.detectors.card_testing`, called from here so that approval
drop knows its probes): evidence from small keyed-in payments on new cards,
accumulated across windows and across the terminals of a site and of an acquirer.

Amount outlier: a payment whose ln(amount) is ``outlier_sigmas`` robust
sigmas above the terminal's usual, and ``outlier_multiple`` times its median.
The sigma threshold spends a budget of about 0.1 false alerts per 1,000
terminal-hours at ~13 payments an hour if amounts were log-normal (one
payment in 130,000 beyond 4.3 sigmas); the multiple keeps terminals with a
narrow amount range from alerting on an ordinary large basket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cloud.detectors.card_testing import CardTestingSettings, ProbeCount, card_testing
from cloud.detectors.carried_state import Memory, TerminalEvidence
from cloud.detectors.findings import Finding
from cloud.detectors.fraud_features import TerminalWindow
from cloud.detectors.trained_model import Baseline, TrainedModel
from wire.incidents import AlertType
from wire.messages import Severity


@dataclass(frozen=True, slots=True)
class PaymentSettings:
    decline_threshold: float = 12.0  # nats; ~1 false alarm per e^12 payments per terminal
    decline_raise: float = 0.25  # p1 = p0 + this (at least 4 x p0)
    card_testing: CardTestingSettings = field(default_factory=CardTestingSettings)
    outlier_sigmas: float = 4.3
    outlier_multiple: float = 15.0


def payment_findings(  # noqa: PLR0917 - the window, what is known, and the settings
    windows: dict[str, TerminalWindow],
    memory: Memory,
    model: TrainedModel | None,
    down_acquirers: set[str],
    end_ns: int,
    settings: PaymentSettings,
    *,
    start_ns: int,
) -> list[Finding]:
    testing = card_testing(
        windows,
        memory,
        model,
        _fraud_scores(windows, model),
        start_ns,
        end_ns,
        settings.card_testing,
    )
    findings = testing.findings
    for device, window in windows.items():
        baseline = _baseline(model, device, window.mcc)
        if window.acquirer not in down_acquirers:
            # the probes of a card-testing attack are its declines: judged without them
            drop = _approval_drop(
                device,
                window,
                memory,
                baseline,
                end_ns,
                settings,
                probes=testing.probes.get(device, ProbeCount()),
            )
            if drop is not None:
                findings.append(drop)
        outlier = _amount_outlier(device, window, baseline, end_ns, settings)
        if outlier is not None:
            findings.append(outlier)
    return findings


def _baseline(model: TrainedModel | None, device: str, mcc: str) -> Baseline | None:
    return None if model is None else model.baseline_for(device, mcc)


def _approval_drop(  # noqa: PLR0917
    device: str,
    window: TerminalWindow,
    memory: Memory,
    baseline: Baseline | None,
    end_ns: int,
    settings: PaymentSettings,
    *,
    probes: ProbeCount,
) -> Finding | None:
    evidence = memory.evidence.setdefault(device, TerminalEvidence())
    online = max(0, window.online - probes.online)
    declined = max(0, window.declined - probes.declined)
    p0 = baseline.decline_rate if baseline is not None else 0.05
    p1 = min(0.95, max(4 * p0, p0 + settings.decline_raise))
    declined_step = math.log(p1 / p0)
    approved_step = math.log((1 - p1) / (1 - p0))
    approved = online - declined
    # CUSUM over the window's payments, declines and approvals in arrival order
    # unknown within the window: the worst case (approvals first) keeps it conservative
    level = max(0.0, evidence.decline_cusum + approved * approved_step)
    level = max(0.0, level + declined * declined_step)
    if level < settings.decline_threshold:
        evidence.decline_cusum = level
        return None
    # restart halfway after a signal: a spike that goes on signals again soon,
    # one that is over drains away instead of holding the alert open for hours
    evidence.decline_cusum = settings.decline_threshold / 2
    codes = ", ".join(
        f"{code}x{n}" for code, n in sorted(window.codes.items(), key=lambda kv: -kv[1])[:4]
    )
    rate = declined / max(1, online)
    return Finding(
        type=AlertType.APPROVAL_DROP,
        detector="kpi.approval_drop",
        severity=Severity.WARNING,
        score=min(1.0, level / (2 * settings.decline_threshold)),
        ts=end_ns,
        site=window.site,
        device=device,
        acquirer=window.acquirer,
        summary=(
            f"{device}: declines far above its usual {p0:.1%}: {declined} of "
            f"{online} in the last window ({rate:.0%}; codes {codes or 'none'}), "
            f"evidence {level:.1f} nats over the {settings.decline_threshold:.0f} threshold; "
            f"acquirer {window.acquirer} is fine elsewhere"
        ),
        evidence={"declined": declined, "online": online, "cusum": level},
    )


def _amount_outlier(
    device: str,
    window: TerminalWindow,
    baseline: Baseline | None,
    end_ns: int,
    settings: PaymentSettings,
) -> Finding | None:
    if baseline is None or not window.amounts:
        return None
    largest = window.largest_amount
    sigmas = (math.log(max(1, largest)) - baseline.amount_log_median) / baseline.amount_log_sigma
    multiple = largest / math.exp(baseline.amount_log_median)
    if sigmas < settings.outlier_sigmas or multiple < settings.outlier_multiple:
        return None
    return Finding(
        type=AlertType.AMOUNT_OUTLIER,
        detector="fraud.amount_outlier",
        severity=Severity.WARNING,
        score=min(1.0, sigmas / (2 * settings.outlier_sigmas)),
        ts=end_ns,
        site=window.site,
        device=device,
        summary=(
            f"{device}: a payment of {largest / 100:.2f}, {multiple:.0f} x its usual median "
            f"{math.exp(baseline.amount_log_median) / 100:.2f} ({sigmas:.1f} robust sigmas)"
        ),
        evidence={
            "amount_minor": largest,
            "multiple": multiple,
            "sigmas": sigmas,
            "card": window.largest_card,
        },
    )


def _fraud_scores(
    windows: dict[str, TerminalWindow], model: TrainedModel | None
) -> dict[str, float]:
    """How unusual each window is to the IsolationForest, 0 (normal) .. 1."""
    if model is None or model.fraud is None or not windows:
        return {}
    devices = list(windows)
    x = np.array([windows[d].features() for d in devices])
    raw = -model.fraud.score_samples(x)  # higher: more unusual
    # IsolationForest's score_samples is ~0.5 for normal points, approaching 1 for anomalies
    return {d: float(np.clip((s - 0.5) * 2, 0.0, 1.0)) for d, s in zip(devices, raw, strict=True)}
