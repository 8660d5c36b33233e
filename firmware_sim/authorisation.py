"""Online authorisation: acquirers, their latency, and ISO 8583 response codes.

A payment goes from the terminal to its site's acquirer and on to the card
issuer. The acquirer sets the latency (log-normal, with a small slow tail);
the issuer approves (``00``) or declines with a field-39 code whose odds
depend on how the card was read (a swiped or keyed card is declined more
often, a wrong PIN exists only for chip).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final

from wire.messages import PaymentMethod

APPROVED: Final = "00"
DO_NOT_HONOUR: Final = "05"
INVALID_CARD: Final = "14"
INSUFFICIENT_FUNDS: Final = "51"
EXPIRED_CARD: Final = "54"
INCORRECT_PIN: Final = "55"
EXCEEDS_LIMIT: Final = "61"
ISSUER_UNAVAILABLE: Final = "91"
SYSTEM_MALFUNCTION: Final = "96"
OFFLINE_APPROVED: Final = "Y1"  # EMV: approved by the terminal without going online
OFFLINE_DECLINED: Final = "Z1"  # EMV: declined by the terminal without going online

DECLINE_CODES: Final = (
    (DO_NOT_HONOUR, 38.0),
    (INSUFFICIENT_FUNDS, 30.0),
    (EXPIRED_CARD, 7.0),
    (INCORRECT_PIN, 12.0),
    (INVALID_CARD, 3.0),
    (EXCEEDS_LIMIT, 6.0),
    (ISSUER_UNAVAILABLE, 2.5),
    (SYSTEM_MALFUNCTION, 1.5),
)
OUTAGE_CODES: Final = ((ISSUER_UNAVAILABLE, 60.0), (SYSTEM_MALFUNCTION, 40.0))
CARD_TESTING_CODES: Final = ((DO_NOT_HONOUR, 45.0), (INVALID_CARD, 30.0), (EXPIRED_CARD, 25.0))

DECLINE_RATE: Final[dict[PaymentMethod, float]] = {
    PaymentMethod.CHIP: 0.045,
    PaymentMethod.CONTACTLESS: 0.035,
    PaymentMethod.WALLET: 0.025,
    PaymentMethod.SWIPE: 0.09,
    PaymentMethod.MANUAL: 0.14,
}
OFFLINE_FLOOR_LIMIT_MINOR: Final = 10_000  # above it a terminal cannot approve offline
MAX_LATENCY_MS: Final = 600_000.0


@dataclass(frozen=True, slots=True)
class Acquirer:
    acquirer_id: str
    median_ms: float
    sigma: float
    slow_tail: float  # probability of a slow (x5-x20) answer
    weight: float  # share of sites

    def latency_ms(self, rng: random.Random, factor: float = 1.0) -> float:
        value = rng.lognormvariate(math.log(self.median_ms), self.sigma) * factor
        if rng.random() < self.slow_tail:
            value *= rng.uniform(5.0, 20.0)
        return round(min(value, MAX_LATENCY_MS), 1)


ACQUIRERS: Final = (
    Acquirer("acq-a", median_ms=180.0, sigma=0.35, slow_tail=0.004, weight=0.45),
    Acquirer("acq-b", median_ms=260.0, sigma=0.4, slow_tail=0.006, weight=0.35),
    Acquirer("acq-c", median_ms=350.0, sigma=0.5, slow_tail=0.01, weight=0.2),
)


def pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    """One of the weighted values."""
    return rng.choices([value for value, _ in weighted], [w for _, w in weighted])[0]


def issuer_decline_code(rng: random.Random, method: PaymentMethod) -> str:
    """A realistic decline code for a card read with ``method`` (no 55 without a PIN)."""
    while True:
        code = pick(rng, DECLINE_CODES)
        if code != INCORRECT_PIN or method is PaymentMethod.CHIP:
            return code
