"""Fixtures for the dashboards tests."""

from __future__ import annotations

# `tillpulse dashboards push` points the root logger at the test's stderr, like the
# simulator's CLI: the same autouse fixture puts it back (gateway threads log later)
from tests.firmware_sim.conftest import _restore_logging

__all__ = ["_restore_logging"]
