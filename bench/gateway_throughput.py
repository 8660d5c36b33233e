"""Gateway throughput, latency and memory: MQTT (QoS 1) -> gateway -> InfluxDB, all on this machine.

Starts a real Mosquitto (``max_inflight_messages 0``, a large
``max_queued_messages``, persistence off) and a real influxd 1.6 (testkit/servers.py),
builds two small C clients with libmosquitto (bench/c/) into a temp dir, and
in each round measures side by side:

- ``c_pipe``: the C publisher to the C subscriber through the broker at QoS 1.
  The rate counts what arrives at the subscriber: N / (last arrival - first
  publish).
- ``gateway x1`` and ``gateway x2`` (two processes on one ``$share`` group):
  ``python -m gateway run`` children (v1 dialect to influxd, durable spool with
  ``fsync = "always"``), fed by the same C publisher with the same events.
  The rate is N / (time from the first publish until InfluxQL
  ``SELECT count(txn_id) FROM payment`` reaches N); then
  ``count(distinct(txn_id))`` must equal N as well (no loss, no duplicate).
  Each also reports the CPU time per event of the gateway process(es), the
  broker and influxd over that window (``/proc/<pid>/stat``): on a shared
  machine a steadier figure than a rate.
- ``baseline1`` with ``--baseline-repo DIR``: one gateway run from another
  tree (``git archive HEAD | tar -x -C DIR``), in the same rounds, for a
  before/after ratio.

With ``--drain``, also in every round: the ingest alone (`gateway.ingest.Ingest`
with the pipeline and a spool, no forwarder, no InfluxDB) of this tree and of
the baseline, in a child process each, draining the same events queued for it
in the broker beforehand: its rate and the CPU time per event of its thread
(``time.thread_time``), the figure the MQTT client and the spool path change.

Then one gateway for ``--soak-s`` seconds at half the median one-gateway rate:
end-to-end latency (publish -> queryable in InfluxDB) of probe events (every
``PROBE_EVERY``-th event comes from a probe terminal; the publisher stamps
``ts`` with the publish time, the bench polls InfluxDB every ``POLL_S`` for new
probes, so a latency is over-stated by up to one poll interval), the
gateway's RSS sampled once a second, and the CPU time per event of the gateway,
Mosquitto, influxd and the publisher over the soak (at a moderate rate each costs
more per event than at full speed, where reads and writes are larger).

The events are realistic ``wire.messages.PaymentTransaction`` payloads from a
fleet of terminals (5 per site, about 7% declined) on their
``wire.topics.device_topic``. Each gateway gets a fresh state dir and the round
a fresh database. ``session_expiry_s = 0`` so a stopped gateway's session does
not keep queueing the next rounds' events on the broker (while connected, the
session behaves as in production).

    .venv/bin/python -m bench.gateway_throughput [--events 200000] [--rounds 3] [--soak-s 60]
    # the 10-minute soak alone, at a given rate:
    .venv/bin/python -m bench.gateway_throughput --rounds 0 --soak-rate 2300 --soak-s 600

The soak publishes the event file whole passes over, so it lasts at least
``--soak-s``. ``--segment-mib`` sets the spool's segment size (default 64, the
gateway's default).

Needs: mosquitto, influxdb (influxd 1.6), a C compiler and libmosquitto-dev.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Final

from bench.common import emit, median
from bench.payments import random_payment
from gateway.pipeline import Pipeline, Verdict
from testkit.mqtt_collector import publish_all
from testkit.servers import InfluxDB1Server, MosquittoServer, ServerError, free_port, wait_until
from wire.messages import PaymentMethod, PaymentTransaction, encode
from wire.pci import card_token
from wire.points import SEQ_SLOTS_PER_MS
from wire.topics import Stream, device_subscription, device_topic

REPO: Final = Path(__file__).resolve().parents[1]
C_DIR: Final = Path(__file__).resolve().parent / "c"
PROBE_SITE: Final = "probe"
PROBE_EVERY: Final = 200  # one event in this many comes from a probe terminal
POLL_S: Final = 0.1  # latency poll interval
COUNT_POLL_S: Final = 0.2  # throughput poll interval
TS_MARK: Final = b"@" * 19  # tp_pub writes the publish time (ns) here
PASS_MARK: Final = b"%" * 6  # tp_pub writes the pass number here
SEQ_MARK: Final = b"&" * 12  # tp_pub writes the topic's running count here
TS_SENTINEL: Final = 1_111_111_111_111_111_111
GATEWAY_COMMAND: Final = (sys.executable, "-m", "gateway", "run")
GATEWAY_RECEIVE_MAXIMUM: Final = 1000  # the gateway's default; the C subscriber gets the same
PUBLISH_WINDOW: Final = 1000


class BenchError(RuntimeError):
    pass


# ---------------------------------------------------------------------- C clients


def build_c_clients(into: Path) -> tuple[Path, Path]:
    """Compile bench/c/tp_pub.c and tp_sub.c; a clear error if headers or cc are missing."""
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        raise BenchError("no C compiler: apt-get install -y gcc")
    header = subprocess.run(
        [cc, "-E", "-x", "c", "-"],
        check=False,
        input="#include <mosquitto.h>\n#include <mqtt_protocol.h>\n",
        capture_output=True,
        text=True,
    )
    if header.returncode != 0:
        raise BenchError(
            "libmosquitto headers not found (mosquitto.h): "
            "apt-get update && apt-get install -y libmosquitto-dev"
        )
    out = []
    for name in ("tp_pub", "tp_sub"):
        binary = into / name
        done = subprocess.run(
            [cc, "-O2", "-o", str(binary), str(C_DIR / f"{name}.c"), "-lmosquitto"],
            check=False,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise BenchError(f"building {name} failed:\n{done.stderr}")
        out.append(binary)
    return out[0], out[1]


# ------------------------------------------------------------------------- events


def write_events(path: Path, count: int, terminals: int, seed: int = 11) -> None:
    """``count`` payment events as ``topic<TAB>payload`` lines with tp_pub's markers.

    ``ts`` is the publish time and ``seq`` is ``1<n:012>`` where n counts the
    terminal's events as published (both filled in by tp_pub, so a terminal's
    seqs run on without a gap across passes); ``txn_id`` carries the pass
    number, so repeated passes stay distinct events. Every PROBE_EVERY-th
    event comes from one of the probe terminals.
    """
    rng = random.Random(seed)
    fleet = [(f"store-{n // 5:04d}", f"store-{n // 5:04d}-pos{n % 5}") for n in range(terminals)]
    probes = [(PROBE_SITE, f"probe-pos{n}") for n in range(5)]
    tokens = [card_token(str(4_000_000_000_000_000 + n * 7919), b"bench") for n in range(5000)]
    seq_sentinel = 1_999_999_000_000
    with path.open("wb") as out:
        for i in range(count):
            site, device = (
                probes[i // PROBE_EVERY % len(probes)]
                if i % PROBE_EVERY == 0
                else fleet[rng.randrange(terminals)]
            )
            message = random_payment(
                rng,
                site=site,
                device=device,
                ts=TS_SENTINEL,
                seq=seq_sentinel,
                txn_id=f"TPASSXXx{i:08d}",
                tokens=tokens,
            )
            payload = encode(message)
            for old, new in (
                (b'"ts":%d' % TS_SENTINEL, b'"ts":' + TS_MARK),
                (b'"seq":%d' % seq_sentinel, b'"seq":1' + SEQ_MARK),
                (b'"txn_id":"TPASSXX', b'"txn_id":"T' + PASS_MARK),
            ):
                if payload.count(old) != 1:
                    raise BenchError(f"payload template: {old!r} not found once in {payload!r}")
                payload = payload.replace(old, new)
            out.write(device_topic(site, device, Stream.PAYMENT).encode() + b"\t" + payload + b"\n")


def fill_markers(payload: bytes, pass_no: int, ts_ns: int, seq: int) -> bytes:
    """What tp_pub sends for ``payload`` (used to check the template decodes)."""
    filled = payload.replace(TS_MARK, b"%019d" % ts_ns).replace(PASS_MARK, b"%06d" % pass_no)
    return filled.replace(SEQ_MARK, b"%012d" % seq)


def check_events(events: Path) -> None:
    """The first events, filled in as tp_pub will, must be accepted by the gateway's pipeline."""
    pipeline = Pipeline("bench-check", time.time_ns())
    with events.open("rb") as lines:
        for i, line in zip(range(PROBE_EVERY + 1), lines, strict=False):
            topic, _, payload = line.rstrip(b"\n").partition(b"\t")
            now = time.time_ns()  # tp_pub sends the publish time: now, to the gateway
            outcome = pipeline.process(topic.decode(), fill_markers(payload, 7, now, i), now)
            if outcome.verdict is not Verdict.ACCEPTED:
                raise BenchError(f"bench event not accepted: {outcome} {payload!r}")


