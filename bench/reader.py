"""InfluxQL read throughput of cloud.reading.influxql_reader against a real influxd 1.6.

Starts influxd (testkit/servers.py), writes ``--rows`` realistic payments
(wire.points lines, 10,000 terminals) into a fresh database, reads them once to
warm influxd up, then in each round measures side by side:

- ``select``: ``InfluxQLReader.select`` of everything (the anomaly jobs' query:
  10 columns, 3 of them tags, chunked, one time-bounded request);
- ``raw_http``: the same request with plain urllib3, the body read and not
  parsed: what influxd and the transfer cost alone;
- ``reader_replay``: the same ``select`` against a local HTTP server that
  replays the body influxd sent: what the reader itself costs (streaming,
  decoding, merging into columns), without influxd.

Figures are medians over the rounds.

    .venv/bin/python -m bench.reader [--rows 100000] [--rounds 3] [--chunk-size 10000]
"""

from __future__ import annotations

import argparse
import http.server
import itertools
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import msgspec
import urllib3

from bench.common import emit, median
from bench.payments import random_payment
from cloud.reading.influxql_reader import InfluxQLReader, ReaderSettings
from testkit.servers import InfluxDB1Server
from wire.influxql import quote_ident
from wire.pci import card_token
from wire.points import to_line

DB: Final = "bench"
START_NS: Final = 1_764_000_000_000_000_000
STEP_NS: Final = 7_919_000  # ~126 payments/s across the fleet
COLUMNS: Final = [
    "device",
    "site",
    "acquirer",
    "card_token",
    "amount_minor",
    "method",
    "response_code",
    "approved",
    "auth_latency_ms",
    "offline",
]
WRITE_BATCH: Final = 10_000


def payment_lines(count: int, seed: int = 11) -> Iterator[str]:
    rng = random.Random(seed)
    tokens = [card_token(str(4_000_000_000_000_000 + n), b"bench") for n in range(1000)]
    for i in range(count):
        ts = START_NS + i * STEP_NS
        yield to_line(
            random_payment(
                rng,
                site=f"store-{rng.randrange(2_000):04d}",
                device=f"pos-{rng.randrange(10_000):05d}",
                ts=ts,
                seq=i,
                txn_id=f"t{i:010d}",
                tokens=tokens,
            )
        )


def raw_body(reader: InfluxQLReader, end_ns: int) -> tuple[bytes, float]:
    """The select's request with plain urllib3: (body, seconds), nothing parsed."""
    fields = ", ".join(quote_ident(c) for c in COLUMNS)
    q = f"SELECT {fields} FROM payment WHERE time >= {START_NS} AND time < {end_ns}"
    chunk_size = str(reader.settings.chunk_size)
    params = {"db": DB, "epoch": "ns", "chunked": "true", "chunk_size": chunk_size, "q": q}
    http = urllib3.PoolManager(retries=False)
    started = time.perf_counter()
    body = http.request("GET", f"{reader.settings.url}/query", fields=params).data
    return body, time.perf_counter() - started


class Replay(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the body in ``server.body`` (a ``ReplayServer``)."""

    server: ReplayServer

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: no line on stderr per request."""


class ReplayServer(http.server.ThreadingHTTPServer):
    body = b""


def write_payments(server: InfluxDB1Server, rows: int) -> None:
    lines = payment_lines(rows)
    while batch := list(itertools.islice(lines, WRITE_BATCH)):
        server.write(batch, DB)


def timed_select(reader: InfluxQLReader, rows: int) -> float:
    started = time.perf_counter()
    table = reader.select("payment", COLUMNS, START_NS, START_NS + rows * STEP_NS)
    seconds = time.perf_counter() - started
    if len(table) != rows:
        raise SystemExit(f"read {len(table)} rows, wrote {rows}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=10_000)
    args = parser.parse_args()

    end_ns = START_NS + args.rows * STEP_NS
    selects: list[float] = []
    raws: list[float] = []
    replays: list[float] = []
    replay = ReplayServer(("127.0.0.1", 0), Replay)
    threading.Thread(target=replay.serve_forever, daemon=True).start()
    replay_url = f"http://127.0.0.1:{replay.server_address[1]}"
    with tempfile.TemporaryDirectory(prefix="bench-reader-") as tmp:
        server = InfluxDB1Server(Path(tmp) / "influxdb").start()
        try:
            server.create_database(DB)
            write_payments(server, args.rows)
            settings = ReaderSettings(
                url=server.url, database=DB, chunk_size=args.chunk_size, max_span_s=86_400
            )
            with (
                InfluxQLReader(settings) as reader,
                InfluxQLReader(msgspec.structs.replace(settings, url=replay_url)) as replayed,
            ):
                timed_select(reader, args.rows)  # warm-up
                for _ in range(args.rounds):
                    selects.append(timed_select(reader, args.rows))
                    replay.body, seconds = raw_body(reader, end_ns)
                    raws.append(seconds)
                    replays.append(timed_select(replayed, args.rows))
        finally:
            server.stop()
            replay.shutdown()

    emit(
        "reader",
        {
            "server": "influxd 1.6.7 (Debian), same machine",
            "shape": "payment: 10 columns (3 tags, 7 fields), 10,000 terminals, no GROUP BY",
            "rows": args.rows,
            "rounds": args.rounds,
            "chunk_size": args.chunk_size,
            "response_mib": round(len(replay.body) / 2**20, 1),
            "select_rows_per_s": round(args.rows / median(selects)),
            "raw_http_rows_per_s": round(args.rows / median(raws)),
            "reader_replay_rows_per_s": round(args.rows / median(replays)),
        },
    )


if __name__ == "__main__":
    main()
