"""The incident vocabulary: every alert type maps to an injection type and back, so
renaming one side cannot silently zero a type's recall."""

from __future__ import annotations

from firmware_sim.scenario_file import load_scenario, shipped_scenarios
from wire.incidents import DETECTS, DETECTS_NOTHING, NOT_IN_THE_DATA, AlertType, InjectionType


def test_every_alert_type_detects_an_injection_type_or_is_declared_to_detect_none() -> None:
    assert set(DETECTS).isdisjoint(DETECTS_NOTHING)
    assert set(DETECTS) | DETECTS_NOTHING == set(AlertType)
    assert all(isinstance(kind, InjectionType) for kind in DETECTS.values())


def test_every_injection_type_is_detected_by_an_alert_type_or_leaves_no_trace() -> None:
    detected = set(DETECTS.values())
    assert detected.isdisjoint(NOT_IN_THE_DATA)
    assert detected | NOT_IN_THE_DATA == set(InjectionType)


def test_every_injection_in_a_shipped_scenario_has_an_alert_type_or_leaves_no_trace() -> None:
    detectable = set(DETECTS.values()) | NOT_IN_THE_DATA
    for name in shipped_scenarios():
        for injection in load_scenario(name).injection:
            assert injection.type in detectable, (name, injection.type)