# ------------------------------------------------------------------------ servers


def start_servers(workdir: Path) -> tuple[MosquittoServer, InfluxDB1Server]:
    broker = MosquittoServer(
        workdir / "mosquitto",
        max_inflight_messages=0,  # unlimited
        max_queued_messages=10_000_000,
        extra_config="persistence false\n",  # the later line wins
    ).start()
    influxdb = InfluxDB1Server(workdir / "influxdb").start()
    return broker, influxdb


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time a process used so far (``/proc/<pid>/stat``; 0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU time of named processes since this was made, from readings taken with
    `sample` (a process that has exited keeps its last reading)."""

    def __init__(self, **pids: int | None) -> None:
        self._pids = pids
        self._start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self._seen = dict(self._start)

    def sample(self) -> None:
        self._seen = {
            name: max(self._seen[name], cpu_seconds(pid)) for name, pid in self._pids.items()
        }

    def us_per_event(self, events: int) -> dict[str, float]:
        return {
            name: round((self._seen[name] - self._start[name]) / events * 1e6, 1)
            for name in self._pids
        }


def payment_count(
    influxdb: InfluxDB1Server, db: str, distinct: bool = False, site: str | None = None
) -> int:
    """count(txn_id) (or of the distinct ones) of measurement payment (of one site).

    Plain urllib with a long timeout: over a soak's millions of points, influxd
    takes longer than the test helper's 10 s.
    """
    what = "count(distinct(txn_id))" if distinct else "count(txn_id)"
    where = f" WHERE site = '{site}'" if site else ""
    form = urllib.parse.urlencode({"q": f"SELECT {what} FROM payment{where}", "db": db}).encode()
    with urllib.request.urlopen(f"{influxdb.url}/query", data=form, timeout=300) as response:
        result = json.loads(response.read())["results"][0]
    if "error" in result:
        raise BenchError(f"count query failed: {result['error']}")
    rows = [row for series in result.get("series", []) for row in series["values"]]
    return int(rows[0][1]) if rows else 0


# ------------------------------------------------------------------------ gateway


class GatewayChild:
    """``python -m gateway run --config FILE`` with a fresh state dir; log in the workdir."""

    def __init__(
        self,
        workdir: Path,
        gateway_id: str,
        broker: MosquittoServer,
        influxdb: InfluxDB1Server,
        db: str,
        *,
        shared_group: str | None,
        segment_bytes: int,
        code: Path = REPO,
    ) -> None:
        self.id = gateway_id
        self.http = f"127.0.0.1:{free_port()}"
        state = workdir / gateway_id
        shared = f'shared_group = "{shared_group}"\n' if shared_group else ""
        config = workdir / f"{gateway_id}.toml"
        config.write_text(
            f"""
[gateway]
id = "{gateway_id}"
state_dir = "{state}"
[mqtt]
host = "{broker.host}"
port = {broker.port}
session_expiry_s = 0
receive_maximum = {GATEWAY_RECEIVE_MAXIMUM}
{shared}[influxdb]
dialect = "v1"
url = "{influxdb.url}"
database = "{db}"
[spool]
max_bytes = 1073741824
segment_bytes = {segment_bytes}
fsync = "always"
[gaps]
enabled = {"false" if shared_group else "true"}
[http]
listen = "{self.http}"
"""
        )
        self.log_path = workdir / f"{gateway_id}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*GATEWAY_COMMAND, "--config", str(config), "--log-level", "warning"],
                cwd=code,  # python -m gateway imports the gateway of this tree
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def metric(self, name: str) -> float | None:
        try:
            with urllib.request.urlopen(f"http://{self.http}/metrics", timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(f"{name}{{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def ingested(self) -> float:
        """Messages the gateway acknowledged so far (0 while /metrics does not answer)."""
        return self.metric("tillpulse_gateway_ingest_acked_total") or 0

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.process.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise BenchError("no VmRSS")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise BenchError(f"gateway {self.id} exited {self.process.returncode}:\n{tail}")


def warm_up(
    gateways: list[GatewayChild], broker: MosquittoServer, influxdb: InfluxDB1Server, db: str
) -> int:
    """Publish a few events until every gateway took some and they are in InfluxDB.

    Proves each gateway is subscribed (an event published before that found
    nobody) and the whole path is live before the clock starts. Returns how
    many warm-up events are in InfluxDB.
    """
    sent = 0
    deadline = time.monotonic() + 60
    while True:
        for g in gateways:
            g.check_alive()
        batch = [
            (
                device_topic("warmup", f"warm-{n % 7}", Stream.PAYMENT),
                encode(
                    PaymentTransaction(
                        site="warmup",
                        device=f"warm-{n % 7}",
                        ts=time.time_ns(),
                        seq=n,
                        txn_id=f"W{n}",
                        card_token=card_token("4000000000000002", b"bench"),
                        amount_minor=100,
                        currency="EUR",
                        method=PaymentMethod.CHIP,
                        acquirer="acq-a",
                        mcc="5411",
                        response_code="00",
                        approved=True,
                        auth_latency_ms=100.0,
                    )
                ),
            )
            for n in range(sent, sent + 10 * len(gateways))
        ]
        publish_all(broker.host, broker.port, batch)
        sent += len(batch)
        time.sleep(1.2)  # /metrics is refreshed once a second
        took = [g.metric("tillpulse_gateway_ingest_received_total") or 0 for g in gateways]
        if all(t > 0 for t in took):  # all subscribed; the first events may have found nobody
            break
        if time.monotonic() > deadline:
            raise BenchError(f"gateways did not all take warm-up events: {took} of {sent}")
    last = -1
    while True:  # settled: what the gateways took is in InfluxDB, and nothing more comes
        time.sleep(1.2)
        took = [g.metric("tillpulse_gateway_ingest_received_total") or 0 for g in gateways]
        landed = payment_count(influxdb, db)
        if landed == sum(took) == last:
            return landed
        last = landed
        if time.monotonic() > deadline:
            raise BenchError(f"warm-up did not settle: {took} taken, {landed} in InfluxDB")


def run_publisher(
    tp_pub: Path,
    broker: MosquittoServer,
    events: Path,
    *,
    rate: float = 0,
    passes: int = 1,
    client_id: str = "tp_pub",
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(str(tp_pub), broker.host, str(broker.port), str(events)),
            *("--window", str(PUBLISH_WINDOW), "--rate", str(rate), "--passes", str(passes)),
            *("--id", client_id),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def publisher_result(publisher: subprocess.Popen[str], timeout: float) -> dict[str, int]:
    out, _ = publisher.communicate(timeout=timeout)
    if publisher.returncode != 0:
        raise BenchError(f"tp_pub exited {publisher.returncode}: {out}")
    result: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------------ measures


def c_pipe(
    tp_pub: Path, tp_sub: Path, broker: MosquittoServer, *, events: Path, count: int, tag: str
) -> dict[str, Any]:
    subscriber = subprocess.Popen(
        [
            *(str(tp_sub), broker.host, str(broker.port), device_subscription(), str(count)),
            *("--receive-maximum", str(GATEWAY_RECEIVE_MAXIMUM), "--idle-s", "10"),
            *("--id", f"tp_sub-{tag}"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert subscriber.stdout is not None
    if subscriber.stdout.readline().strip() != "subscribed":
        raise BenchError("tp_sub did not subscribe")
    published = publisher_result(
        run_publisher(tp_pub, broker, events, client_id=f"tp_pub-{tag}"), 600
    )
    if published["no_subscribers"]:
        raise BenchError(f"C pipe: {published['no_subscribers']} events found no subscriber")
    out, _ = subscriber.communicate(timeout=600)
    received = json.loads(out.strip().splitlines()[-1])
    seconds = (received["last_ns"] - published["start_ns"]) / 1e9
    return {
        "received": received["received"],
        "acked_by_broker": published["acked"],
        "events_per_s": received["received"] / seconds,
    }


def gateway_rate(
    workdir: Path,
    tp_pub: Path,
    broker: MosquittoServer,
    influxdb: InfluxDB1Server,
    *,
    events: Path,
    count: int,
    gateways: int,
    tag: str,
    timeout_s: float,
    segment_bytes: int,
    code: Path = REPO,
) -> dict[str, Any]:
    db = f"bench_{tag}"
    influxdb.create_database(db)
    group = f"gws{tag}" if gateways > 1 else None
    children = [
        GatewayChild(
            workdir,
            f"gw{tag}-{n}",
            broker,
            influxdb,
            db,
            shared_group=group,
            segment_bytes=segment_bytes,
            code=code,
        )
        for n in range(1, gateways + 1)
    ]
    try:
        warm = warm_up(children, broker, influxdb, db)
        expected = warm + count
        pids: dict[str, list[int | None]] = {
            "gateway": [g.process.pid for g in children],
            "broker": [broker.pid],
            "influxd": [influxdb.pid],
        }
        cpu_before = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
        publisher = run_publisher(tp_pub, broker, events, client_id=f"tp_pub-{tag}")
        deadline = time.monotonic() + timeout_s
        # Until the probe terminals' last event is in, count those alone: a count of
        # every payment scans all of them, and 5 such scans a second cost influxd ~40 us
        # of CPU per event (measured; storing one costs ~50), taken from the processes
        # under test. The probes are spread evenly, the last one 200 events from the
        # end, so only the tail is timed with the full count.
        probes = len(range(0, count, PROBE_EVERY))
        landed = 0
        ingested_ns: int | None = None  # when the gateways had taken every event
        while landed < expected:
            if time.monotonic() > deadline:
                raise BenchError(f"{tag}: only {landed - warm} of {count} events in InfluxDB")
            for g in children:
                g.check_alive()
            time.sleep(COUNT_POLL_S)
            if ingested_ns is None and sum(g.ingested() for g in children) >= expected:
                ingested_ns = time.time_ns()
            if payment_count(influxdb, db, site=PROBE_SITE) >= probes:
                landed = payment_count(influxdb, db)
        done_ns = time.time_ns()
        cpu_us = {
            k: round((sum(cpu_seconds(p) for p in v) - cpu_before[k]) / count * 1e6, 1)
            for k, v in pids.items()
        }
        published = publisher_result(publisher, 60)
        if published["no_subscribers"]:
            raise BenchError(f"{tag}: {published['no_subscribers']} events found no subscriber")
        distinct = payment_count(influxdb, db, distinct=True)
        shares = [g.metric("tillpulse_gateway_ingest_received_total") for g in children]
        rss = [g.rss_bytes() for g in children]
    finally:
        for g in children:
            g.stop()
    if distinct != expected or landed != expected:
        raise BenchError(f"{tag}: {landed} points, {distinct} distinct, expected {expected}")
    ingested_ns = ingested_ns or done_ns
    return {
        "events_per_s": count / ((done_ns - published["start_ns"]) / 1e9),
        # the ingest's own pace (MQTT -> spool, acked): events over the time until the
        # gateways' /metrics counted them all (refreshed once a second, so a pace
        # understated by up to a second); the rest is the forwarder and influxd catching up
        "ingest_events_per_s": round(count / ((ingested_ns - published["start_ns"]) / 1e9)),
        "points": landed - warm,
        "distinct_txn_ids": distinct - warm,
        "received_per_gateway": shares,
        # CPU per event of the gateway process(es), and of the broker and influxd
        # beside them: less sensitive to the machine's other load than a rate
        "cpu_us_per_event": cpu_us,
        "rss_mb_after": [round(r / 2**20) for r in rss],
    }


# Run with ``python -c`` in the tree under test (its cwd), so it imports that tree's
# gateway: argv host port state_dir client_id count. count 0: only create the
# persistent session and its subscription; else drain ``count`` events from it, print
# the figures, and drop the session (it would queue every later round's events).
DRAIN_CHILD: Final = """
import json, sys, threading, time
from pathlib import Path
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from gateway.config import TimestampsSection
from gateway.ingest import Ingest
from gateway.pipeline import Pipeline
from gateway.spool import Spool
from runtime.config_sections import LinkSettings
from runtime.deadletters import DeadLetters
from testkit.servers import wait_until

host, port, state, client_id, count = sys.argv[1:6]
settings = LinkSettings(
    host=host, port=int(port), client_id=client_id, receive_maximum=RECEIVE_MAXIMUM,
    session_expiry_s=600,
)
pipeline = Pipeline(client_id, time.time_ns(), timestamps=TimestampsSection())
with Spool(Path(state) / "spool") as spool:
    ingest = Ingest(
        settings, password=None, gateway=client_id, shared_group=None, pipeline=pipeline,
        spool=spool, deadletters=DeadLetters(Path(state) / "deadletters"),
    )
    stop, cpu = threading.Event(), []
    def run():
        start = time.thread_time()
        ingest.run(stop)
        cpu.append(time.thread_time() - start)
    thread = threading.Thread(target=run)
    start = time.monotonic()
    thread.start()
    wait_until(lambda: ingest.stats.acked >= int(count) and ingest.link.status.connected, 600)
    wall = time.monotonic() - start
    stop.set()
    thread.join()
if int(count):
    rejected = sum(pipeline.stats().rejected.values())
    print(json.dumps({"wall_s": wall, "cpu_s": cpu[0], "rejected": rejected}))
    drop = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    drop.connect(host, int(port), clean_start=True)  # session expiry 0: gone on disconnect
    drop.loop_start()
    wait_until(drop.is_connected, 10)
    drop.disconnect()
    drop.loop_stop()
""".replace("RECEIVE_MAXIMUM", str(GATEWAY_RECEIVE_MAXIMUM))


def ingest_drain(
    workdir: Path,
    tp_pub: Path,
    broker: MosquittoServer,
    *,
    events: Path,
    count: int,
    tag: str,
    code: Path,
) -> dict[str, float]:
    """The ingest of the tree ``code`` draining ``count`` events queued for its session."""
    state, client_id = workdir / f"drain-{tag}", f"drain-{tag}"

    def child(n: int) -> str:
        args = [broker.host, str(broker.port), str(state), client_id, str(n)]
        done = subprocess.run(
            [sys.executable, "-c", DRAIN_CHILD, *args],
            cwd=code,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0:
            raise BenchError(f"{tag}: the ingest child failed:\n{done.stderr[-2000:]}")
        return done.stdout

    child(0)
    published = publisher_result(run_publisher(tp_pub, broker, events, client_id=f"pub-{tag}"), 600)
    if published["acked"] != count or published["no_subscribers"]:
        raise BenchError(f"{tag}: {published} of {count} events for the ingest's session")
    figures = json.loads(child(count).strip().splitlines()[-1])
    if figures["rejected"]:
        raise BenchError(f"{tag}: the pipeline rejected {figures['rejected']} events")
    return {
        "events_per_s": round(count / figures["wall_s"]),
        "ingest_thread_cpu_us_per_event": round(figures["cpu_s"] / count * 1e6, 1),
    }


def latency_and_soak(
    workdir: Path,
    tp_pub: Path,
    broker: MosquittoServer,
    influxdb: InfluxDB1Server,
    *,
    events: Path,
    count: int,
    rate: float,
    soak_s: float,
    segment_bytes: int,
) -> dict[str, Any]:
    db = "bench_soak"
    influxdb.create_database(db)
    gateway = GatewayChild(
        workdir, "gw-soak", broker, influxdb, db, shared_group=None, segment_bytes=segment_bytes
    )
    passes = max(1, math.ceil(rate * soak_s / count))
    total = passes * count
    probes_expected = passes * len(range(0, count, PROBE_EVERY))
    seen: dict[str, int] = {}  # probe txn_id -> latency ns
    rss: list[tuple[float, int]] = []
    try:
        warm = warm_up([gateway], broker, influxdb, db)
        publisher = run_publisher(
            tp_pub, broker, events, rate=rate, passes=passes, client_id="tp_pub-soak"
        )
        started = time.monotonic()
        next_rss = started
        cpu = CpuMeter(
            gateway=gateway.process.pid,
            broker=broker.pid,
            influxd=influxdb.pid,
            publisher=publisher.pid,
        )
        cursor_ns = time.time_ns() - 10**9
        soak_deadline = started + total / rate + 120
        while len(seen) < probes_expected:
            gateway.check_alive()
            now = time.monotonic()
            if now > soak_deadline:
                raise BenchError(f"soak: {len(seen)} of {probes_expected} probes landed")
            if now >= next_rss:
                rss.append((now - started, gateway.rss_bytes()))
                cpu.sample()
                next_rss += 1.0
                if len(rss) % 60 == 0:
                    progress(
                        f"soak {rss[-1][0]:.0f} s: RSS {rss[-1][1] / 2**20:.1f} MiB, "
                        f"{len(seen)} probes"
                    )
            rows = influxdb.series_values(
                f"SELECT seq, txn_id FROM payment WHERE site = '{PROBE_SITE}' "
                f"AND time > {cursor_ns}",
                db,
            )
            polled_ns = time.time_ns()
            for point_ns, seq, txn_id in rows:
                if seq is None or txn_id is None:
                    continue  # influxd is mid-write of this point: not all its fields yet
                if txn_id not in seen:
                    # point time = ms-truncated publish time + seq % SEQ_SLOTS_PER_MS
                    seen[txn_id] = polled_ns - (point_ns - seq % SEQ_SLOTS_PER_MS)
            # re-read 30 s back: a probe slower than that is missed (and the soak fails)
            cursor_ns = polled_ns - 30 * 10**9
            time.sleep(POLL_S)
        published = publisher_result(publisher, 60)
        wait_until(
            lambda: payment_count(influxdb, db) >= warm + total,
            120,
            interval=COUNT_POLL_S,
            message="soak events in InfluxDB",
        )
        distinct = payment_count(influxdb, db, distinct=True)
        rss.append((time.monotonic() - started, gateway.rss_bytes()))
        # where a latency tail comes from: InfluxDB's answers (the forwarder's writes,
        # over its last 1,000 batches) or before them (MQTT, the ingest, the spool)
        write_p99 = gateway.metric("tillpulse_gateway_forwarder_latency_p99_s")
    finally:
        gateway.stop()
    if distinct != warm + total:
        raise BenchError(f"soak: {distinct - warm} distinct events of {total}")
    latencies = sorted(seen.values())

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1e6, 1)

    publish_s = (published["end_ns"] - published["start_ns"]) / 1e9
    in_soak = [r for t, r in rss if t <= publish_s] or [rss[0][1]]
    return {
        "target_rate": round(rate),
        "published_rate": round(total / publish_s),
        "seconds": round(publish_s, 1),
        "events": total,
        "distinct_txn_ids": distinct - warm,
        "latency_probes": len(latencies),
        "latency_ms_p50": pct(0.50),
        "latency_ms_p99": pct(0.99),
        "latency_ms_max": round(latencies[-1] / 1e6, 1),
        # the cost of an event at this rate, the load generator's included: every
        # process shares the machine's 2 cores (read once a second, so the publisher's
        # last second is left out)
        "cpu_us_per_event": cpu.us_per_event(total),
        "forwarder_write_ms_p99_last_1000_batches": (
            None if write_p99 is None else round(write_p99 * 1000, 1)
        ),
        "rss_mb_start": round(in_soak[0] / 2**20, 1),
        "rss_mb_end": round(in_soak[-1] / 2**20, 1),
        "rss_mb_max": round(max(in_soak) / 2**20, 1),
        # RSS at each tenth of the soak: the bounded structures (dedup's 200,000
        # entries first) fill during the first ~200,000 events, flat after that
        "rss_mb_by_tenth": [
            round(in_soak[min(len(in_soak) - 1, len(in_soak) * k // 10)] / 2**20, 1)
            for k in range(11)
        ],
    }


# --------------------------------------------------------------------------- main


def progress(text: str) -> None:
    sys.stderr.write(f"[gateway_throughput {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def cpu_medians(checks: list[dict[str, Any]], variant: str) -> dict[str, float]:
    """Median CPU us per event of each process kind over the rounds of ``variant``."""
    rounds = [c["cpu_us_per_event"] for c in checks if c["variant"] == variant]
    return {k: round(median([r[k] for r in rounds]), 1) for k in rounds[0]} if rounds else {}


def rounded(values: list[float]) -> list[int]:
    return [round(v) for v in values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--terminals", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--soak-s", type=float, default=60.0, help="600 for the 10-minute soak")
    parser.add_argument("--no-soak", action="store_true")
    parser.add_argument(
        "--segment-mib",
        type=int,
        default=64,
        help="spool segment size (64: the default; 1024: no rotation below 1 GiB)",
    )
    parser.add_argument(
        "--soak-rate", type=float, help="events/s of the soak (default: half the x1 median)"
    )
    parser.add_argument("--no-x2", action="store_true", help="skip the two-gateway measure")
    parser.add_argument(
        "--baseline-repo",
        type=Path,
        help="also measure one gateway run from this tree in every round (before vs after: "
        "git archive HEAD | tar -x -C DIR)",
    )
    parser.add_argument(
        "--drain",
        action="store_true",
        help="also measure the ingest alone draining a backlog, this tree and the baseline",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args()
    count: int = args.events

    workdir = Path(tempfile.mkdtemp(prefix="tp-bench-gw-"))
    try:
        tp_pub, tp_sub = build_c_clients(workdir)
        events = workdir / "events.tsv"
        write_events(events, count, args.terminals)
        check_events(events)
        progress(f"{count} events in {events} ({events.stat().st_size >> 20} MiB)")
        broker, influxdb = start_servers(workdir)
        try:
            figures = measure(
                args, workdir, (tp_pub, tp_sub), (broker, influxdb), events=events, count=count
            )
        finally:
            broker.stop()
            influxdb.stop()
    except (BenchError, ServerError) as exc:
        raise SystemExit(f"gateway_throughput: {exc}") from None
    finally:
        if args.keep:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    emit("gateway_throughput", figures)


def measure(
    args: argparse.Namespace,
    workdir: Path,
    clients: tuple[Path, Path],
    servers: tuple[MosquittoServer, InfluxDB1Server],
    *,
    events: Path,
    count: int,
) -> dict[str, Any]:
    tp_pub, tp_sub = clients
    broker, influxdb = servers
    # (label, gateway processes, code tree): each measured in every round
    variants = [("gateway1", 1, REPO)]
    if not args.no_x2:
        variants.append(("gateway2", 2, REPO))
    if args.baseline_repo is not None:
        variants.append(("baseline1", 1, args.baseline_repo.resolve()))
    # the ingest alone, draining a backlog: this tree and the baseline
    drains = [v for v in variants if v[0] != "gateway2"] if args.drain else []
    drained: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in drains}
    pipe: list[float] = []
    rates: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    ratios: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    checks: list[dict[str, Any]] = []
    timeout_s = max(120.0, count / 1000)
    for r in range(1, args.rounds + 1):
        c = c_pipe(tp_pub, tp_sub, broker, events=events, count=count, tag=f"r{r}")
        if c["received"] != count:
            raise BenchError(f"C pipe: {c['received']} of {count} arrived")
        pipe.append(c["events_per_s"])
        progress(f"round {r}: C pipe {c['events_per_s']:,.0f} events/s")
        # every other round in reverse order: no variant always runs first or last
        for label, gateways, code in variants if r % 2 else variants[::-1]:
            g = gateway_rate(
                workdir,
                tp_pub,
                broker,
                influxdb,
                events=events,
                count=count,
                gateways=gateways,
                tag=f"r{r}{label}",
                timeout_s=timeout_s,
                segment_bytes=args.segment_mib << 20,
                code=code,
            )
            rates[label].append(g["events_per_s"])
            ratios[label].append(g["events_per_s"] / c["events_per_s"])
            checks.append({"round": r, "variant": label, "gateways": gateways, **g})
            progress(f"round {r}: {label} {g['events_per_s']:,.0f} events/s {g}")
        for label, _, code in drains if r % 2 else drains[::-1]:
            d = ingest_drain(
                workdir, tp_pub, broker, events=events, count=count, tag=f"r{r}{label}", code=code
            )
            drained[label].append(d)
            progress(f"round {r}: ingest alone, {label}: {d}")
    one = rates["gateway1"]
    if not one and not args.soak_rate:
        raise BenchError("--rounds 0 needs --soak-rate")
    figures: dict[str, Any] = {
        "events_per_round": count,
        "terminals": args.terminals,
        "rounds": args.rounds,
        "qos": 1,
        "spool_fsync": "always",
        "broker": "mosquitto max_inflight_messages 0, max_queued_messages 10M, persistence off",
        "gateway_receive_maximum": GATEWAY_RECEIVE_MAXIMUM,
        "spool_segment_mib": args.segment_mib,
        "c_pipe_events_per_s": round(median(pipe)) if pipe else None,
        "c_pipe_rounds": rounded(pipe),
    }
    for label, _, _ in variants:
        # gateway1 -> ratio1_median, gateway2 -> ratio2_median, baseline1 -> ratio_baseline1_...
        ratio_key = label.replace("gateway", "ratio") if "gateway" in label else f"ratio_{label}"
        measured = bool(rates[label])
        figures[f"{label}_events_per_s"] = round(median(rates[label])) if measured else None
        figures[f"{ratio_key}_median"] = round(median(ratios[label]), 2) if measured else None
        figures[f"{label}_rounds"] = rounded(rates[label])
        figures[f"{label}_cpu_us_per_event_median"] = cpu_medians(checks, label)
    for label, runs in drained.items():
        figures[f"drain_{label}_rounds"] = runs
        figures[f"drain_{label}_median"] = {
            key: median([run[key] for run in runs]) for key in runs[0]
        }
    figures["exact_counts"] = all(
        c["points"] == count and c["distinct_txn_ids"] == count for c in checks
    )
    figures["received_per_gateway_x2"] = [
        c["received_per_gateway"] for c in checks if c["gateways"] == 2
    ]
    if not args.no_soak:
        rate = args.soak_rate or median(one) / 2
        progress(f"soak: one gateway at {rate:,.0f} events/s for {args.soak_s:.0f} s")
        figures["half_load_soak"] = latency_and_soak(
            workdir,
            tp_pub,
            broker,
            influxdb,
            events=events,
            count=count,
            rate=rate,
            soak_s=args.soak_s,
            segment_bytes=args.segment_mib << 20,
        )
    return figures


if __name__ == "__main__":
    main()
