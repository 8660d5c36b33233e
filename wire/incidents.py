"""The one vocabulary of incidents: what the simulator injects, what the cloud raises.

`InjectionType` names every fault and fraud the firmware simulator can inject
(the ``type`` of a scenario's ``[[injection]]`` and of a ground-truth label);
`AlertType` names every alert the cloud jobs raise. Both sides import them
from here, so a rename cannot silently break the scoring.

`DETECTS` is what `cloud.evaluation.scoring` scores against the ground truth:
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


class InjectionType(enum.StrEnum):
    TERMINAL_OFFLINE = "terminal_offline"
    NETWORK_FLAPPING = "network_flapping"
    ACQUIRER_OUTAGE = "acquirer_outage"
    DECLINE_SPIKE = "decline_spike"
    CARD_TESTING = "card_testing"
    VELOCITY_FRAUD = "velocity_fraud"
    AMOUNT_OUTLIER = "amount_outlier"
    TAMPER = "tamper"
    OVERHEATING = "overheating"
    PAPER_OUT = "paper_out"
    CLOCK_SKEW = "clock_skew"
    DUPLICATE_SENDS = "duplicate_sends"
    CORRUPT_FRAMES = "corrupt_frames"
    # a sensor reading going wrong (stuck, drifting, jumping): the streaming detector's
    SENSOR_FAULT = "sensor_fault"


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
    # the streaming detector on one numeric series (a sensor field, a gateway metric,
    # an acquirer's latency): cloud.detectors.series_watch
    SERIES_ANOMALY = "series_anomaly"


# alert type -> the injection type it detects
DETECTS: Final[dict[AlertType, InjectionType]] = {
    AlertType.TERMINAL_OFFLINE: InjectionType.TERMINAL_OFFLINE,
    AlertType.OFFLINE_BACKLOG: InjectionType.TERMINAL_OFFLINE,
    AlertType.PAPER_OUT: InjectionType.PAPER_OUT,
    AlertType.TAMPER: InjectionType.TAMPER,
    AlertType.OVERHEATING: InjectionType.OVERHEATING,
    AlertType.CLOCK_SKEW: InjectionType.CLOCK_SKEW,
    AlertType.SITE_NETWORK: InjectionType.NETWORK_FLAPPING,
    AlertType.ACQUIRER_OUTAGE: InjectionType.ACQUIRER_OUTAGE,
    AlertType.APPROVAL_DROP: InjectionType.DECLINE_SPIKE,
    AlertType.CARD_TESTING: InjectionType.CARD_TESTING,
    AlertType.CARD_VELOCITY: InjectionType.VELOCITY_FRAUD,
    AlertType.AMOUNT_OUTLIER: InjectionType.AMOUNT_OUTLIER,
    AlertType.SERIES_ANOMALY: InjectionType.SENSOR_FAULT,
}

# Alert types that detect no injection: a low battery is no fault the simulator
# injects; the KPI alerts are moved by injections that are other alerts' to detect
# (a terminal cut off, card testing, an acquirer outage), which explain them away
# (root cause). Outside a label they are false alerts.
DETECTS_NOTHING: Final = frozenset(
    {
        AlertType.LOW_BATTERY,
        AlertType.VOLUME_DROP,
        AlertType.VOLUME_SURGE,
        AlertType.LATENCY_SPIKE,
        AlertType.DECLINE_MIX,
    }
)

NOT_IN_THE_DATA: Final = frozenset({InjectionType.DUPLICATE_SENDS, InjectionType.CORRUPT_FRAMES})
