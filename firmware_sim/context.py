"""The scenario's context, resolved against one fleet and one run: real-world
shapes of ordinary traffic that are no incident, so they carry no label.

* calendar days (``[[day]]``): a sale multiplies the day's volume at the chosen
  sites; a closing day has no trading there, its terminals ``idle`` (on, no
  payments) or ``off`` (a clean shutdown after midnight, powered on after the
  next). They make the operator calendar (`wire.calendar.Calendar`) the run
  writes beside its labels;
* opening hours that change from a day on (``[[hours]]``);
* overdispersed hourly counts (``[traffic] dispersion``): firmware_sim.trading;
* harmless Wi-Fi flaps (``[traffic] flaps_per_day``): a terminal loses its
  MQTT connection for 2-10 s and reconnects; one terminal's flaps are at least
  35 minutes apart, so they never make two reconnects in the 30 minutes the
  cloud counts as a flapping link (docs/wire.md, Timing);
* power-on races: a terminal powered on publishes ``online`` 2-8 s before its
  first heartbeat (and its uptime starts again).

Each shape draws from a random stream of its own, so a scenario without them
runs exactly as before, and adding one leaves the others as they were.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from firmware_sim.errors import ScenarioError
from firmware_sim.fleet_layout import Fleet, Site
from firmware_sim.injections import OfflineWindow
from firmware_sim.merchants import PROFILES, Trade
from firmware_sim.scenario_file import (
    ClosedTerminals,
    DayKind,
    DaySpec,
    Scenario,
    Selection,
)
from firmware_sim.trading import HoursChange, SiteTrading
from wire.calendar import Calendar, CalendarDay
from wire.calendar import DayKind as CalendarKind
from wire.timestamps import NS_PER_DAY, NS_PER_S

FLAP_SECONDS: Final = (2.0, 10.0)
MIN_FLAP_SPACING_NS: Final = 35 * 60 * NS_PER_S
POWER_ON_RACE_S: Final = (2.0, 8.0)  # from ``online`` to the first heartbeat
SWITCH_AFTER_MIDNIGHT_S: Final = (60.0, 1800.0)  # when a closed site's terminals go off / on
_EPOCH: Final = dt.date(1970, 1, 1)
_KNOWN_MCCS: Final = frozenset(profile.mcc for profile in PROFILES.values())


@dataclass(frozen=True, slots=True)
class PowerCycle:
    """A terminal shut down cleanly at ``off_ns`` and powered on at ``on_ns``."""

    device: str
    off_ns: int
    on_ns: int
    first_heartbeat_ns: int  # a few seconds after on_ns: the power-on race


@dataclass(frozen=True, slots=True)
class Context:
    calendar: Calendar
    trading: dict[str, SiteTrading]  # by site id; a site not here trades as its merchant
    flaps: tuple[OfflineWindow, ...]
    power: tuple[PowerCycle, ...]

    def trade(self, site: Site) -> Trade:
        return self.trading.get(site.site_id, site.merchant)


def build_context(scenario: Scenario, fleet: Fleet, start_ns: int, end_ns: int) -> Context:
    """Resolve the scenario's context shapes; raises ScenarioError naming the entry that
    does not fit this fleet."""
    first_day = start_ns // NS_PER_DAY
    seed = f"{fleet.seed}:context:{scenario.name}"
    entries: list[CalendarDay] = []
    factors: dict[str, dict[int, float]] = {}  # site -> UTC day number -> volume multiple
    power: list[PowerCycle] = []
    days_rng = random.Random(f"{seed}:days")
    for index, day in enumerate(scenario.day):
        where = f"scenario {scenario.name}: day[{index}]"
        sites, entry = _calendar_day(day, fleet, days_rng, first_day, where)
        entries.append(entry)
        number = first_day + day.day
        factor = day.factor if day.kind is DayKind.SALE else 0.0
        applied = set()  # the sites no entry listed earlier has this day
        for site in sites:
            if number not in factors.setdefault(site, {}):
                factors[site][number] = factor
                applied.add(site)
        if day.kind is DayKind.CLOSED and day.terminals is ClosedTerminals.OFF:
            terminals = [d.device_id for d in fleet.terminals if d.site.site_id in applied]
            power.extend(_switched_off(terminals, number, days_rng, start_ns, end_ns))
    changes: dict[str, list[HoursChange]] = {}
    hours_rng = random.Random(f"{seed}:hours")
    for index, hours in enumerate(scenario.hours):
        where = f"scenario {scenario.name}: hours[{index}]"
        if hours.open is not None and hours.close is not None and hours.open >= hours.close:
            raise ScenarioError(f"{where}: open must be before close")
        change = HoursChange(first_day + hours.from_day, hours.open, hours.close)
        for site in _select(hours, fleet, hours_rng, where):
            changes.setdefault(site, []).append(change)
    dispersion = scenario.traffic.dispersion
    trading = {
        site.site_id: SiteTrading(
            site.merchant,
            hours=tuple(changes.get(site.site_id, ())),
            day_factors=factors.get(site.site_id),
            dispersion=dispersion,
        )
        for site in fleet.sites
        if dispersion is not None or site.site_id in factors or site.site_id in changes
    }
    flaps_rng = random.Random(f"{seed}:flaps")
    flaps = _flaps(
        fleet,
        scenario.traffic.flaps_per_day,
        power=power,
        rng=flaps_rng,
        start_ns=start_ns,
        end_ns=end_ns,
    )
    return Context(Calendar(day=entries), trading, tuple(flaps), tuple(power))


def _calendar_day(
    day: DaySpec, fleet: Fleet, rng: random.Random, first_day: int, where: str
) -> tuple[list[str], CalendarDay]:
    """The sites a calendar day applies to, and its entry in the operator calendar."""
    sites = _select(day, fleet, rng, where)
    drawn = day.random is not None  # the calendar names the sites drawn
    entry = CalendarDay(
        kind=CalendarKind.SALE if day.kind is DayKind.SALE else CalendarKind.CLOSED,
        dates=[_EPOCH + dt.timedelta(days=first_day + day.day)],
        name=day.name,
        sites=sites if drawn else list(day.sites),
        mccs=[] if drawn else list(day.mccs),
    )
    return sites, entry


def _select(selection: Selection, fleet: Fleet, rng: random.Random, where: str) -> list[str]:
    known = {site.site_id for site in fleet.sites}
    unknown = sorted(set(selection.sites) - known)
    if unknown:
        raise ScenarioError(f"{where}: no site {', '.join(unknown)} in this fleet")
    bad = sorted(set(selection.mccs) - _KNOWN_MCCS)
    if bad:
        known_mccs = ", ".join(sorted(_KNOWN_MCCS))
        raise ScenarioError(f"{where}: no merchant category {', '.join(bad)} ({known_mccs})")
    everyone = not selection.sites and not selection.mccs
    candidates = [
        site.site_id
        for site in fleet.sites
        if everyone or site.site_id in selection.sites or site.merchant.mcc in selection.mccs
    ]
    if selection.random is None:
        return candidates
    if not candidates:
        raise ScenarioError(f"{where}: the selectors match no site of this fleet")
    return sorted(rng.sample(candidates, min(selection.random, len(candidates))))


def _switched_off(
    terminals: Sequence[str], day: int, rng: random.Random, start_ns: int, end_ns: int
) -> list[PowerCycle]:
    """Each terminal off shortly after the day's midnight, on shortly after the next."""
    cycles = []
    for device in terminals:
        off = day * NS_PER_DAY + int(rng.uniform(*SWITCH_AFTER_MIDNIGHT_S) * NS_PER_S)
        on = (day + 1) * NS_PER_DAY + int(rng.uniform(*SWITCH_AFTER_MIDNIGHT_S) * NS_PER_S)
        race = int(rng.uniform(*POWER_ON_RACE_S) * NS_PER_S)
        if start_ns <= off < end_ns:
            cycles.append(PowerCycle(device, off, on, on + race))
    return cycles


