"""Terminal health rules: offline, tamper, paper, battery, heat, backlog, clock.

Each cycle folds the heartbeats it has not seen yet into `cloud.detectors.carried_state`, in
sequence order, then judges every known device from its newest state.

When did a heartbeat happen? Its ``ts`` is the device's clock, which may be
wrong (that is one of the faults). The uptime counter is not: event time
minus uptime is the boot time, constant while the clock is right. So a
heartbeat's true time is ``boot_ref + uptime``, and a step in the implied
boot time without a reboot (uptime going backwards) is a clock step. A
heartbeat is taken into account once its true time has passed, which keeps
a replay of stored history from looking ahead.

A window reads each device's newest heartbeat, one row per device, and takes it alone
when it sums up the heartbeats since the last one taken: the device is known, its
sequence moved on, no reboot or clock step, the paper is in, and no silence long
enough to be an outage can have ended in the window (`beats_to_reread` names the
devices where one of these fails; their raw heartbeats of the lookback are folded one
by one, as the first cycle of a job folds every device's).

Liveness is state, not lookback: each device's newest connect, clean
shutdown, last will and heartbeat are carried in the memory
(`cloud.detectors.carried_state.Liveness`), however long ago they were.

- A clean shutdown that ends the device's newest session never alerts,
  however long the silence after it (a weekend, a holiday).
- Silence is counted from the newest heartbeat's true time, or from a connect
  plus ``power_on_grace_s`` if that is later: a terminal that says "online"
  before its first heartbeat lands is not judged on the silence before it.
- Offline, while it lasts: the last will of the current session was
  published and the silence reached ``will_quiet_s``; or the silence reached
  ``offline_after_s`` (a hung terminal keeps its connection). Detected in the
  first window whose end is past the threshold.
- Offline, afterwards: a heartbeat that ends a silence of ``offline_after_s``
  or more (no clean shutdown in it) reports the outage in the window that
  takes it, so an outage that the window ends happen not to straddle past the
  threshold is still caught.

The gateway stores a last will at the time the agent composed it, which is
its connect (docs/wire.md); the broker published it after the session's last
packet. So the will says *that* the session ended, and the newest heartbeat
says *when* it last lived: the outage is timed from that heartbeat.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from cloud.detectors.carried_state import DeviceMemory, Liveness, Memory
from cloud.detectors.findings import Finding
from cloud.detectors.trained_model import TrainedModel
from cloud.reading.influxql_reader import Table
from cloud.reading.window import DeviceStates, WindowData
from runtime.logs import kv
from wire.incidents import AlertType
from wire.messages import Severity
from wire.timestamps import NS_PER_S, iso

log = logging.getLogger(__name__)

# a boot time implied by a heartbeat within this of the reference is the clock's slow
# drift or an NTP nudge, followed; beyond it, a clock step
_DRIFT_TOLERANCE_S = 5.0


@dataclass(frozen=True, slots=True)
class HealthSettings:
    offline_after_s: float = 600.0
    will_quiet_s: float = 150.0
    low_battery_pct: float = 10.0
    paper_out_heartbeats: int = 3  # consecutive heartbeats at 0 %: a clerk did not refill it
    overheat_margin_c: float = 10.0  # above the terminal's usual 99th percentile
    overheat_min_c: float = 45.0
    clock_skew_s: float = 120.0
    backlog_min: int = 5  # payments stored on the terminal while it is online
    flap_reconnects: int = 3  # reconnects within 30 minutes (two: a Wi-Fi roaming twice)
    site_down_share: float = 0.5  # of a site's devices down at once: the site's network
    power_on_grace_s: float = 120.0  # after a connect: one heartbeat interval + a margin


def fold_heartbeats(
    memory: Memory, data: WindowData, settings: HealthSettings | None = None
) -> None:
    """Take the broker's states, then the heartbeats and samples that have happened by
    the window end, into memory."""
    settings = settings or HealthSettings()
    fold_states(memory, data.states)
    for device, (row, kind) in _newest(data).items():
        if device not in data.reread:
            _take_newest(memory, device, row, kind=kind, end_ns=data.end_ns, settings=settings)
    _fold(memory, data.statuses, data.end_ns, kind="terminal", settings=settings)
    _fold(memory, data.sensors, data.end_ns, kind="sensor", settings=settings)


def quiet_devices(
    memory: Memory, data: WindowData, reread: set[str], settings: HealthSettings
) -> set[str]:
    """The devices that may be silent long enough by the window's end for a last will or
    a clean shutdown to matter, however old its point: the window reads their newest
    connection points. Those whose heartbeats are read again may be (a silence ended,
    or none in the window); of the others, those whose newest heartbeat is old enough."""
    quiet_s = min(settings.will_quiet_s, settings.offline_after_s)
    quiet_from = data.end_ns - int(quiet_s * NS_PER_S)
    quiet = set(reread)
    for device, (row, kind) in _newest(data).items():
        state = memory.devices.get(device)
        if state is not None and device not in reread and _happened(state, row, kind) <= quiet_from:
            quiet.add(device)
    return quiet


def beats_to_reread(memory: Memory, data: WindowData, settings: HealthSettings) -> set[str]:
    """The devices whose newest heartbeat in the window does not sum up their
    heartbeats since the last one taken (see the module's doc): their raw heartbeats of
    the lookback must be folded one by one. A known device with none in the window is
    one of them (silent, or its clock stepped back before the window)."""
    newest = _newest(data)
    reread = {device for device in memory.devices if device not in newest}
    for device, (row, kind) in newest.items():
        if not _sums_up(memory, device, row, kind=kind, end_ns=data.end_ns, settings=settings):
            reread.add(device)
    return reread


def _sums_up(
    memory: Memory,
    device: str,
    row: dict[str, Any],
    *,
    kind: str,
    end_ns: int,
    settings: HealthSettings,
) -> bool:
    """Taking only ``row`` leaves the device's memory as folding each heartbeat would."""
    state = memory.devices.get(device)
    if state is None or state.seen_ns == 0 or int(row["seq"]) <= state.seq:
        return False  # new, or its sequence started again
    beat_ns = _liveness(memory, device).beat_ns
    if beat_ns == 0 or end_ns - beat_ns >= settings.offline_after_s * NS_PER_S:
        return False  # a silence long enough to be an outage may end in this window
    if kind == "sensor":
        return True
    uptime = int(row["uptime_s"])
    if state.boot_ref_ns is None or uptime < state.uptime_s:
        return False  # a reboot
    implied_boot = int(row["time"]) - uptime * NS_PER_S
    return (
        abs(implied_boot - state.boot_ref_ns) <= _DRIFT_TOLERANCE_S * NS_PER_S  # no clock step
        and state.boot_ref_ns + uptime * NS_PER_S <= end_ns  # it has happened by the end
        and float(row["paper_pct"]) > 0.0  # a paper-out streak counts each heartbeat
    )


def _take_newest(
    memory: Memory,
    device: str,
    row: dict[str, Any],
    *,
    kind: str,
    end_ns: int,
    settings: HealthSettings,
) -> None:
    if not _sums_up(memory, device, row, kind=kind, end_ns=end_ns, settings=settings):
        return  # `beats_to_reread` named it: its raw heartbeats are folded
    state = memory.devices[device]
    happened_ns = _happened(state, row, kind)
    if kind == "terminal":
        _take_status(state, row)
    state.seq, state.ts_ns, state.seen_ns = int(row["seq"]), int(row["time"]), end_ns
    _take_beat(_liveness(memory, device), happened_ns, settings)


def _happened(state: DeviceMemory, row: dict[str, Any], kind: str) -> int:
    """When a heartbeat (true time: see the module's doc) or a sensor sample happened."""
    return _true_time(state, row) if kind == "terminal" else int(row["time"])


def _newest(data: WindowData) -> dict[str, tuple[dict[str, Any], str]]:
    """Each device's newest heartbeat or sample in the window, and the device's kind."""
    out = {device: (row, "sensor") for device, row in (data.newest_sensors or {}).items()}
    out.update((device, (row, "terminal")) for device, row in (data.newest_statuses or {}).items())
    return out


def _rows_by_device(table: Table) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    names = list(table.columns)
    for values in zip(*table.columns.values(), strict=True):
        row = dict(zip(names, values, strict=True))
        rows[row["device"]].append(row)
    return rows


def fold_states(memory: Memory, states: dict[str, DeviceStates]) -> None:
    """Keep each device's newest connect, clean shutdown and last will."""
    for device, broker in states.items():
        live = _liveness(memory, device)
        live.online_ns = max(live.online_ns, broker.online_ns)
        if broker.offline_reason == "shutdown":
            live.shutdown_ns = max(live.shutdown_ns, broker.offline_ns)
        elif broker.offline_reason == "last-will":
            live.will_ns = max(live.will_ns, broker.offline_ns)


def _fold(
    memory: Memory, table: Table, end_ns: int, *, kind: str, settings: HealthSettings
) -> None:
    """Each device's raw heartbeats, in sequence order, from the newest one taken."""
    for device, read in _rows_by_device(table).items():
        state = memory.devices.get(device)
        if state is None:
            state = memory.devices[device] = DeviceMemory(site=read[0]["site"], kind=kind)
        beats = read
        if _sequence_restarted(state, read):
            # a wiped outbox or a replaced unit counts from 1 again: follow the new
            # sequence from the last event taken, or its heartbeats would be ignored
            log.info("sequence_restart", extra=kv(device=device, last_seq=state.seq))
            beats = [b for b in read if int(b["time"]) > state.ts_ns]
            state.seq = 0
        for beat in sorted(beats, key=lambda b: int(b["seq"])):
            if int(beat["seq"]) <= state.seq:
                continue
            if kind == "terminal":
                happened_ns = _true_time(state, beat)
                if happened_ns > end_ns:
                    break  # it has not happened yet: next cycle
                _take_status(state, beat)
            else:
                happened_ns = int(beat["time"])
                if happened_ns > end_ns:
                    break
            state.seq, state.ts_ns, state.seen_ns = int(beat["seq"]), int(beat["time"]), end_ns
            _take_beat(_liveness(memory, device), happened_ns, settings)


def _liveness(memory: Memory, device: str) -> Liveness:
    """The device's carried liveness; from a memory saved before it was kept, seeded
    with the newest heartbeat's event time."""
    live = memory.liveness.get(device)
    if live is None:
        known = memory.devices.get(device)
        live = memory.liveness[device] = Liveness(beat_ns=known.ts_ns if known else 0)
    return live


def _take_beat(live: Liveness, happened_ns: int, settings: HealthSettings) -> None:
    """A sign of life at ``happened_ns``: a silence it ends, long enough, was an outage."""
    last = live.beat_ns
    live.beat_ns = max(last, happened_ns)
    if last == 0 or happened_ns - last < settings.offline_after_s * NS_PER_S:
        return
    # a clean shutdown in the silence (a weekend): not an outage. The agent stops
    # after the terminal's last heartbeat, the grace covers a clock a little off
    if last - settings.power_on_grace_s * NS_PER_S <= live.shutdown_ns <= happened_ns:
        return
    if live.gap_to_ns == 0:  # the oldest unreported outage wins
        live.gap_from_ns = last
    live.gap_to_ns = happened_ns


def _sequence_restarted(state: DeviceMemory, beats: list[dict[str, Any]]) -> bool:
    """Lower sequence numbers on events newer than the newest taken, which is gone.

    Beats taken before are read again for as long as the lookback lasts, the newest
    one among them; a clock stepped back can make one of them look newer than it.
    """
    if state.seq == 0 or any(int(b["seq"]) == state.seq for b in beats):
        return False
    return any(int(b["seq"]) < state.seq and int(b["time"]) > state.ts_ns for b in beats)


def _true_time(state: DeviceMemory, beat: dict[str, Any]) -> int:
    uptime = int(beat["uptime_s"])
    if state.boot_ref_ns is None or uptime < state.uptime_s:
        return int(beat["time"])
    return state.boot_ref_ns + uptime * NS_PER_S


def _take_status(
    state: DeviceMemory, beat: dict[str, Any], tolerance_s: float = _DRIFT_TOLERANCE_S
) -> None:
    uptime = int(beat["uptime_s"])
    implied_boot = int(beat["time"]) - uptime * NS_PER_S
    if state.boot_ref_ns is None or uptime < state.uptime_s:  # first sight, or a reboot
        state.boot_ref_ns = implied_boot
    state.skew_s = (implied_boot - state.boot_ref_ns) / NS_PER_S
    if abs(state.skew_s) <= tolerance_s:
        state.boot_ref_ns = implied_boot  # follow the clock's slow drift and NTP nudges
    state.uptime_s = uptime
    state.battery_pct = float(beat["battery_pct"])
    state.charging = bool(beat["charging"])
    paper_out = float(beat["paper_pct"]) <= 0.0
    state.paper_zero_streak = state.paper_zero_streak + 1 if paper_out else 0
    state.temperature_c = float(beat["temperature_c"])
    state.tamper = bool(beat["tamper"])
    state.offline_queue = int(beat["offline_queue"])


def health_findings(
    memory: Memory,
    states: dict[str, DeviceStates],
    model: TrainedModel | None,
    end_ns: int,
    settings: HealthSettings,
) -> list[Finding]:
    """Device findings, with a site's outage reported once for the site (root cause).

    Liveness is judged on ``memory.liveness``, which `fold_heartbeats` fills first;
    ``states`` (the window's broker states) add only the reconnect count.
    """
    findings: list[Finding] = []
    down_by_site: dict[str, list[tuple[str, str]]] = defaultdict(list)
    devices_by_site: dict[str, int] = defaultdict(int)
    for device, state in memory.devices.items():
        devices_by_site[state.site] += 1
        why = _down(state, _liveness(memory, device), states.get(device), end_ns, settings)
        if why:
            down_by_site[state.site].append((device, why))
        elif state.kind == "terminal":
            findings.extend(_conditions(device, state, model, end_ns, settings))
    for site, down in down_by_site.items():
        share = len(down) / devices_by_site[site]
        if len(down) >= 2 and share >= settings.site_down_share:
            findings.append(_site_network(site, down, devices_by_site[site], end_ns))
        else:
            findings.extend(
                _offline(device, memory.devices[device], why, end_ns) for device, why in down
            )
    return findings


def _down(
    state: DeviceMemory,
    live: Liveness,
    broker: DeviceStates | None,
    end_ns: int,
    settings: HealthSettings,
) -> str:
    """Why the device is down ("" when it is not); reports a past outage once."""
    if state.seen_ns == 0:
        return ""
    past = _past_outage(live)
    if _shut_down(live, settings):
        return past  # silence is expected, however long
    why = _silent(live, end_ns, settings) or past
    if not why and broker is not None and broker.reconnects >= settings.flap_reconnects:
        why = f"reconnected {broker.reconnects} times in 30 minutes"
    return why


def _shut_down(live: Liveness, settings: HealthSettings) -> bool:
    """A clean shutdown ended the newest session: no connect or will after it, and no
    heartbeat either (one after it, within the grace for a clock a little off, shows a
    device that runs, whatever the stale point says)."""
    grace_ns = int(settings.power_on_grace_s * NS_PER_S)
    return (
        live.shutdown_ns > 0
        and live.shutdown_ns >= max(live.online_ns, live.will_ns)
        and live.beat_ns <= live.shutdown_ns + grace_ns
    )


def _past_outage(live: Liveness) -> str:
    """The outage a heartbeat ended since the last window ("" if none); reported once."""
    if not live.gap_to_ns:
        return ""
    silent_s = (live.gap_to_ns - live.gap_from_ns) / NS_PER_S
    why = (
        f"no heartbeat for {silent_s:.0f} s, from {iso(live.gap_from_ns)} "
        f"to {iso(live.gap_to_ns)} (back since)"
    )
    live.gap_from_ns = live.gap_to_ns = 0
    return why


def _silent(live: Liveness, end_ns: int, settings: HealthSettings) -> str:
    """The silence of a device that did not shut down, when it is long enough to be down."""
    since_ns = max(live.beat_ns, live.online_ns + int(settings.power_on_grace_s * NS_PER_S))
    quiet_s = (end_ns - since_ns) / NS_PER_S
    if live.will_ns and live.will_ns >= live.online_ns and quiet_s >= settings.will_quiet_s:
        return (
            "the broker published its last will and no heartbeat came for "
            f"{quiet_s:.0f} s (since {iso(since_ns)})"
        )
    if quiet_s >= settings.offline_after_s:
        return f"no heartbeat for {quiet_s:.0f} s (since {iso(since_ns)})"
    return ""


def _offline(device: str, state: DeviceMemory, why: str, end_ns: int) -> Finding:
    return Finding(
        type=AlertType.TERMINAL_OFFLINE,
        detector="health.offline",
        severity=Severity.WARNING,
        score=1.0,
        ts=end_ns,
        site=state.site,
        device=device,
        summary=f"{device} is offline: {why}; the rest of site {state.site} is up",
    )


def _site_network(site: str, down: list[tuple[str, str]], total: int, end_ns: int) -> Finding:
    names = ", ".join(sorted(device for device, _ in down)[:10])
    return Finding(
        type=AlertType.SITE_NETWORK,
        detector="health.site_network",
        severity=Severity.CRITICAL,
        score=min(1.0, len(down) / total),
        ts=end_ns,
        site=site,
        summary=(
            f"site {site}: {len(down)} of its {total} devices are offline or reconnecting "
            f"at once ({names}): the site's network, not the terminals"
        ),
        evidence={"down": len(down), "devices": total},
    )


def _conditions(
    device: str,
    state: DeviceMemory,
    model: TrainedModel | None,
    end_ns: int,
    settings: HealthSettings,
) -> list[Finding]:
    out: list[Finding] = []

    def finding(kind: AlertType, severity: Severity, score: float, summary: str) -> None:
        out.append(
            Finding(
                type=kind,
                detector=f"health.{kind.value}",
                severity=severity,
                score=score,
                ts=end_ns,
                site=state.site,
                device=device,
                summary=f"{device}: {summary}",
            )
        )

    if state.tamper:
        finding(AlertType.TAMPER, Severity.CRITICAL, 1.0, "the tamper switch is open")
    if state.paper_zero_streak >= settings.paper_out_heartbeats:
        finding(
            AlertType.PAPER_OUT,
            Severity.WARNING,
            1.0,
            f"out of paper for {state.paper_zero_streak} heartbeats",
        )
    if state.battery_pct < settings.low_battery_pct and not state.charging:
        finding(
            AlertType.LOW_BATTERY,
            Severity.WARNING,
            1.0 - state.battery_pct / 100,
            f"battery {state.battery_pct:.0f} % and not charging",
        )
    usual = model.baseline_for(device).temperature_p99 if model is not None else 40.0
    limit = max(settings.overheat_min_c, usual + settings.overheat_margin_c)
    if state.temperature_c is not None and state.temperature_c > limit:
        finding(
            AlertType.OVERHEATING,
            Severity.WARNING,
            min(1.0, (state.temperature_c - limit) / 10 + 0.5),
            f"{state.temperature_c:.1f} °C, above {limit:.1f} °C "
            f"(its usual 99th percentile {usual:.1f} °C + {settings.overheat_margin_c:.0f})",
        )
    if state.offline_queue >= settings.backlog_min:
        finding(
            AlertType.OFFLINE_BACKLOG,
            Severity.WARNING,
            min(1.0, state.offline_queue / 50),
            f"{state.offline_queue} payments authorised offline, not yet forwarded",
        )
    if abs(state.skew_s) >= settings.clock_skew_s:
        finding(
            AlertType.CLOCK_SKEW,
            Severity.WARNING,
            min(1.0, abs(state.skew_s) / 600),
            f"its clock is off by {state.skew_s:+.0f} s (event time minus uptime moved "
            "without a reboot); its events are stored at the wrong time",
        )
    return out
