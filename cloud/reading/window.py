"""One detection window's data, read from InfluxDB with InfluxQL.

A cycle reads only its own window ``[start, end)`` of raw points (a few rows
per terminal): what detectors need from before the window is either in the
trained model (baselines) or carried in `cloud.detectors.carried_state` (last heartbeats,
running sums, recent card uses). Fleet-wide figures that root cause needs
(each acquirer's approvals and latency) are aggregated by the server.

Sharding: ``--shard i/n`` keeps the sites whose stable hash (`shard_of`)
is ``i``; the per-site reads are filtered on the server with a regex over
the shard's sites. Fleet-wide reads (acquirers, card uses for velocity) are
not sharded: they are small, and only shard 0 raises fleet-wide alerts.
"""

from __future__ import annotations

import hashlib
import re
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
    "seq",
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
FLEET_PAYMENT_COLUMNS = ("device", "site", "card_token", "approved")


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
    """One acquirer's payments in the window, fleet-wide (aggregated by the server)."""

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
    statuses: Table  # [end - HEARTBEAT_LOOKBACK_NS, end): see cloud.detectors.terminal_health
    sensors: Table  # same span
    states: dict[str, DeviceStates]
    acquirers: dict[str, AcquirerWindow] = field(default_factory=dict)
    fleet_payments: Table | None = None  # card uses fleet-wide, for velocity (lead shard)
    site_where: str = ""  # the InfluxQL condition on this shard's sites ("": every site)


def site_filter(sites: list[str]) -> str:
    """An InfluxQL condition matching exactly these sites (ids are [A-Za-z0-9_.-])."""
    if not sites:
        return "site = ''"  # no site of ours: match nothing
    alternatives = "|".join(re.escape(site).replace("/", r"\/") for site in sorted(sites))
    return f"site =~ /^(?:{alternatives})$/"


def shard_sites(reader: InfluxQLReader, shard: Shard) -> list[str] | None:
    """The sites of this shard (None: unsharded, every site)."""
    if shard.count == 1:
        return None
    series = reader.query('SHOW TAG VALUES FROM "terminal_status" WITH KEY = "site"')
    sites = {str(row[1]) for s in series for row in s.values}
    return sorted(site for site in sites if shard.owns(site))


def fetch_window(reader: InfluxQLReader, start_ns: int, end_ns: int, *, shard: Shard) -> WindowData:
    sites = shard_sites(reader, shard)
    where = "" if sites is None else site_filter(sites)
    beats_from = min(start_ns, end_ns - HEARTBEAT_LOOKBACK_NS)
    data = WindowData(
        start_ns=start_ns,
        end_ns=end_ns,
        payments=reader.select("payment", PAYMENT_COLUMNS, start_ns, end_ns, where),
        statuses=reader.select("terminal_status", STATUS_COLUMNS, beats_from, end_ns, where),
        sensors=reader.select("sensor", SENSOR_COLUMNS, beats_from, end_ns, where),
        states=_device_states(reader, end_ns, where),
        site_where=where,
    )
    data.acquirers = _acquirer_windows(reader, start_ns, end_ns)
    if shard.leads:
        data.fleet_payments = (
            data.payments
            if sites is None
            else reader.select("payment", FLEET_PAYMENT_COLUMNS, start_ns, end_ns)
        )
    return data


def system_declines_by_acquirer(
    reader: InfluxQLReader, start_ns: int, end_ns: int
) -> dict[str, int]:
    """Online authorisations declined with a system code in [start, end), per acquirer."""
    series = reader.query(
        f'SELECT count(approved) FROM "payment" WHERE time >= {start_ns} AND time < {end_ns} '
        f"AND offline = 0 AND {SYSTEM_DECLINE_WHERE} GROUP BY acquirer"
    )
    return {s.tags.get("acquirer", ""): int(s.values[0][1] or 0) for s in series}


def _acquirer_windows(
    reader: InfluxQLReader, start_ns: int, end_ns: int
) -> dict[str, AcquirerWindow]:
    measurement = quote_ident("payment")
    bounds = f"time >= {start_ns} AND time < {end_ns}"
    totals = reader.query(
        f"SELECT count(approved), sum(approved), median(auth_latency_ms) FROM {measurement}"
        f" WHERE {bounds} AND offline = 0 GROUP BY acquirer"
    )
    per_site = reader.query(
        f"SELECT count(approved), sum(approved), median(auth_latency_ms) FROM {measurement} "
        f"WHERE {bounds} AND offline = 0 GROUP BY acquirer, site"
    )
    system_declines = system_declines_by_acquirer(reader, start_ns, end_ns)
    sites: dict[str, int] = {}
    failing: dict[str, int] = {}
    latencies: dict[str, dict[str, float]] = {}
    for series in per_site:
        acquirer = series.tags.get("acquirer", "")
        _, count, approved, latency = series.values[0]
        sites[acquirer] = sites.get(acquirer, 0) + 1
        if latency is not None:
            latencies.setdefault(acquirer, {})[series.tags.get("site", "")] = float(latency)
        if count and (count - (approved or 0)) * 2 > count:
            failing[acquirer] = failing.get(acquirer, 0) + 1
    out: dict[str, AcquirerWindow] = {}
    for series in totals:
        acquirer = series.tags.get("acquirer", "")
        row: list[Any] = series.values[0]
        out[acquirer] = AcquirerWindow(
            count=int(row[1] or 0),
            approved=int(row[2] or 0),
            latency_median_ms=None if row[3] is None else float(row[3]),
            sites=sites.get(acquirer, 0),
            failing_sites=failing.get(acquirer, 0),
            system_declines=system_declines.get(acquirer, 0),
            site_latency_ms=latencies.get(acquirer, {}),
        )
    return out


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
        "GROUP BY device, site, state ORDER BY time DESC LIMIT 1"
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
        f"time >= {end_ns - RECONNECT_LOOKBACK_NS} AND time < {end_ns}{extra} GROUP BY device"
    )
    for series in reconnects:
        known = states.get(series.tags["device"])
        if known is not None:
            known.reconnects = int(series.values[0][1] or 0)
    return states