def _flaps(
    fleet: Fleet,
    per_day: float,
    *,
    power: Sequence[PowerCycle],
    rng: random.Random,
    start_ns: int,
    end_ns: int,
) -> list[OfflineWindow]:
    """Each terminal's Wi-Fi drops: a Poisson process, thinned to keep them apart and
    out of the times the terminal is off."""
    if per_day <= 0.0:
        return []
    rate_per_ns = per_day / NS_PER_DAY
    flaps: list[OfflineWindow] = []
    for terminal in fleet.terminals:
        device = terminal.device_id
        off = [cycle for cycle in power if cycle.device == device]
        last = start_ns  # the run starts with a connect
        t = float(start_ns)
        while (t := t + rng.expovariate(rate_per_ns)) < end_ns:
            at = int(t)
            length = int(rng.uniform(*FLAP_SECONDS) * NS_PER_S)
            if at - last < MIN_FLAP_SPACING_NS or any(_near(cycle, at) for cycle in off):
                continue
            flaps.append(OfflineWindow(device, at, min(at + length, end_ns)))
            last = at
    return flaps


def _near(cycle: PowerCycle, ts_ns: int) -> bool:
    """Whether a flap at ``ts_ns`` would fall while the terminal is off, or make a second
    reconnect within the flapping link's 30 minutes of its power-on."""
    return cycle.off_ns - MIN_FLAP_SPACING_NS <= ts_ns < cycle.on_ns + MIN_FLAP_SPACING_NS
