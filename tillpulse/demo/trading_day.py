"""The demo's trading day: when it starts, how long it is, and what goes wrong in it.

The shipped ``demo`` scenario (firmware_sim/scenarios/demo.toml) counts its
offsets from midnight. The demo simulates only the trading hours, from
08:00 UTC yesterday, so it carries the same four incidents at the same times
of day counted from 08:00: a terminal drops off the network at 09:00, an
acquirer fails over lunch, a card-testing attack hits at 14:00, and a
terminal is tampered with at 16:00. Every window is inside the run.
"""

from __future__ import annotations

from typing import Final

from firmware_sim.scenario_file import InjectionSpec, Scenario
from firmware_sim.simtime import default_start
from wire.incidents import InjectionType
from wire.timestamps import NS_PER_HOUR

DAY_OPENS_H: Final = 8  # UTC; the merchants' opening hours are UTC hours
DAY_HOURS: Final = 10  # 08:00 - 18:00: every incident and a quiet hour after the last

DEMO_SCENARIO: Final = Scenario(
    name="demo-day",
    description="terminal offline, acquirer outage, card-testing attack, tamper (from 08:00)",
    injection=[
        InjectionSpec(type=InjectionType.TERMINAL_OFFLINE, start="1h", duration="30m"),
        InjectionSpec(
            type=InjectionType.ACQUIRER_OUTAGE, start="3h30m", duration="45m", intensity=0.8
        ),
        InjectionSpec(type=InjectionType.CARD_TESTING, start="6h", duration="20m", intensity=30),
        InjectionSpec(type=InjectionType.TAMPER, start="8h", duration="1h30m"),
    ],
)

# Injections whose target loses its MQTT connection: over a serial link the
# edge agent, not the terminal, owns that connection, so these targets stay
# in direct MQTT mode (their last will is what the cloud jobs see).
LINK_INJECTIONS: Final = frozenset({InjectionType.TERMINAL_OFFLINE, InjectionType.NETWORK_FLAPPING})


def day_start_ns() -> int:
    """08:00 UTC yesterday: recent, the same all day (reproducible), over before now."""
    return default_start() + DAY_OPENS_H * NS_PER_HOUR


def day_length_ns() -> int:
    return DAY_HOURS * NS_PER_HOUR
