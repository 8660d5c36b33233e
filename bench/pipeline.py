"""Messages/s through the gateway pipeline (gateway.pipeline.Pipeline.process).

Input: payment messages, encoded once up front, from a fleet of terminals at
many sites (each terminal numbers its events in order; about 7% declined),
all within a few minutes of event time, as MQTT would hand them over.
Each round runs a fresh Pipeline over all of them and then closes the
windows (``tick``). The same round also times the stages on their own
(topic parse, decode + validation, line building, aggregation) to give the
share of each; the figures are medians over the rounds.

    .venv/bin/python -m bench.pipeline [--messages 100000] [--terminals 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence

from bench.common import emit, median
from bench.payments import random_payment
from gateway.aggregates import Aggregator
from gateway.config import AggregatesSection
from gateway.pipeline import Pipeline, Verdict
from wire.messages import PaymentTransaction, decode_device_message, encode
from wire.pci import card_token
from wire.points import to_line
from wire.topics import device_topic, parse_device_topic

BASE_TS = 1_764_000_000_000_000_000


def make_fleet_traffic(
    messages: int, terminals: int, seed: int = 11
) -> list[tuple[str, bytes, PaymentTransaction]]:
    """(topic, payload, message) for ``messages`` payments spread over a fleet."""
    rng = random.Random(seed)
    devices = [(f"store-{n // 5:04d}", f"store-{n // 5:04d}-pos{n % 5}") for n in range(terminals)]
    seqs = [rng.randrange(1_000_000) for _ in devices]
    tokens = [card_token(str(4_000_000_000_000_000 + n * 7919), b"bench") for n in range(5000)]
    traffic = []
    for i in range(messages):
        n = rng.randrange(terminals)
        site, device = devices[n]
        seqs[n] += 1
        message = random_payment(
            rng,
            site=site,
            device=device,
            ts=BASE_TS + i * 1_700_000,  # ~590 events per second of event time
            seq=seqs[n],
            txn_id=f"T{seqs[n]:x}Z{device}",
            tokens=tokens,
        )
        traffic.append((device_topic(site, device, "payment"), encode(message), message))
    return traffic


def seconds(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def one_round(traffic: Sequence[tuple[str, bytes, PaymentTransaction]]) -> dict[str, float]:
    now = BASE_TS + len(traffic) * 1_700_000
    pipeline = Pipeline("gw-bench", BASE_TS)

    def run_pipeline() -> None:
        for topic, payload, _ in traffic:
            if pipeline.process(topic, payload, now).verdict is not Verdict.ACCEPTED:
                raise SystemExit("bench input was not accepted")

    process_s = seconds(run_pipeline)
    tick_s = seconds(lambda: pipeline.tick(now + 10**12))
    topics = [parse_device_topic(topic) for topic, _, _ in traffic]
    payloads = [(where, payload) for where, (_, payload, _) in zip(topics, traffic, strict=True)]
    messages = [m for _, _, m in traffic]
    aggregator = Aggregator("gw-bench", BASE_TS, AggregatesSection())

    def aggregate() -> None:
        for m in messages:
            aggregator.add(m, now)

    return {
        "process_s": process_s,
        "tick_s": tick_s,
        "topic_s": seconds(lambda: [parse_device_topic(topic) for topic, _, _ in traffic]),
        "decode_s": seconds(lambda: [decode_device_message(w, p) for w, p in payloads]),
        "line_s": seconds(lambda: [to_line(m) for m in messages]),
        "aggregate_s": seconds(aggregate),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--terminals", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    count: int = args.messages
    traffic = make_fleet_traffic(count, args.terminals)
    rounds = [one_round(traffic) for _ in range(args.rounds)]

    def us_per_message(key: str) -> float:
        return round(float(median([r[key] for r in rounds])) / count * 1e6, 2)

    process_us = us_per_message("process_s")
    emit(
        "pipeline",
        {
            "shape": "payment/1, valid, in seq order per terminal",
            "messages_per_round": count,
            "terminals": args.terminals,
            "rounds": args.rounds,
            "messages_per_s": round(1e6 / process_us),
            "process_us_per_message": process_us,
            "share_topic_parse_uncached": round(us_per_message("topic_s") / process_us, 2),
            "share_decode_validate": round(us_per_message("decode_s") / process_us, 2),
            "share_line": round(us_per_message("line_s") / process_us, 2),
            "share_aggregate": round(us_per_message("aggregate_s") / process_us, 2),
            "tick_ms_to_close_all_windows": round(
                float(median([r["tick_s"] for r in rounds])) * 1e3, 1
            ),
        },
    )


if __name__ == "__main__":
    main()
