"""Resolving a scenario's target selectors to the concrete ids of one fleet.

What a selector picks depends on the injection type: an acquirer outage
picks acquirers (and hits their terminals), network flapping picks sites (and
hits every device there), the payment injections pick terminals, the others
pick sensors for a sensor fault, any device for the others. ``random_sites = N``
first keeps the candidates of N sites drawn among theirs (several terminals of
one site); ``random = N`` then draws N of those units (fewer if the fleet has
fewer) from the candidates that the other selectors leave.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from firmware_sim.fleet_layout import DeviceKind, DeviceSpec, Fleet
from firmware_sim.scenario_file import TargetSpec
from wire.incidents import InjectionType

SITE_LEVEL: Final = frozenset({InjectionType.NETWORK_FLAPPING})
ACQUIRER_LEVEL: Final = frozenset({InjectionType.ACQUIRER_OUTAGE})
TERMINAL_ONLY: Final = frozenset(
    {
        InjectionType.ACQUIRER_OUTAGE,
        InjectionType.DECLINE_SPIKE,
        InjectionType.CARD_TESTING,
        InjectionType.VELOCITY_FRAUD,
        InjectionType.AMOUNT_OUTLIER,
        InjectionType.TAMPER,
        InjectionType.PAPER_OUT,
    }
)
SENSOR_ONLY: Final = frozenset({InjectionType.SENSOR_FAULT})


@dataclass(frozen=True, slots=True)
class Resolved:
    sites: tuple[str, ...]
    devices: tuple[DeviceSpec, ...]
    acquirers: tuple[str, ...]


def resolve(spec: TargetSpec, kind: InjectionType, fleet: Fleet, rng: random.Random) -> Resolved:
    """The devices (and their sites and acquirers) that ``spec`` selects for ``kind``.

    Raises ValueError naming an unknown id or a selection that matches nothing.
    """
    candidates = _candidates(spec, kind, fleet)
    if spec.random_sites is not None:
        drawn = set(_draw(sorted({d.site.site_id for d in candidates}), spec.random_sites, rng))
        candidates = [d for d in candidates if d.site.site_id in drawn]
    if kind in SITE_LEVEL:
        units = sorted({d.site.site_id for d in candidates})
        chosen = set(_draw(units, spec.random, rng))
        candidates = [d for d in candidates if d.site.site_id in chosen]
    elif kind in ACQUIRER_LEVEL:
        units = sorted({d.site.acquirer.acquirer_id for d in candidates})
        chosen = set(_draw(units, spec.random, rng))
        candidates = [d for d in candidates if d.site.acquirer.acquirer_id in chosen]
    else:
        chosen_ids = set(_draw([d.device_id for d in candidates], spec.random, rng))
        candidates = [d for d in candidates if d.device_id in chosen_ids]
    acquirers = sorted({d.site.acquirer.acquirer_id for d in candidates if _is_terminal(d)})
    return Resolved(
        sites=tuple(sorted({d.site.site_id for d in candidates})),
        devices=tuple(candidates),
        acquirers=tuple(acquirers) if kind in ACQUIRER_LEVEL else (),
    )


def _candidates(spec: TargetSpec, kind: InjectionType, fleet: Fleet) -> list[DeviceSpec]:
    known_sites = {s.site_id for s in fleet.sites}
    known_devices = {d.device_id for d in fleet.devices}
    known_acquirers = {s.acquirer.acquirer_id for s in fleet.sites}
    for what, wanted, known in (
        ("site", spec.sites, known_sites),
        ("device", spec.devices, known_devices),
        ("acquirer", spec.acquirers, known_acquirers),
    ):
        unknown = sorted(set(wanted) - known)
        if unknown:
            raise ValueError(f"no {what} {', '.join(unknown)} in this fleet")
    candidates = [
        d
        for d in fleet.devices
        if (kind not in TERMINAL_ONLY or _is_terminal(d))
        and (kind not in SENSOR_ONLY or not _is_terminal(d))
        and (not spec.sites or d.site.site_id in spec.sites)
        and (not spec.devices or d.device_id in spec.devices)
        and (not spec.acquirers or d.site.acquirer.acquirer_id in spec.acquirers)
    ]
    if not candidates:
        unit = "devices"
        if kind in TERMINAL_ONLY:
            unit = "terminals"
        elif kind in SENSOR_ONLY:
            unit = "sensors"
        raise ValueError(f"the selectors match no {unit} of this fleet for {kind.value}")
    return candidates


def _draw(units: list[str], count: int | None, rng: random.Random) -> list[str]:
    if count is None:
        return units
    return rng.sample(units, min(count, len(units)))


def _is_terminal(device: DeviceSpec) -> bool:
    return device.kind is DeviceKind.TERMINAL
