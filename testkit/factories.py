"""Wire messages and line-protocol lines for tests, benches and demos: valid by
construction, every field overridable."""

from __future__ import annotations

import random

import msgspec

from wire import messages as m
from wire.pci import card_token
from wire.points import to_line

TS = 1_764_000_000_123_456_789
BASE_TS = 1_764_000_000_000_000_000  # 2025-11-24, one influxd shard group
DEVICES = 200


def payment(**overrides: object) -> m.PaymentTransaction:
    fields: dict[str, object] = dict(
        site="store-1",
        device="pos-1",
        ts=TS,
        seq=42,
        txn_id="t-0001",
        card_token=card_token("4111111111111111", b"k"),
        amount_minor=1299,
        currency="EUR",
        method=m.PaymentMethod.CONTACTLESS,
        acquirer="acq-a",
        mcc="5411",
        response_code="00",
        approved=True,
        auth_latency_ms=312.5,
    )
    fields.update(overrides)
    return m.PaymentTransaction(**fields)  # type: ignore[arg-type]


def payment_json(**overrides: object) -> dict[str, object]:
    doc: dict[str, object] = msgspec.json.decode(m.encode(payment()))
    doc.update(overrides)
    return doc


def next_status() -> m.TerminalStatus:
    return m.TerminalStatus(
        site="store-1",
        device="pos-1",
        ts=TS,
        seq=1,
        battery_pct=80.0,
        charging=False,
        paper_pct=50.0,
        signal_dbm=-60,
        temperature_c=30.0,
        tamper=False,
        firmware="pos-4.2.1",
        offline_queue=0,
        uptime_s=3600,
    )


def payment_lines(count: int, *, start: int = 0, seed: int = 5) -> list[bytes]:
    """``count`` distinct payments (txn_id ``t<i>``), one per ms, as line-protocol bytes."""
    rng = random.Random(seed + start)
    return [
        to_line(
            payment(
                site=f"store-{i % DEVICES % 17:02d}",
                device=f"pos-{i % DEVICES:03d}",
                ts=BASE_TS + i * 1_000_000,
                seq=i // DEVICES,
                txn_id=f"t{i}",
                amount_minor=rng.randrange(100, 50_000),
                auth_latency_ms=rng.uniform(50, 900),
            )
        ).encode()
        for i in range(start, start + count)
    ]
