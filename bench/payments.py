"""Realistic random payments for the benchmarks (one generator, shared)."""

from __future__ import annotations

import random
from typing import Final

from wire.messages import PaymentMethod, PaymentTransaction

DECLINES: Final = ("05", "51", "54", "55", "91", "96")
ACQUIRERS: Final = ("acq-a", "acq-b", "acq-c")
MCCS: Final = ("5411", "5812", "5541", "5999")


def random_payment(
    rng: random.Random,
    *,
    site: str,
    device: str,
    ts: int,
    seq: int,
    txn_id: str,
    tokens: list[str],
) -> PaymentTransaction:
    """A payment with a 93% approval rate, log-normal latency and varied method/acquirer."""
    approved = rng.random() < 0.93
    return PaymentTransaction(
        site=site,
        device=device,
        ts=ts,
        seq=seq,
        txn_id=txn_id,
        card_token=rng.choice(tokens),
        amount_minor=rng.randrange(100, 50_000),
        currency="EUR",
        method=rng.choice(list(PaymentMethod)),
        acquirer=rng.choice(ACQUIRERS),
        mcc=rng.choice(MCCS),
        response_code="00" if approved else rng.choice(DECLINES),
        approved=approved,
        auth_latency_ms=round(rng.lognormvariate(5.5, 0.4), 1),
    )
