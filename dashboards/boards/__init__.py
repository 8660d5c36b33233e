"""The tillpulse dashboards, one module each."""

from __future__ import annotations

from dashboards.boards import fleet, payments, pipeline, terminal
from dashboards.grafana_json import Dashboard

ALL: tuple[Dashboard, ...] = (
    fleet.DASHBOARD,
    terminal.DASHBOARD,
    payments.DASHBOARD,
    pipeline.DASHBOARD,
)
