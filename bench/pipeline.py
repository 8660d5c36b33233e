"""CPU per message through the gateway pipeline (gateway.pipeline.Pipeline.process).

Two inputs, encoded once up front, as MQTT would hand them over, from a fleet
of terminals at many sites (each terminal numbers its events in order), all
within a few minutes of event time:

- ``payments``: valid payments only (about 7% declined), the shape of the
  earlier figures in BENCHMARKS.md;
- ``mix``: an assumed realistic mix, `MIX`: mostly payments, heartbeats,
  sensor samples, agent health and device states, 2% redeliveries of an
  earlier message and 1% rejections (a bad field, a card number, a time in
  milliseconds, a bad topic, in turn).

Each round runs a fresh Pipeline over each input, then closes the windows
(``tick``). The main figure is CPU time per message (``time.process_time``:
steadier than a rate on a shared machine); wall time is reported too. The
same round times the stages of a payment on their own (topic parse, decode +
validation, line building, aggregation) to give the share of each; figures
are medians over the rounds. ``outcome_digest`` hashes every outcome
(verdict, reason, detail, line), the tick lines and the final counters of the
mix: two trees that give the same digest treat the mix identically.

``--against DIR`` measures another tree (e.g. ``git archive HEAD | tar -x -C
DIR``) in the same session: every round runs this script once against each
tree, in a child process with that tree first on its path, alternating which
goes first, and prints both medians, their ratio and whether the digests match.

    .venv/bin/python -m bench.pipeline [--messages 100000] [--terminals 5000] [--rounds 5]
    .venv/bin/python -m bench.pipeline --rounds 7 --against /tmp/before_tree
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from bench.common import emit, median
from bench.payments import random_payment
from gateway.aggregates import Aggregator
from gateway.config import AggregatesSection
from gateway.pipeline import Pipeline, Verdict
from wire import messages, points
from wire.messages import PaymentTransaction, decode_device_message, encode
from wire.pci import card_token
from wire.topics import device_topic, parse_device_topic

BASE_TS = 1_764_000_000_000_000_000
EVENT_GAP_NS = 1_700_000  # ~590 events per second of event time
MIX: Final = {
    "payment": 0.70,
    "status": 0.15,
    "sensor": 0.08,
    "health": 0.02,
    "state": 0.02,
    "redelivery": 0.02,
    "rejected": 0.01,
}
Traffic = list[tuple[str, bytes]]


def fleet(terminals: int) -> list[tuple[str, str]]:
    """(site, device) of each terminal, 5 to a site."""
    return [(f"store-{n // 5:04d}", f"store-{n // 5:04d}-pos{n % 5}") for n in range(terminals)]


def card_tokens() -> list[str]:
    return [card_token(str(4_000_000_000_000_000 + n * 7919), b"bench") for n in range(5000)]


def make_fleet_traffic(
    messages: int, terminals: int, seed: int = 11
) -> list[tuple[str, bytes, PaymentTransaction]]:
    """(topic, payload, message) for ``messages`` payments spread over a fleet."""
    rng = random.Random(seed)
    devices = fleet(terminals)
    seqs = [rng.randrange(1_000_000) for _ in devices]
    tokens = card_tokens()
    traffic = []
    for i in range(messages):
        n = rng.randrange(terminals)
        site, device = devices[n]
        seqs[n] += 1
        message = random_payment(
            rng,
            site=site,
            device=device,
            ts=BASE_TS + i * EVENT_GAP_NS,
            seq=seqs[n],
            txn_id=f"T{seqs[n]:x}Z{device}",
            tokens=tokens,
        )
        traffic.append((device_topic(site, device, "payment"), encode(message), message))
    return traffic


def make_mixed_traffic(count: int, terminals: int, seed: int = 12) -> Traffic:
    """(topic, payload) for ``count`` messages in the proportions of `MIX`."""
    rng = random.Random(seed)
    devices = fleet(terminals)
    tokens = card_tokens()
    seqs: dict[tuple[str, str], int] = {}
    traffic: Traffic = []
    rejections = 0

    def seq(device: str, stream: str) -> int:
        seqs[device, stream] = seqs.get((device, stream), rng.randrange(1_000_000)) + 1
        return seqs[device, stream]

    kinds, weights = list(MIX), list(MIX.values())
    for i in range(count):
        site, device = rng.choice(devices)
        ts = BASE_TS + i * EVENT_GAP_NS
        kind = rng.choices(kinds, weights)[0]
        if kind == "redelivery" and traffic:
            traffic.append(rng.choice(traffic))
            continue
        if kind == "rejected":
            traffic.append(rejection(rejections, site, device, ts))
            rejections += 1
            continue
        message: messages.DeviceMessage
        if kind == "status":
            message = messages.TerminalStatus(
                site=site,
                device=device,
                ts=ts,
                seq=seq(device, kind),
                battery_pct=round(rng.uniform(20, 100), 1),
                charging=rng.random() < 0.3,
                paper_pct=round(rng.uniform(0, 100), 1),
                signal_dbm=rng.randrange(-100, -40),
                temperature_c=round(rng.gauss(32, 3), 2),
                tamper=False,
                firmware="pos-4.2.1",
                offline_queue=0,
                uptime_s=rng.randrange(10**6),
            )
        elif kind == "sensor":
            device = f"{site}-env"
            message = messages.SensorReading(
                site=site,
                device=device,
                ts=ts,
                seq=seq(device, kind),
                temperature_c=round(rng.gauss(21, 2), 2),
                humidity_pct=round(rng.uniform(30, 60), 1),
                door_open=rng.random() < 0.05,
                mains_power=True,
            )
        elif kind == "health":
            message = messages.HostHealth(
                site=site,
                device=device,
                ts=ts,
                seq=seq(device, kind),
                cpu_temp_c=round(rng.gauss(50, 5), 1),
                load1=round(rng.uniform(0, 2), 2),
                mem_used_pct=round(rng.uniform(20, 40), 2),
                disk_used_pct=round(rng.uniform(10, 30), 2),
                clock_synced=True,
                outbox_depth=rng.randrange(5),
                outbox_dropped=0,
            )
        elif kind == "state":
            online = rng.random() < 0.5
            message = messages.DeviceState(
                site=site,
                device=device,
                ts=ts,
                online=online,
                reason=messages.StateReason.CONNECTED if online else messages.StateReason.LAST_WILL,
            )
        else:
            n = seq(device, "payment")
            message = random_payment(
                rng, site=site, device=device, ts=ts, seq=n, txn_id=f"T{n:x}", tokens=tokens
            )
        stream = messages.STREAM_FOR_MESSAGE[type(message)]
        traffic.append((device_topic(site, device, stream), encode(message)))
    return traffic


def rejection(n: int, site: str, device: str, ts: int) -> tuple[str, bytes]:
    """The ``n``-th rejected message: each kind of fault in turn."""
    good = random_payment(
        random.Random(n), site=site, device=device, ts=ts, seq=n, txn_id=f"R{n}", tokens=["x"]
    )
    document = json.loads(encode(good))
    document["card_token"] = card_token("4111111111111111", b"bench")
    topic = device_topic(site, device, "payment")
    fault = n % 4
    if fault == 0:
        document["currency"] = "eur"
    elif fault == 1:
        document["txn_id"] = f"4111-1111-1111-1111-{n}"
    elif fault == 2:
        document["ts"] = ts // 1_000_000
    else:
        topic = f"tp/v1/dev/{site}/{device}/payments"
    return topic, json.dumps(document, separators=(",", ":")).encode()


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``work``."""
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    return time.process_time() - cpu, time.perf_counter() - wall


