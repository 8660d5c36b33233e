"""Per-terminal window features for fraud: what card testing and cash-out look like.

One row per terminal and window with at least one payment. The same function
builds the training rows (history) and the rows scored live, so the
IsolationForest sees the same thing in both. Besides the counts, a window keeps
its online keyed-in payments one by one and the cards read from a card (chip,
contactless, wallet, swipe): `cloud.detectors.card_testing` judges each keyed-in
payment against the terminal's own amounts and the cards its site has seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from cloud.reading.influxql_reader import Table

MICRO_AMOUNT_MINOR: Final = 200  # below 2.00: a probe, not a purchase
FEATURES: Final = (
    "log_payments",
    "micro_share",
    "manual_share",
    "distinct_card_share",
    "decline_share",
    "log_median_amount",
)


class KeyedPayment(NamedTuple):
    """An online payment keyed in by hand."""

    amount_minor: int
    card: str
    code: str  # the response code
    approved: bool


@dataclass(slots=True)
class TerminalWindow:
    """One terminal's payments in one window, reduced to counts."""

    site: str
    acquirer: str
    mcc: str
    payments: int = 0
    online: int = 0  # authorised online (offline approvals say nothing of the acquirer)
    declined: int = 0  # of the online ones
    manual: int = 0
    cards: set[str] = field(default_factory=set)
    presented: set[str] = field(default_factory=set)  # cards read from a card, not keyed in
    keyed: list[KeyedPayment] = field(default_factory=list)  # online keyed-in, in time order
    amounts: list[int] = field(default_factory=list)
    largest_amount: int = -1
    largest_card: str = ""  # the card that paid largest_amount
    latencies: list[float] = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)  # declines by response code

    def features(self) -> list[float]:
        n = self.payments
        median = float(np.median(self.amounts)) if self.amounts else 1.0
        return [
            math.log1p(n),
            sum(1 for a in self.amounts if a < MICRO_AMOUNT_MINOR) / n,
            self.manual / n,
            len(self.cards) / n,
            self.declined / max(1, self.online),
            math.log(max(1.0, median)),
        ]


def group_by_terminal(payments: Table) -> dict[str, TerminalWindow]:
    windows: dict[str, TerminalWindow] = {}
    columns = (
        payments["device"],
        payments["site"],
        payments["acquirer"],
        payments["card_token"],
        payments["amount_minor"],
        payments["method"],
        payments["mcc"],
        payments["response_code"],
        payments["approved"],
        payments["auth_latency_ms"],
        payments["offline"],
    )
    for device, site, acquirer, card, amount, method, mcc, code, approved, latency, offline in zip(
        *columns, strict=True
    ):
        window = windows.get(device)
        if window is None:
            window = windows[device] = TerminalWindow(site, acquirer, mcc or "")
        window.payments += 1
        window.cards.add(card)
        if amount > window.largest_amount:
            window.largest_amount, window.largest_card = int(amount), card
        window.amounts.append(int(amount))
        manual = method == "manual"
        window.manual += manual
        if not manual:
            window.presented.add(card)
        elif not offline:
            window.keyed.append(KeyedPayment(int(amount), card, code, bool(approved)))
        if not offline:
            window.online += 1
            window.latencies.append(float(latency))
            if not approved:
                window.declined += 1
                window.codes[code] = window.codes.get(code, 0) + 1
    return windows


def feature_matrix(windows: dict[str, TerminalWindow]) -> npt.NDArray[np.float64]:
    return np.array([w.features() for w in windows.values()], dtype=np.float64).reshape(
        -1, len(FEATURES)
    )
