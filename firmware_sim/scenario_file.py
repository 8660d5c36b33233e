"""Scenario files: which faults and frauds to inject, when, where and how hard.

A scenario is a TOML file::

    name = "demo"
    description = "a card-testing attack and an acquirer outage"

    [[injection]]
    type = "card_testing"
    start = "10h"            # offset from the simulation start
    duration = "20m"
    targets = "random 1"     # or {sites = [...], devices = [...], acquirers = [...], random = N}
    intensity = 30           # meaning depends on the type (docs/simulator.md)

Besides its injections (incidents, each labelled), a scenario may shape the
fleet's ordinary traffic (context, never labelled; docs/simulator.md)::

    [traffic]
    dispersion = 3.0         # hourly payment counts vary ~3x as much as Poisson
    flaps_per_day = 3        # harmless Wi-Fi drops of a few seconds per terminal

    [[day]]                  # a calendar day, written to the operator calendar
    kind = "sale"            # sale (volume x factor) | closed (no trading)
    day = 7                  # days after the day the run starts
    mccs = ["5411"]          # and/or sites = [...]; random = N picks N sites
    factor = 3.0             # sale: volume multiple
    terminals = "idle"       # closed: "idle" (on, no payments) or "off" (shut down)

    [[hours]]                # new opening hours from a day on
    from_day = 2
    sites = ["s0003"]
    open = 10

It is decoded with ``msgspec.toml`` into the Structs below, so a wrong key or
type is an error naming the key; `load_scenario` adds the file name.

Offsets count from the run's start (``--start``), not from midnight: a run that
ends before an injection starts would leave it out, so `check_timing` refuses
such a run and names the duration that covers every incident.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Annotated, Final

import msgspec

from firmware_sim.errors import ScenarioError
from runtime.durations import parse_duration
from wire.incidents import InjectionType
from wire.timestamps import duration_text, iso

SCENARIO_DIR: Final = Path(__file__).parent / "scenarios"
_RANDOM: Final = re.compile(r"\Arandom\s+(\d+)\Z")


DEFAULT_INTENSITY: Final[dict[InjectionType, float]] = {
    InjectionType.TERMINAL_OFFLINE: 1.0,  # unused
    InjectionType.NETWORK_FLAPPING: 0.3,  # share of the window the site is offline
    InjectionType.ACQUIRER_OUTAGE: 0.8,  # share of authorisations failing with 91/96
    InjectionType.DECLINE_SPIKE: 0.35,  # decline rate during the window
    InjectionType.CARD_TESTING: 20.0,  # attempts per minute per targeted terminal
    InjectionType.VELOCITY_FRAUD: 1.0,  # uses of the card per targeted terminal
    InjectionType.AMOUNT_OUTLIER: 40.0,  # amount as a multiple of the merchant's median
    InjectionType.TAMPER: 1.0,  # unused
    InjectionType.OVERHEATING: 35.0,  # degrees C above normal at the peak
    InjectionType.PAPER_OUT: 1.0,  # unused
    InjectionType.CLOCK_SKEW: 300.0,  # seconds the device clock is off (may be negative)
    InjectionType.DUPLICATE_SENDS: 0.2,  # probability a message is sent twice
    InjectionType.CORRUPT_FRAMES: 0.1,  # probability a message's frame is corrupted
    InjectionType.SENSOR_FAULT: 5.0,  # drift: degrees C by the end; jump: degrees C; stuck: unused
}
DEGRADING_FAILING: Final = 0.4  # an outage with a ramp: the share failing by its end


class CardAmounts(enum.StrEnum):
    MICRO = "micro"  # 0.01-1.99: under the usual card-testing threshold
    ABOVE_THRESHOLD = "above_threshold"  # 2.01-4.99: just over it


class SensorFaultMode(enum.StrEnum):
    STUCK = "stuck"  # the reading holds the value it had when the fault began
    DRIFT = "drift"  # it drifts away, ``intensity`` degrees by the window's end
    JUMP = "jump"  # it jumps by ``intensity`` degrees for the window


class TargetSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Selectors; empty lists mean "any". ``random_sites = N`` keeps what they select at
    N sites drawn among theirs; ``random = N`` picks N of what is left."""

    sites: list[str] = msgspec.field(default_factory=list)
    devices: list[str] = msgspec.field(default_factory=list)
    acquirers: list[str] = msgspec.field(default_factory=list)
    random: Annotated[int, msgspec.Meta(ge=1)] | None = None
    random_sites: Annotated[int, msgspec.Meta(ge=1)] | None = None  # N sites drawn first


class InjectionSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: InjectionType
    start: str
    duration: str
    targets: TargetSpec | str = "random 1"
    intensity: float | None = None
    count: Annotated[int, msgspec.Meta(ge=1)] | None = None  # events per target (outliers)
    # the start moves by a random whole number of seconds in [0, jitter): off any grid
    jitter: str | None = None
    # card_testing: one probe per terminal every this long (slow), instead of a burst
    every: str | None = None
    amounts: CardAmounts = CardAmounts.MICRO  # card_testing
    # acquirer_outage: a degrading acquirer, latency creeping up over the ramp, then failures
    ramp: str | None = None
    mode: SensorFaultMode = SensorFaultMode.JUMP  # sensor_fault

    def start_ns(self) -> int:
        return parse_duration(self.start)

    def jitter_ns(self) -> int:
        return 0 if self.jitter is None else parse_duration(self.jitter)

    def every_ns(self) -> int | None:
        if self.every is None:
            return None
        every = parse_duration(self.every)
        if every <= 0:
            raise ValueError(f"{self.every!r} is not a positive duration")
        return every

    def ramp_ns(self) -> int:
        return 0 if self.ramp is None else parse_duration(self.ramp)

    def duration_ns(self) -> int:
        return parse_duration(self.duration)

    def target_spec(self) -> TargetSpec:
        if isinstance(self.targets, TargetSpec):
            return self.targets
        match = _RANDOM.match(self.targets.strip())
        if match is None:
            raise ValueError(f"{self.targets!r} is not a selector: use 'random N' or a table")
        return TargetSpec(random=int(match.group(1)))

    def strength(self) -> float:
        if self.intensity is not None:
            return self.intensity
        if self.type is InjectionType.ACQUIRER_OUTAGE and self.ramp is not None:
            return DEGRADING_FAILING
        return DEFAULT_INTENSITY[self.type]