def run_mix(traffic: Traffic, now: int) -> tuple[float, float, str]:
    """CPU and wall seconds over the mix, and the digest of everything it produced."""
    pipeline = Pipeline("gw-bench", BASE_TS)
    outcomes = []

    def run() -> None:
        for topic, payload in traffic:
            outcomes.append(pipeline.process(topic, payload, now))

    cpu, wall = timed(run)
    digest = hashlib.sha256()
    for outcome in outcomes:
        fields = (outcome.verdict, outcome.reason, outcome.detail, outcome.line)
        digest.update(repr(fields).encode())
    digest.update(repr(pipeline.tick(now + 10**12)).encode())
    digest.update(repr(pipeline.stats()).encode())
    return cpu, wall, digest.hexdigest()[:16]


def one_round(
    payments: Sequence[tuple[str, bytes, PaymentTransaction]], mix: Traffic
) -> dict[str, Any]:
    now = BASE_TS + max(len(payments), len(mix)) * EVENT_GAP_NS
    pipeline = Pipeline("gw-bench", BASE_TS)

    def run_pipeline() -> None:
        for topic, payload, _ in payments:
            if pipeline.process(topic, payload, now).verdict is not Verdict.ACCEPTED:
                raise SystemExit("bench input was not accepted")

    process_cpu, process_wall = timed(run_pipeline)
    tick_s = timed(lambda: pipeline.tick(now + 10**12))[0]
    mix_cpu, mix_wall, digest = run_mix(mix, now)
    topics = [parse_device_topic(topic) for topic, _, _ in payments]
    payloads = [(where, payload) for where, (_, payload, _) in zip(topics, payments, strict=True)]
    decoded = [m for _, _, m in payments]
    # The line the pipeline builds (a tree before issue #18 has only to_line).
    line: Callable[[messages.Message], str] = getattr(points, "decoded_to_line", points.to_line)
    aggregator = Aggregator("gw-bench", BASE_TS, AggregatesSection())

    def aggregate() -> None:
        for m in decoded:
            aggregator.add(m, now)

    return {
        "process_cpu_s": process_cpu,
        "process_wall_s": process_wall,
        "mix_cpu_s": mix_cpu,
        "mix_wall_s": mix_wall,
        "mix_digest": digest,
        "tick_s": tick_s,
        "topic_s": timed(lambda: [parse_device_topic(topic) for topic, _, _ in payments])[0],
        "decode_s": timed(lambda: [decode_device_message(w, p) for w, p in payloads])[0],
        "line_s": timed(lambda: [line(m) for m in decoded])[0],
        "aggregate_s": timed(aggregate)[0],
    }


