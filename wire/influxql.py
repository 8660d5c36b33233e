"""Quoting for InfluxQL, so names and values from data never break a query."""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """A double-quoted InfluxQL identifier (measurement, tag or field key)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    """A single-quoted InfluxQL string literal (e.g. a tag value in WHERE)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
