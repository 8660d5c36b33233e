"""The trained model: per-terminal seasonal baselines, behaviour profiles, fraud model.

Baselines are robust and explainable figures an alert can quote ("approval
rate 0.52, this terminal's usual 0.96"). A terminal without enough history
(new, or moved) uses the baseline of its behaviour profile: KMeans clusters
of terminals by their hour-of-day traffic shape, volume and typical amount,
and a new terminal joins the profile most of the terminals of its merchant
category (MCC) belong to. The fraud model is an IsolationForest over
per-terminal window features (`cloud.detectors.fraud_features`).

Persistence: skops (`skops.io`), which, unlike pickle, loads only the types
it is told to trust; the file carries a format version and metadata (when
and on what it was trained, library versions).
"""

from __future__ import annotations

import platform
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final

import msgspec
import sklearn
import skops.io as sio
from sklearn.cluster import KMeans
from sklearn.ensemble import IsolationForest

from runtime.statefile import write_atomically
from wire.timestamps import NS_PER_DAY, NS_PER_HOUR

MODEL_FORMAT: Final = 2  # 2: TerminalBaseline.dispersion (overdispersed volume counts)
HOURS_PER_WEEK: Final = 168
MIN_HISTORY_HOURS: Final = 72.0  # less than this: the profile's baseline is used


class Baseline(msgspec.Struct, kw_only=True):
    """What is normal for one terminal, or for one behaviour profile."""

    rate_per_hour: list[float]  # expected payments per hour, by hour of the week (Mon 00 UTC = 0)
    decline_rate: float  # share declined, online authorisations
    amount_log_median: float  # ln(amount in minor units)
    amount_log_sigma: float  # robust spread of ln(amount)
    temperature_p50: float
    temperature_p99: float
    # share of each response code among online declines (cloud.detectors.kpis); empty in models
    # trained before it was recorded, which leaves that detector unarmed until a retrain
    decline_codes: dict[str, float] = msgspec.field(default_factory=dict)


class TerminalBaseline(Baseline, kw_only=True):
    site: str
    acquirer: str
    mcc: str
    profile: int
    history_hours: float
    # online authorisation latency (cloud.detectors.kpis; a profile has none: latency is the
    # acquirer's); 0 in models trained before it was recorded: that detector is unarmed
    latency_log_median: float = 0.0  # ln(ms)
    latency_log_sigma: float = 0.0  # robust spread of ln(ms)
    # by hour of the week: the variance of the gamma factor of an hour's payment count
    # (cloud.detectors.kpis: variance mu + dispersion mu^2, negative binomial); its own
    # history shrunk towards its merchant category's (cloud.jobs.training); empty: Poisson
    dispersion: list[float] = msgspec.field(default_factory=list)
    # by hour of the week: the sightings behind rate_per_hour (its own days 1 each, the
    # same hour of other days of its kind less: cloud.detectors.volume_baseline); empty in
    # models trained before it was recorded: the sightings of each hour in its history
    rate_weight: list[float] = msgspec.field(default_factory=list)
    # the first day of new opening hours found in its history (0: none) and the clock hours
    # that changed: their rates are from the days since (cloud.detectors.volume_baseline)
    hours_changed_ns: int = 0
    hours_changed: list[int] = msgspec.field(default_factory=list)


class AcquirerBaseline(msgspec.Struct, kw_only=True):
    decline_rate: float
    # declines with a processing-chain code (cloud.reading.window.SYSTEM_DECLINE_CODES);
    # the default serves models trained before it was recorded
    system_decline_rate: float = 0.002
    latency_median_ms: float
    latency_p95_ms: float


class Baselines(msgspec.Struct, kw_only=True):
    trained_from_ns: int
    trained_to_ns: int
    window_s: int
    terminals: dict[str, TerminalBaseline]
    profiles: list[Baseline]
    profile_by_mcc: dict[str, int]
    fleet: Baseline  # for a terminal of an unknown merchant category
    acquirers: dict[str, AcquirerBaseline]
    # cards seen at several sites within an hour in the history (fleet or family
    # cards): used that way again, they are not velocity fraud
    multi_site_cards: list[str] = msgspec.field(default_factory=list)