def figures(rounds: Sequence[dict[str, Any]], count: int, mix_count: int) -> dict[str, Any]:
    def us(key: str, n: int = count) -> float:
        return round(float(median([r[key] for r in rounds])) / n * 1e6, 2)

    process_us = us("process_cpu_s")
    digests = sorted({r["mix_digest"] for r in rounds})
    return {
        "payments_cpu_us_per_message": process_us,
        "payments_wall_us_per_message": us("process_wall_s"),
        "mix_cpu_us_per_message": us("mix_cpu_s", mix_count),
        "mix_wall_us_per_message": us("mix_wall_s", mix_count),
        "payments_messages_per_cpu_s": round(1e6 / process_us),
        "share_topic_parse_uncached": round(us("topic_s") / process_us, 2),
        "share_decode_validate": round(us("decode_s") / process_us, 2),
        "share_line": round(us("line_s") / process_us, 2),
        "share_aggregate": round(us("aggregate_s") / process_us, 2),
        "tick_ms_to_close_all_windows": round(
            float(median([r["tick_s"] for r in rounds])) * 1e3, 1
        ),
        "outcome_digest": digests[0] if len(digests) == 1 else digests,
    }


def against(tree: Path, args: argparse.Namespace) -> None:
    """Alternate rounds of this tree and ``tree`` in child processes; both medians side by side."""
    here = Path(__file__).resolve().parents[1]
    trees = {"before": tree.resolve(), "after": here}
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
    code = (
        "import runpy, sys; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    for n in range(args.rounds):
        for label in sorted(trees, reverse=n % 2 == 1):
            command = [sys.executable, "-c", code, __file__, "--rounds", "1"]
            command += ["--messages", str(args.messages), "--terminals", str(args.terminals)]
            env = {**os.environ, "PYTHONPATH": str(trees[label])}
            out = subprocess.run(
                command, cwd=trees[label], env=env, check=True, capture_output=True, text=True
            ).stdout
            result = json.loads(out.splitlines()[-1])
            if not result["code"].startswith(str(trees[label])):
                raise SystemExit(f"{label} round imported wire from {result['code']}")
            runs[label].append(result)
    keys = ("payments_cpu_us_per_message", "mix_cpu_us_per_message")
    medians = {
        label: {
            key: round(float(median([r[key] for r in results])), 2)
            for key in results[0]
            if key.endswith("_per_message") or key.startswith("share_")
        }
        for label, results in runs.items()
    }
    digests = {r["outcome_digest"] for results in runs.values() for r in results}
    emit(
        "pipeline_before_after",
        {
            "messages_per_round": args.messages,
            "terminals": args.terminals,
            "rounds": args.rounds,
            **{label: {**figures, "code": str(trees[label])} for label, figures in medians.items()},
            "cpu_ratio_before_over_after": {
                key: round(medians["before"][key] / medians["after"][key], 2) for key in keys
            },
            "same_outcomes": len(digests) == 1,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--terminals", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", type=Path, help="another tree, measured in the same rounds")
    args = parser.parse_args()
    if args.against is not None:
        against(args.against, args)
        return

    count: int = args.messages
    payments = make_fleet_traffic(count, args.terminals)
    mix = make_mixed_traffic(count, args.terminals)
    rounds = [one_round(payments, mix) for _ in range(args.rounds)]
    emit(
        "pipeline",
        {
            "shape": "payments: payment/1, valid, in seq order per terminal; mix: MIX",
            "messages_per_round": count,
            "terminals": args.terminals,
            "rounds": args.rounds,
            **figures(rounds, count, len(mix)),
            "code": str(Path(messages.__file__).resolve().parents[1]),
        },
    )


if __name__ == "__main__":
    main()
