"""Fleet layout: sites, their terminals and sensors, derived from a seed.

Sites get a merchant type and an acquirer; each site has a few terminals
(how many depends on the merchant type), and sensors are placed next to the
terminals one per site, round-robin, until all are placed. Ids:
site ``s0042``, terminal ``s0042-pos3``, sensor ``s0042-env1``.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Final

from firmware_sim.authorisation import ACQUIRERS, Acquirer
from firmware_sim.merchants import PROFILES, MerchantProfile

FIRMWARE_VERSIONS: Final = (("4.2.1", 0.55), ("4.3.0", 0.35), ("4.1.7", 0.1))


class DeviceKind(enum.StrEnum):
    TERMINAL = "terminal"
    SENSOR = "sensor"


@dataclass(frozen=True, slots=True)
class Site:
    site_id: str
    merchant: MerchantProfile
    acquirer: Acquirer
    signal_dbm: int  # typical signal strength at the site


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    device_id: str
    kind: DeviceKind
    site: Site
    firmware: str


@dataclass(frozen=True, slots=True)
class Fleet:
    seed: int
    sites: tuple[Site, ...]
    devices: tuple[DeviceSpec, ...]  # terminals first, then sensors

    @property
    def terminals(self) -> tuple[DeviceSpec, ...]:
        return tuple(d for d in self.devices if d.kind is DeviceKind.TERMINAL)


def build_fleet(seed: int, terminals: int, sensors: int) -> Fleet:
    """Lay out ``terminals`` terminals and ``sensors`` sensors over as many sites as needed."""
    if terminals < 1:
        raise ValueError("a fleet needs at least one terminal")
    if sensors < 0:
        raise ValueError("the number of sensors cannot be negative")
    rng = random.Random(f"{seed}:fleet")
    profiles = list(PROFILES.values())
    sites: list[Site] = []
    devices: list[DeviceSpec] = []
    while len(devices) < terminals:
        merchant = rng.choices(profiles, [p.weight for p in profiles])[0]
        acquirer = rng.choices(ACQUIRERS, [a.weight for a in ACQUIRERS])[0]
        site = Site(f"s{len(sites):04d}", merchant, acquirer, rng.randint(-95, -55))
        sites.append(site)
        low, high = merchant.terminals_per_site
        for number in range(1, min(rng.randint(low, high), terminals - len(devices)) + 1):
            devices.append(_device(rng, f"{site.site_id}-pos{number}", DeviceKind.TERMINAL, site))
    for index in range(sensors):
        site = sites[index % len(sites)]
        number = index // len(sites) + 1
        devices.append(_device(rng, f"{site.site_id}-env{number}", DeviceKind.SENSOR, site))
    return Fleet(seed=seed, sites=tuple(sites), devices=tuple(devices))


def _device(rng: random.Random, device_id: str, kind: DeviceKind, site: Site) -> DeviceSpec:
    versions = [v for v, _ in FIRMWARE_VERSIONS]
    firmware = rng.choices(versions, [w for _, w in FIRMWARE_VERSIONS])[0]
    return DeviceSpec(device_id=device_id, kind=kind, site=site, firmware=firmware)