class TrainedModel:
    def __init__(
        self,
        baselines: Baselines,
        profiles: KMeans | None,
        fraud: IsolationForest | None,
        metadata: dict[str, Any],
    ) -> None:
        self.baselines = baselines
        self.profiles = profiles
        self.fraud = fraud
        self.metadata = metadata

    def own_baseline(self, device: str) -> TerminalBaseline | None:
        """The terminal's own baseline, if it has enough history to be one."""
        own = self.baselines.terminals.get(device)
        return own if own is not None and own.history_hours >= MIN_HISTORY_HOURS else None

    def baseline_for(self, device: str, mcc: str | None = None) -> Baseline:
        """The terminal's own baseline once it has enough history, else its profile's."""
        own = self.own_baseline(device)
        if own is not None:
            return own
        known = self.baselines.terminals.get(device)
        mcc = mcc or (known.mcc if known is not None else None)
        profile = self.baselines.profile_by_mcc.get(mcc or "")
        if profile is None or profile >= len(self.baselines.profiles):
            return self.baselines.fleet
        return self.baselines.profiles[profile]

    def acquirer(self, name: str) -> AcquirerBaseline | None:
        return self.baselines.acquirers.get(name)

    def save(self, path: str | Path) -> None:
        document = {
            "format": MODEL_FORMAT,
            "metadata": self.metadata,
            "baselines": msgspec.json.encode(self.baselines).decode(),
            "profiles": self.profiles,
            "fraud": self.fraud,
        }
        write_atomically(Path(path), sio.dumps(document))

    @classmethod
    def load(cls, path: str | Path) -> TrainedModel:
        """Load a model file; raises ValueError naming the file when it is not one of ours."""
        try:
            untrusted = sio.get_untrusted_types(file=path)
            unexpected = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
            if unexpected:
                raise ValueError(f"it holds types this version does not load: {unexpected}")
            document = sio.load(path, trusted=untrusted)
            if not isinstance(document, dict) or "format" not in document:
                raise ValueError(f"not a tillpulse model of format {MODEL_FORMAT}")
            if document["format"] != MODEL_FORMAT:
                raise ValueError(
                    f"a model of format {document['format']}, this version reads format "
                    f"{MODEL_FORMAT}; train a new one (tillpulse cloud train)"
                )
            baselines = msgspec.json.decode(document["baselines"], type=Baselines)
        except (OSError, KeyError, msgspec.DecodeError, Exception) as exc:
            raise ValueError(f"model {path}: {exc}") from exc
        return cls(baselines, document["profiles"], document["fraud"], document["metadata"])


# skops refuses anything outside its default trust unless listed; these are what
# KMeans and IsolationForest are made of.
_TRUSTED_PREFIXES: Final = ("sklearn.", "numpy.", "builtins.")


def metadata(**extra: Any) -> dict[str, Any]:
    """What a model file says about itself besides its contents."""
    return {
        "tillpulse": version("tillpulse"),
        "scikit_learn": sklearn.__version__,
        "python": platform.python_version(),
        **extra,
    }


def majority_profile(labels: dict[str, int], mccs: dict[str, str]) -> dict[str, int]:
    """For each MCC, the profile most of its terminals belong to (cold start)."""
    votes: dict[str, Counter[int]] = {}
    for device, profile in labels.items():
        votes.setdefault(mccs.get(device, ""), Counter())[profile] += 1
    return {mcc: counter.most_common(1)[0][0] for mcc, counter in votes.items()}


def hour_of_week(ts_ns: int) -> int:
    """0 = Monday 00:00-01:00 UTC."""
    days, rest = divmod(ts_ns, NS_PER_DAY)
    return (days + 3) % 7 * 24 + rest // NS_PER_HOUR  # 1970-01-01 was a Thursday


def hours_of_week_seen(start_ns: int, end_ns: int) -> list[int]:
    """How many times each hour of the week starts within ``[start, end)``: the history
    behind each of its seasonal figures."""
    seen = [0] * HOURS_PER_WEEK
    first = start_ns + (-start_ns) % NS_PER_HOUR
    for hour_ns in range(first, end_ns, NS_PER_HOUR):
        seen[hour_of_week(hour_ns)] += 1
    return seen
