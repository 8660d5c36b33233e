"""Errors of the dashboards package: each says what is wrong in one line."""

from __future__ import annotations


class DashboardsError(Exception):
    """Base class."""


class MacroError(DashboardsError):
    """A query uses a macro or variable Grafana would not expand."""


class PushError(DashboardsError):
    """Uploading to Grafana failed: unreachable, refused credentials, wrong version."""
