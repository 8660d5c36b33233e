"""One detection window's data, read from InfluxDB with InfluxQL.

A cycle reads what changed, not what is known: what detectors need from before the
window is either in the trained model (baselines) or carried in
`cloud.detectors.carried_state` (each device's newest heartbeat and connection, running
sums, recent card uses). influxd 1.6 spends about 10 us of CPU per raw row it returns
and about 60 us per series of a GROUP BY (BENCHMARKS.md, detection by fleet size), so
with the memory warm a window reads:

- the raw payments of the window (the detectors need each one), with the columns they use;
- the newest heartbeat of each device in the window, one row per device: the detectors
  take it as a summary of the window's heartbeats when nothing in between matters, and
  name the devices whose heartbeats they must read one by one (`read_changed`: the raw
  points of the 15-minute lookback, for those devices only);
- the connection points of the last 30 minutes, and each quiet device's newest
  connection points however old (a last will is stamped at its session's connect);
- nothing more for each acquirer's approvals and latency: they are counted from the
  payments (with ``--shard``, from the fleet's payments, read with the columns needed).

The first cycle of a job (no memory) reads the whole lookback of every device once.

Sharding: ``--shard i/n`` keeps the sites whose stable hash (`shard_of`)
is ``i``; the per-site reads are filtered on the server with a regex over
the shard's sites. The fleet-wide read (acquirers, card uses for velocity) is
not sharded: it is small, and only shard 0 raises fleet-wide alerts.
"""

from __future__ import annotations

import hashlib
import re
import statistics
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Final

from cloud.reading.influxql_reader import InfluxQLReader, Table
from wire.influxql import quote_ident, quote_string

# ISO 8583 responses that blame the processing chain, not the card: issuer or
# switch inoperative, system malfunction. An acquirer outage declines with these.
SYSTEM_DECLINE_CODES: Final = ("91", "96")
SYSTEM_DECLINE_WHERE: Final = (
    "(" + " OR ".join(f"response_code = {quote_string(c)}" for c in SYSTEM_DECLINE_CODES) + ")"
)

PAYMENT_COLUMNS = (
    "device",
    "site",
    "acquirer",
    "card_token",
    "amount_minor",
    "method",
    "mcc",
    "response_code",
    "approved",
    "auth_latency_ms",
    "offline",
)
STATUS_COLUMNS = (
    "device",
    "site",
    "seq",
    "battery_pct",
    "charging",
    "paper_pct",
    "temperature_c",
    "tamper",
    "offline_queue",
    "uptime_s",
)
SENSOR_COLUMNS = ("device", "site", "seq")
HEARTBEAT_LOOKBACK_NS = 15 * 60 * 10**9  # heartbeats of a clock up to ~10 min slow still show
RECONNECT_LOOKBACK_NS = 30 * 60 * 10**9
# more devices than this in a device filter: read the shard's whole span instead (the
# filter is a regex the server matches against every device id)
MAX_DEVICE_FILTER: Final = 2_000
# what the fleet-wide figures need: each acquirer's, and the card uses for velocity
ACQUIRER_COLUMNS = ("acquirer", "site", "approved", "auth_latency_ms", "offline", "response_code")
FLEET_PAYMENT_COLUMNS = ("device", "card_token", *ACQUIRER_COLUMNS)


Row = dict[str, Any]  # one point: "time" and its columns


