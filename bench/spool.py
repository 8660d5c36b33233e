"""Gateway spool: append throughput per fsync policy and group size, and forwarder throughput.

Appends: payment lines (wire.points, ~280 bytes; the tests' generator, 200
terminals) appended in groups of 1, 100 and 1000 lines with an fsync per
append (the default policy: one fsync per group commit), and with the
``interval`` policy (fsync at most once a second).
Forwarder: a prefilled spool drained by `gateway.forwarder.Forwarder` into a
real influxd 1.6 (v1 sink), against the same batches written straight with
the sink (no spool), each going first in every other round; the ratio is
the spool's cost.
Figures are medians over the rounds. The spool lives in ``--dir`` (default:
the system temp dir; fsync figures are only meaningful on a real disk).

    .venv/bin/python -m bench.spool [--rounds 5] [--forward-lines 100000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import emit, median
from gateway.forwarder import Forwarder, ForwarderSettings
from gateway.spool import FsyncMode, FsyncPolicy, Spool
from runtime.deadletters import DeadLetters
from runtime.influx_sinks import V1Sink
from testkit.factories import payment_lines
from testkit.servers import InfluxDB1Server, wait_until

# (fsync mode, lines per append, lines per round): fewer lines where each costs an fsync
APPEND_CASES = [
    (FsyncMode.ALWAYS, 1, 2_000),
    (FsyncMode.ALWAYS, 100, 100_000),
    (FsyncMode.ALWAYS, 1000, 200_000),
    (FsyncMode.INTERVAL, 1, 100_000),
    (FsyncMode.INTERVAL, 100, 200_000),
    (FsyncMode.INTERVAL, 1000, 200_000),
]
_rounds = itertools.count()


def fresh_dir(base: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix="bench-spool-", dir=base))


def append_rate(base: Path, lines: list[bytes], mode: FsyncMode, group: int, count: int) -> float:
    directory = fresh_dir(base)
    try:
        with Spool(directory, max_bytes=8 << 30, fsync=FsyncPolicy(mode)) as spool:
            started = time.perf_counter()
            for offset in range(0, count, group):
                start_at = offset % len(lines)
                spool.append(lines[start_at : start_at + group])
            elapsed = time.perf_counter() - started
        return count / elapsed
    finally:
        shutil.rmtree(directory)


def forward_rate(base: Path, server: InfluxDB1Server, lines: list[bytes]) -> float:
    directory = fresh_dir(base)
    db = f"bench{next(_rounds)}"
    server.create_database(db)
    try:
        with Spool(directory / "spool", max_bytes=8 << 30) as spool:
            for offset in range(0, len(lines), 1000):
                spool.append(lines[offset : offset + 1000])
            with V1Sink(server.url, db) as sink:
                forwarder = Forwarder(spool, sink, DeadLetters(directory / "dead"))
                start = time.perf_counter()
                forwarder.start()
                wait_until(lambda: spool.stats().depth_lines == 0, timeout=300, interval=0.005)
                elapsed = time.perf_counter() - start
                forwarder.stop()
        return len(lines) / elapsed
    finally:
        shutil.rmtree(directory)


def sink_rate(server: InfluxDB1Server, lines: list[bytes]) -> float:
    db = f"bench{next(_rounds)}"
    server.create_database(db)
    batch = ForwarderSettings().batch_lines
    with V1Sink(server.url, db) as sink:
        start = time.perf_counter()
        for offset in range(0, len(lines), batch):
            sink.write(lines[offset : offset + batch])
        return len(lines) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--forward-lines", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()

    lines = payment_lines(args.forward_lines)  # 200 terminals, 1 series each
    figures: dict[str, object] = {"line_bytes": round(sum(map(len, lines)) / len(lines))}
    for mode, group, count in APPEND_CASES:
        rates = [append_rate(args.dir, lines, mode, group, count) for _ in range(args.rounds)]
        figures[f"append_lines_per_s_fsync_{mode}_group_{group}"] = round(median(rates))

    workdir = fresh_dir(args.dir)
    try:
        with InfluxDB1Server(workdir / "influxdb") as server:
            forwarded: list[float] = []
            direct: list[float] = []
            for round_ in range(args.rounds):  # alternate who goes first (influxd compacts)
                if round_ % 2:
                    direct.append(sink_rate(server, lines))
                forwarded.append(forward_rate(args.dir, server, lines))
                if not round_ % 2:
                    direct.append(sink_rate(server, lines))
    finally:
        shutil.rmtree(workdir)
    figures |= {
        "forward_lines_per_round": args.forward_lines,
        "forward_batch_lines": ForwarderSettings().batch_lines,
        "forwarder_lines_per_s": round(median(forwarded)),
        "sink_only_lines_per_s": round(median(direct)),
        "forwarder_to_sink_ratio": round(
            median([f / d for f, d in zip(forwarded, direct, strict=True)]), 2
        ),
        "rounds": args.rounds,
        "influxdb": "influxd 1.6 (Debian), same machine",
    }
    emit("spool", figures)


if __name__ == "__main__":
    main()