class Traffic(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The fleet's ordinary traffic; the defaults leave it as the merchant profiles make it."""

    # variance / mean of a terminal's payments in an hour (1: Poisson); None: the profiles'
    dispersion: Annotated[float, msgspec.Meta(ge=1.0)] | None = None
    # harmless Wi-Fi drops of a few seconds, per terminal and day (mean)
    flaps_per_day: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0


class DayKind(enum.StrEnum):
    SALE = "sale"
    CLOSED = "closed"


class ClosedTerminals(enum.StrEnum):
    IDLE = "idle"  # on and connected, heartbeats as usual, no payments
    OFF = "off"  # shut down cleanly for the day, powered on the next


class Selection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Which sites: the listed ones and every site of the listed categories (both empty:
    all sites); ``random = N`` picks N of those."""

    sites: list[str] = msgspec.field(default_factory=list)
    mccs: list[str] = msgspec.field(default_factory=list)
    random: Annotated[int, msgspec.Meta(ge=1)] | None = None


class DaySpec(Selection, kw_only=True, forbid_unknown_fields=True):
    """A calendar day: a sale, or a closing day. Context, not an incident: no label."""

    kind: DayKind
    day: Annotated[int, msgspec.Meta(ge=0)]  # days after the day the run starts
    name: str = ""
    factor: Annotated[float, msgspec.Meta(gt=1.0)] = 3.0  # sale: volume multiple
    terminals: ClosedTerminals = ClosedTerminals.IDLE  # closed


class HoursSpec(Selection, kw_only=True, forbid_unknown_fields=True):
    """New opening hours (UTC hours) from a day on, on every day the sites open."""

    from_day: Annotated[int, msgspec.Meta(ge=0)]
    open: Annotated[int, msgspec.Meta(ge=0, le=23)] | None = None
    close: Annotated[int, msgspec.Meta(ge=1, le=24)] | None = None


class Scenario(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    description: str = ""
    injection: list[InjectionSpec] = msgspec.field(default_factory=list)
    traffic: Traffic = msgspec.field(default_factory=Traffic)
    day: list[DaySpec] = msgspec.field(default_factory=list)
    hours: list[HoursSpec] = msgspec.field(default_factory=list)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; a name without a path is looked up among
    the shipped ones (``demo`` or ``demo.toml``). Errors name the file and the key."""
    path = _locate(Path(path))
    try:
        scenario = msgspec.toml.decode(path.read_bytes(), type=Scenario)
    except OSError as exc:
        raise ScenarioError(f"scenario {path} cannot be read: {exc}") from None
    except msgspec.ValidationError as exc:
        raise ScenarioError(f"scenario {path}: {_where_first(str(exc))}") from None
    except msgspec.DecodeError as exc:
        raise ScenarioError(f"scenario {path} is not valid TOML: {exc}") from None
    for index, injection in enumerate(scenario.injection):
        checks = (
            ("start", injection.start_ns),
            ("duration", injection.duration_ns),
            ("targets", injection.target_spec),
            ("jitter", injection.jitter_ns),
            ("every", injection.every_ns),
            ("ramp", injection.ramp_ns),
        )
        for key, check in checks:
            try:
                check()
            except ValueError as exc:
                raise ScenarioError(f"scenario {path}: injection[{index}].{key}: {exc}") from None
    return scenario


def check_timing(scenario: Scenario, start_ns: int, duration_ns: int) -> None:
    """Raise ScenarioError, naming the offsets and the duration that covers them all,
    if an injection may start at or after the run's end (and so never happen)."""
    late = [i for i in scenario.injection if i.start_ns() + i.jitter_ns() >= duration_ns]
    if not late:
        return
    offsets = ", ".join(duration_text(i.start_ns()) for i in scenario.injection)
    needed = max(i.start_ns() + i.jitter_ns() + i.duration_ns() for i in scenario.injection)
    raise ScenarioError(
        f"scenario {scenario.name} injects at {offsets} after --start ({iso(start_ns)});"
        f" --duration {duration_text(duration_ns)} ends at {iso(start_ns + duration_ns)},"
        f" before {len(late)} of its {len(scenario.injection)} incidents start:"
        f" use --duration {duration_text(needed)} (the last incident's end) or more,"
        " or --allow-partial to run anyway"
    )


def shipped_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def _locate(path: Path) -> Path:
    if path.exists() or path.parent != Path():
        return path
    shipped = SCENARIO_DIR / path.with_suffix(".toml").name
    if shipped.exists():
        return shipped
    known = ", ".join(shipped_scenarios())
    raise ScenarioError(f"scenario {path} does not exist (shipped scenarios: {known})")


def _where_first(message: str) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.injection[0].count`" as
    "injection[0].count: Expected `int`, got `str`"."""
    text, sep, location = message.rpartition(" - at `$.")
    return f"{location.rstrip('`')}: {text}" if sep else message