def shard_of(site: str, shards: int) -> int:
    """The shard a site belongs to: stable across processes, hosts and Python versions."""
    digest = hashlib.blake2b(site.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


@dataclass(frozen=True, slots=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/n"`` with 0 <= i < n."""
        match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
        if match is None or not 0 <= int(match.group(1)) < int(match.group(2)):
            raise ValueError(f"shard {text!r}: expected i/n with 0 <= i < n, e.g. 0/4")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def leads(self) -> bool:
        """Raises the fleet-wide alerts (acquirer outages, card velocity)."""
        return self.index == 0

    def owns(self, site: str) -> bool:
        return self.count == 1 or shard_of(site, self.count) == self.index


@dataclass(frozen=True, slots=True)
class AcquirerWindow:
    """One acquirer's online payments in the window, fleet-wide (`acquirer_windows`)."""

    count: int
    approved: int
    latency_median_ms: float | None
    sites: int  # sites with at least one payment through it
    failing_sites: int  # sites where most of its authorisations failed
    system_declines: int  # declined with a processing-chain code (SYSTEM_DECLINE_CODES)
    site_latency_ms: dict[str, float] = field(default_factory=dict)  # site: its median


@dataclass(slots=True)
class DeviceStates:
    """A device's connection as the broker reported it (the ``device_state`` points)."""

    site: str
    online_ns: int = 0  # newest "online" point
    offline_ns: int = 0  # newest "offline" point (last will or clean shutdown)
    offline_reason: str = ""
    reconnects: int = 0  # "online" points in the last RECONNECT_LOOKBACK_NS

    @property
    def will_fired(self) -> bool:
        """The broker published the last will of the newest session.

        A will is composed when the device connects, so its point may carry
        the connect time: at or after the newest "online" point means it is
        the current session's."""
        return self.offline_reason == "last-will" and self.offline_ns >= self.online_ns

    @property
    def shut_down(self) -> bool:
        return self.offline_reason == "shutdown" and self.offline_ns >= self.online_ns


@dataclass(slots=True)
class WindowData:
    start_ns: int
    end_ns: int
    payments: Table  # [start, end)
    # raw heartbeats of [end - HEARTBEAT_LOOKBACK_NS, end) of every device, or (with
    # `newest_statuses`) of the devices in `reread`: cloud.detectors.terminal_health
    statuses: Table
    sensors: Table  # same span and devices
    # each device's newest connection points (`_device_states`); with `newest_statuses`,
    # those of the last 30 minutes (`_recent_states`) and of the devices `read_changed` names
    states: dict[str, DeviceStates]
    acquirers: dict[str, AcquirerWindow] = field(default_factory=dict)
    fleet_payments: Table | None = None  # card uses fleet-wide, for velocity (lead shard)
    site_where: str = ""  # the InfluxQL condition on this shard's sites ("": every site)
    # with `fetch_window(carried=True)`, the newest heartbeat (highest seq) of each device
    # in [start, end), one row per device; None: `statuses` and `sensors` hold every
    # device's lookback
    newest_statuses: dict[str, Row] | None = None  # device: its row (time and columns)
    newest_sensors: dict[str, Row] | None = None
    reread: frozenset[str] = frozenset()  # the devices `read_changed` read the lookback of


def site_filter(sites: list[str]) -> str:
    """An InfluxQL condition matching exactly these sites (ids are [A-Za-z0-9_.-])."""
    if not sites:
        return "site = ''"  # no site of ours: match nothing
    return _one_of("site", sites)


def shard_sites(reader: InfluxQLReader, shard: Shard) -> list[str] | None:
    """The sites of this shard (None: unsharded, every site)."""
    if shard.count == 1:
        return None
    series = reader.query('SHOW TAG VALUES FROM "terminal_status" WITH KEY = "site"')
    sites = {str(row[1]) for s in series for row in s.values}
    return sorted(site for site in sites if shard.owns(site))


def fetch_window(
    reader: InfluxQLReader,
    start_ns: int,
    end_ns: int,
    *,
    shard: Shard,
    carried: bool = False,
) -> WindowData:
    """The window's data. ``carried``: the detectors' memory holds what came before, so
    read what changed (each device's newest heartbeat, the connection points of the
    last 30 minutes), and then `read_changed` what the detectors name; without it (the
    first cycle of a job), every device's lookback and newest connection points."""
    sites = shard_sites(reader, shard)
    where = "" if sites is None else site_filter(sites)
    payments = reader.select("payment", PAYMENT_COLUMNS, start_ns, end_ns, where)
    if carried:
        span = (start_ns, end_ns)
        data = WindowData(
            start_ns=start_ns,
            end_ns=end_ns,
            payments=payments,
            statuses=_empty(STATUS_COLUMNS),
            sensors=_empty(SENSOR_COLUMNS),
            states=_recent_states(reader, end_ns, where),
            site_where=where,
            newest_statuses=_newest(reader, "terminal_status", STATUS_COLUMNS, span, where),
            newest_sensors=_newest(reader, "sensor", SENSOR_COLUMNS, span, where),
        )
    else:
        beats_from = min(start_ns, end_ns - HEARTBEAT_LOOKBACK_NS)
        data = WindowData(
            start_ns=start_ns,
            end_ns=end_ns,
            payments=payments,
            statuses=reader.select("terminal_status", STATUS_COLUMNS, beats_from, end_ns, where),
            sensors=reader.select("sensor", SENSOR_COLUMNS, beats_from, end_ns, where),
            states=_device_states(reader, end_ns, where),
            site_where=where,
        )
    # fleet-wide: the shard's own payments, or every shard's (its columns for the
    # acquirers and card velocity)
    fleet = (
        payments
        if sites is None
        else reader.select("payment", FLEET_PAYMENT_COLUMNS, start_ns, end_ns)
    )
    data.acquirers = acquirer_windows(fleet)
    if shard.leads:
        data.fleet_payments = fleet
    return data


def read_changed(
    reader: InfluxQLReader,
    data: WindowData,
    *,
    beats: Collection[str],
    states: Collection[str],
) -> None:
    """Read into ``data`` the raw heartbeats and samples of the lookback of the ``beats``
    devices, and the newest connection points, however old, of the ``states`` devices."""
    if beats:
        beats_from = min(data.start_ns, data.end_ns - HEARTBEAT_LOOKBACK_NS)
        where = _and(data.site_where, device_filter(beats))
        data.statuses = reader.select(
            "terminal_status", STATUS_COLUMNS, beats_from, data.end_ns, where
        )
        data.sensors = reader.select("sensor", SENSOR_COLUMNS, beats_from, data.end_ns, where)
        data.reread = frozenset(beats)
    if states:
        where = _and(data.site_where, device_filter(states))
        data.states.update(_device_states(reader, data.end_ns, where))


def device_filter(devices: Collection[str]) -> str:
    """An InfluxQL condition matching these devices ("": too many, every device)."""
    return "" if len(devices) > MAX_DEVICE_FILTER else _one_of("device", devices)


def _one_of(tag: str, values: Collection[str]) -> str:
    alternatives = "|".join(re.escape(value).replace("/", r"\/") for value in sorted(values))
    return f"{tag} =~ /^(?:{alternatives})$/"


def _and(*conditions: str) -> str:
    return " AND ".join(f"({c})" for c in conditions if c)


def _empty(columns: tuple[str, ...]) -> Table:
    return Table({name: [] for name in ("time", *columns)})


def _newest(
    reader: InfluxQLReader,
    measurement: str,
    columns: tuple[str, ...],
    span: tuple[int, int],
    where: str,
) -> dict[str, Row]:
    """The point with the highest ``seq`` of each device in [start, end), one row each.

    One selector (max) and plain fields: the row is the raw point, with its own time
    (two selectors would be stamped with the range start)."""
    fields = [c for c in columns if c not in ("device", "site", "seq")]
    extra = f" AND ({where})" if where else ""
    series = reader.query(
        f'SELECT max("seq"){"".join(", " + quote_ident(f) for f in fields)} '
        f"FROM {quote_ident(measurement)} WHERE time >= {span[0]} AND time < {span[1]}{extra} "
        'GROUP BY "device", "site"',
        chunked=False,  # one row per device: one document, not a chunk per device
    )
    names = ("time", "seq", *fields)
    out: dict[str, Row] = {}
    for part in series:
        row = dict(zip(names, part.values[0], strict=True))
        row["device"], row["site"] = part.tags.get("device", ""), part.tags.get("site", "")
        out[row["device"]] = row
    return out


def system_declines_by_acquirer(
    reader: InfluxQLReader, start_ns: int, end_ns: int
) -> dict[str, int]:
    """Online authorisations declined with a system code in [start, end), per acquirer."""
    series = reader.query(
        f'SELECT count(approved) FROM "payment" WHERE time >= {start_ns} AND time < {end_ns} '
        f"AND offline = 0 AND {SYSTEM_DECLINE_WHERE} GROUP BY acquirer"
    )
    return {s.tags.get("acquirer", ""): int(s.values[0][1] or 0) for s in series}


def acquirer_windows(payments: Table) -> dict[str, AcquirerWindow]:
    """Each acquirer's online payments in ``payments`` (raw rows with `ACQUIRER_COLUMNS`).

    Counted here from rows the window reads anyway: with influxd 1.6, the same
    figures aggregated by the server (GROUP BY acquirer, site) cost it about four times
    the CPU of returning the rows (BENCHMARKS.md, detection by fleet size)."""
    per_site: dict[tuple[str, str], list[int]] = {}  # (acquirer, site): [count, approved]
    latencies: dict[tuple[str, str], list[float]] = {}
    declines: dict[str, int] = {}
    rows = zip(
        payments["acquirer"],
        payments["site"],
        payments["approved"],
        payments["auth_latency_ms"],
        payments["offline"],
        payments["response_code"],
        strict=True,
    )
    for acquirer, site, approved, latency, offline, code in rows:
        if offline != 0 or approved is None:
            continue
        key = (str(acquirer or ""), str(site or ""))
        counts = per_site.setdefault(key, [0, 0])
        counts[0] += 1
        counts[1] += int(approved)
        if latency is not None:
            latencies.setdefault(key, []).append(float(latency))
        if code in SYSTEM_DECLINE_CODES:
            declines[key[0]] = declines.get(key[0], 0) + 1
    out: dict[str, AcquirerWindow] = {}
    for acquirer in sorted({a for a, _ in per_site}):
        sites = {site: c for (a, site), c in per_site.items() if a == acquirer}
        site_latencies = {site: values for (a, site), values in latencies.items() if a == acquirer}
        out[acquirer] = AcquirerWindow(
            count=sum(count for count, _ in sites.values()),
            approved=sum(approved for _, approved in sites.values()),
            latency_median_ms=_median([v for values in site_latencies.values() for v in values]),
            sites=len(sites),
            failing_sites=sum(1 for count, ok in sites.values() if (count - ok) * 2 > count),
            system_declines=declines.get(acquirer, 0),
            site_latency_ms={
                site: statistics.median(values) for site, values in site_latencies.items()
            },
        )
    return out


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _recent_states(reader: InfluxQLReader, end_ns: int, where: str) -> dict[str, DeviceStates]:
    """Each device's connection points of the last RECONNECT_LOOKBACK_NS, as `_device_states`
    would see them for a device with no older point. Older points matter only to a quiet
    device (a last will, stamped at its session's connect; a shutdown before a weekend):
    the detectors carry the ones they read, and ask for the quiet devices' again."""
    rows = reader.select(
        "device_state",
        ("device", "site", "state", "online", "reason"),
        end_ns - RECONNECT_LOOKBACK_NS,
        end_ns,
        where,
    )
    states: dict[str, DeviceStates] = {}
    points = zip(
        rows.time, rows["device"], rows["site"], rows["state"], rows["reason"], strict=True
    )
    for ts, device, site, state, reason in points:  # in time order: the newest wins
        entry = states.setdefault(device, DeviceStates(site or ""))
        if state == "online":
            entry.online_ns = int(ts)
            entry.reconnects += 1
        else:
            entry.offline_ns, entry.offline_reason = int(ts), str(reason or "")
    return states


def _device_states(reader: InfluxQLReader, end_ns: int, where: str) -> dict[str, DeviceStates]:
    """Each device's newest "online" and newest "offline" point before ``end``, however old.

    No lookback: a last will is stamped when the agent composed it, at connect, and
    is written only when the broker publishes it, so a session days old ends with a
    point days old (docs/wire.md). `cloud.detectors.terminal_health` carries what it
    read in the detectors' memory across windows and restarts.
    """
    extra = f" AND ({where})" if where else ""
    # the newest raw point of each series: with two selectors (last(a), last(b))
    # InfluxQL would stamp the row with the start of the range, not the point's time
    newest = reader.query(
        'SELECT "online", "reason" FROM "device_state" '
        f"WHERE time < {end_ns}{extra} "
        "GROUP BY device, site, state ORDER BY time DESC LIMIT 1",
        chunked=False,
    )
    states: dict[str, DeviceStates] = {}
    for series in newest:
        device = series.tags["device"]
        entry = states.setdefault(device, DeviceStates(series.tags.get("site", "")))
        ts, _, reason = series.values[0]
        if series.tags.get("state") == "online":
            entry.online_ns = int(ts)
        else:
            entry.offline_ns, entry.offline_reason = int(ts), str(reason or "")
    reconnects = reader.query(
        "SELECT count(online) FROM \"device_state\" WHERE state = 'online' AND "
        f"time >= {end_ns - RECONNECT_LOOKBACK_NS} AND time < {end_ns}{extra} GROUP BY device",
        chunked=False,
    )
    for series in reconnects:
        known = states.get(series.tags["device"])
        if known is not None:
            known.reconnects = int(series.values[0][1] or 0)
    return states
