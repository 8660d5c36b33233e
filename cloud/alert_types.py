"""Every alert type the cloud jobs raise, and which simulated fault each one detects.

`DETECTS` is what `cloud.evaluate` scores against firmware_sim's ground truth:
an alert of a type counts as a true detection of a label of the injection type
it maps to. Several alert types may map to one injection (a terminal cut off
shows as offline, then as a backlog of offline payments); an alert type
that maps to none (a low battery) is never a true detection, and outside a
label it is a false alert like any other.

Injection types no alert type maps to are transport faults that the gateway
absorbs and counts (duplicates are deduplicated, corrupt frames dead-lettered),
so they leave no trace in InfluxDB for a detector to find: `NOT_IN_THE_DATA`.
"""

from __future__ import annotations

import enum
from typing import Final


class AlertType(enum.StrEnum):
    # terminal health rules
    TERMINAL_OFFLINE = "terminal_offline"
    OFFLINE_BACKLOG = "offline_backlog"
    LOW_BATTERY = "low_battery"
    PAPER_OUT = "paper_out"
    TAMPER = "tamper"
    OVERHEATING = "overheating"
    CLOCK_SKEW = "clock_skew"
    # root cause across the fleet
    SITE_NETWORK = "site_network"
    ACQUIRER_OUTAGE = "acquirer_outage"
    # payment KPIs against seasonal baselines
    APPROVAL_DROP = "approval_drop"
    VOLUME_DROP = "volume_drop"
    VOLUME_SURGE = "volume_surge"
    LATENCY_SPIKE = "latency_spike"
    DECLINE_MIX = "decline_mix"
    # fraud
    CARD_TESTING = "card_testing"
    CARD_VELOCITY = "card_velocity"
    AMOUNT_OUTLIER = "amount_outlier"


# alert type -> the firmware_sim injection type (firmware_sim.scenario.InjectionType value)
DETECTS: Final[dict[AlertType, str]] = {
    AlertType.TERMINAL_OFFLINE: "terminal_offline",
    AlertType.OFFLINE_BACKLOG: "terminal_offline",
    AlertType.PAPER_OUT: "paper_out",
    AlertType.TAMPER: "tamper",
    AlertType.OVERHEATING: "overheating",
    AlertType.CLOCK_SKEW: "clock_skew",
    AlertType.SITE_NETWORK: "network_flapping",
    AlertType.ACQUIRER_OUTAGE: "acquirer_outage",
    AlertType.APPROVAL_DROP: "decline_spike",
    AlertType.CARD_TESTING: "card_testing",
    AlertType.CARD_VELOCITY: "velocity_fraud",
    AlertType.AMOUNT_OUTLIER: "amount_outlier",
    # volume_drop, volume_surge, latency_spike, decline_mix (cloud.kpis) detect none:
    # the injections that move them (a terminal cut off, card testing, an acquirer
    # outage) are other alerts' to detect, which explain them away (root cause);
    # outside a label they are false alerts
}

NOT_IN_THE_DATA: Final = frozenset({"duplicate_sends", "corrupt_frames"})
