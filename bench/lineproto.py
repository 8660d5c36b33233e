"""Line-protocol encoder throughput vs influxdb-client, measured side by side.

Both sides go from the same PaymentTransaction message to a line of text:
ours through wire.points.to_line, influxdb-client by building a Point and
calling to_line_protocol(). Rounds alternate between the two so that machine
noise hits both alike; the figures are medians over the rounds.

    .venv/bin/python -m bench.lineproto [--points 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from influxdb_client import Point, WritePrecision  # type: ignore[attr-defined]

from bench.common import emit, median
from bench.payments import random_payment
from wire.messages import PaymentTransaction
from wire.pci import card_token
from wire.points import point_time_ns, to_line


def make_payments(count: int, seed: int = 7) -> list[PaymentTransaction]:
    rng = random.Random(seed)
    tokens = [card_token(str(4_000_000_000_000_000 + n), b"bench") for n in range(1000)]
    return [
        random_payment(
            rng,
            site=f"store-{rng.randrange(500):04d}",
            device=f"pos-{rng.randrange(20_000):05d}",
            ts=1_764_000_000_000_000_000 + i * 7_919_000,
            seq=i,
            txn_id=f"t{i:010d}x{rng.randrange(10**6):06d}",
            tokens=tokens,
        )
        for i in range(count)
    ]


def influxdb_client_line(m: PaymentTransaction) -> str:
    """The same point as wire.points builds, through influxdb-client's Point."""
    point = (
        Point("payment")
        .tag("site", m.site)
        .tag("device", m.device)
        .tag("acquirer", m.acquirer)
        .field("seq", m.seq)
        .field("txn_id", m.txn_id)
        .field("card_token", m.card_token)
        .field("amount_minor", m.amount_minor)
        .field("currency", m.currency)
        .field("method", m.method.value)
        .field("mcc", m.mcc)
        .field("response_code", m.response_code)
        .field("approved", int(m.approved))
        .field("auth_latency_ms", float(m.auth_latency_ms))
        .field("offline", int(m.offline))
        .time(point_time_ns(m.ts, m.seq), WritePrecision.NS)
    )
    line: str = point.to_line_protocol()
    return line


def canonical(line: str) -> tuple[str, dict[str, object], str]:
    """Order- and number-format-independent form of a line (for this bench's data)."""
    head, body, ts = line.split(" ")
    fields: dict[str, object] = {}
    for pair in body.split(","):
        key, raw = pair.split("=", 1)
        if raw.startswith('"'):
            fields[key] = raw
        elif raw.endswith("i"):
            fields[key] = int(raw[:-1])
        else:
            fields[key] = float(raw)
    return head, fields, ts


def rate(encode: Callable[[PaymentTransaction], str], messages: list[PaymentTransaction]) -> float:
    start = time.perf_counter()
    for message in messages:
        encode(message)
    return len(messages) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    messages = make_payments(args.points)
    # Same input, same line: the comparison is between equal outputs.
    mismatches = sum(
        canonical(to_line(m)) != canonical(influxdb_client_line(m)) for m in messages[:1000]
    )

    ours: list[float] = []
    theirs: list[float] = []
    ratios: list[float] = []
    for _ in range(args.rounds):
        ours.append(rate(to_line, messages))
        theirs.append(rate(influxdb_client_line, messages))
        ratios.append(ours[-1] / theirs[-1])

    emit(
        "lineproto",
        {
            "shape": "payment (3 tags, 11 fields)",
            "points_per_round": args.points,
            "rounds": args.rounds,
            "tillpulse_points_per_s": round(median(ours)),
            "influxdb_client_points_per_s": round(median(theirs)),
            "ratio_median": round(median(ratios), 2),
            "lines_differing_in_first_1000": mismatches,
        },
    )


if __name__ == "__main__":
    main()
