"""Edge outbox throughput: puts/s (single and batched, fsync FULL vs NORMAL) and drain rate.

Every round uses a fresh database in ``--dir`` (put it on the filesystem the
agent will use: fsync cost is a property of the disk). Payloads are real
encoded PaymentTransaction messages (about 350 bytes). Figures are medians
over the rounds; the FULL/NORMAL ratio is taken within each round.

* ``put_single_*``: one `Outbox.put` per transaction, as a serial reader
  storing one frame at a time (``full``: high priority with the fsync the
  agent uses; ``normal``: ``fsync_high_priority=False``, no fsync at commit).
* ``put_batched_*``: `Outbox.put_many` of ``--batch`` entries per transaction.
* ``drain_*``: a backlog of ``--backlog`` rows leased in windows of
  ``--window`` and acked with one `ack_many` per window (``batched_ack``, as the
  publisher does per loop turn) or one `ack` per row (``single_ack``).

    .venv/bin/python -m bench.outbox [--rounds 5] [--dir /var/lib/tillpulse]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import emit, median
from edge.outbox import Entry, Outbox, Priority
from wire.messages import PaymentMethod, PaymentTransaction, encode
from wire.pci import card_token
from wire.topics import Stream, device_topic

DEVICE = "pos-00001"
TOPIC = device_topic("store-0001", DEVICE, Stream.PAYMENT)
TOKEN = card_token("4000000000000002", b"bench")


def payment(seq: int) -> Entry:
    message = PaymentTransaction(
        site="store-0001",
        device=DEVICE,
        ts=1_764_000_000_000_000_000 + seq * 1_000_000,
        seq=seq,
        txn_id=f"t{seq:012d}",
        card_token=TOKEN,
        amount_minor=1_000 + seq % 9_000,
        currency="EUR",
        method=PaymentMethod.CONTACTLESS,
        acquirer="acq-a",
        mcc="5411",
        response_code="00",
        approved=True,
        auth_latency_ms=240.5,
    )
    return Entry(TOPIC, encode(message), Priority.HIGH, DEVICE, seq)


def fresh_outbox(directory: Path, *, fsync: bool, window: int = 256) -> Outbox:
    path = Path(tempfile.mkdtemp(dir=directory)) / "outbox.db"
    return Outbox(path, max_bytes=1 << 30, max_in_flight=window, fsync_high_priority=fsync)


def timed(work: Callable[[], int]) -> float:
    """Items per second of ``work`` (which returns how many items it handled)."""
    start = time.perf_counter()
    count = work()
    return count / (time.perf_counter() - start)


def put_single(directory: Path, entries: list[Entry], *, fsync: bool) -> float:
    with fresh_outbox(directory, fsync=fsync) as box:

        def work() -> int:
            for e in entries:
                box.put(e.topic, e.payload, e.priority, e.device, e.seq)
            return len(entries)

        return timed(work)


def put_batched(directory: Path, entries: list[Entry], batch: int, *, fsync: bool) -> float:
    with fresh_outbox(directory, fsync=fsync) as box:

        def work() -> int:
            for start in range(0, len(entries), batch):
                box.put_many(entries[start : start + batch])
            return len(entries)

        return timed(work)


def drain(directory: Path, entries: list[Entry], window: int, *, batched_ack: bool) -> float:
    with fresh_outbox(directory, fsync=False, window=window) as box:
        for start in range(0, len(entries), 10_000):
            box.put_many(entries[start : start + 10_000])

        def work() -> int:
            drained = 0
            while rows := box.lease(window):
                if batched_ack:
                    box.ack_many(row.row_id for row in rows)
                else:
                    for row in rows:
                        box.ack(row.row_id)
                drained += len(rows)
            return drained

        return timed(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--single", type=int, default=2_000, help="puts per single-put round")
    parser.add_argument("--batched", type=int, default=20_000, help="puts per batched round")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go")
    args = parser.parse_args()

    entries = [payment(seq) for seq in range(max(args.single, args.batched, args.backlog))]
    figures: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        for _ in range(args.rounds):
            runs = {
                "put_single_full_per_s": put_single(directory, entries[: args.single], fsync=True),
                "put_single_normal_per_s": put_single(
                    directory, entries[: args.single], fsync=False
                ),
                "put_batched_full_per_s": put_batched(
                    directory, entries[: args.batched], args.batch, fsync=True
                ),
                "put_batched_normal_per_s": put_batched(
                    directory, entries[: args.batched], args.batch, fsync=False
                ),
                "drain_batched_ack_per_s": drain(
                    directory, entries[: args.backlog], args.window, batched_ack=True
                ),
                "drain_single_ack_per_s": drain(
                    directory, entries[: args.backlog], args.window, batched_ack=False
                ),
            }
            runs["single_full_over_normal"] = (
                runs["put_single_full_per_s"] / runs["put_single_normal_per_s"]
            )
            for name, value in runs.items():
                figures.setdefault(name, []).append(value)
        directory_name = str(directory.parent)

    emit(
        "outbox",
        {
            "payload_bytes": len(entries[0].payload),
            "rounds": args.rounds,
            "batch": args.batch,
            "backlog": args.backlog,
            "window": args.window,
            "dir": directory_name,
            **{
                name: round(median(values), 3 if "over" in name else None)
                for name, values in figures.items()
            },
        },
    )


if __name__ == "__main__":
    main()
