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

It is decoded with ``msgspec.toml`` into the Structs below, so a wrong key or
type is an error naming the key; `load_scenario` adds the file name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Final

import msgspec

from firmware_sim.errors import ScenarioError
from runtime.durations import parse_duration
from wire.incidents import InjectionType

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
}


class TargetSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Selectors; empty lists mean "any". ``random = N`` picks N of what they select."""

    sites: list[str] = msgspec.field(default_factory=list)
    devices: list[str] = msgspec.field(default_factory=list)
    acquirers: list[str] = msgspec.field(default_factory=list)
    random: Annotated[int, msgspec.Meta(ge=1)] | None = None


class InjectionSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: InjectionType
    start: str
    duration: str
    targets: TargetSpec | str = "random 1"
    intensity: float | None = None
    count: Annotated[int, msgspec.Meta(ge=1)] | None = None  # events per target (outliers)

    def start_ns(self) -> int:
        return parse_duration(self.start)

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
        return DEFAULT_INTENSITY[self.type] if self.intensity is None else self.intensity


class Scenario(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    description: str = ""
    injection: list[InjectionSpec] = msgspec.field(default_factory=list)


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
        )
        for key, check in checks:
            try:
                check()
            except ValueError as exc:
                raise ScenarioError(f"scenario {path}: injection[{index}].{key}: {exc}") from None
    return scenario


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
