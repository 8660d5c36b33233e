"""Grafana's macro and template-variable expansion for InfluxQL, as Grafana does it.

Used by the tests to run every panel and alert query against a real InfluxDB,
and usable to debug a panel by hand. Two passes, like Grafana's:

1. Template variables (the frontend's ``templateSrv``), matched as ``$name``,
   ``${name}`` or ``${name:format}``:

   - ``${name:regex}``: each value regex-escaped; several (or All, when the
     variable has no custom all value) joined as ``(a|b)``. The dashboards use
     this form in ``"tag" =~ /^${name:regex}$/``.
   - ``$name`` / ``${name}``: the InfluxDB datasource's own format: a
     single-value variable is regex-escaped unless it is a number; a
     multi-value or include-All one is formatted like ``:regex``.
   - ``$__from`` / ``$__to`` (``${__from}``...): the range in epoch ms.

2. The InfluxQL backend's macros (pkg/tsdb/influxdb/influxql), in its order:
   ``$timeFilter`` → ``time >= <from>ms and time <= <to>ms``, ``$interval``
   and ``$__interval`` → the interval in Grafana's format (``10s``, ``1m``,
   ``2h``), ``$__interval_ms`` → milliseconds.

The interval is Grafana's: the range divided by the panel's max data points,
rounded to a "nice" step, never below the panel's min interval.

``$__timeFilter`` is *not* expanded by Grafana's InfluxQL datasource (only
``$timeFilter``), so it is refused here rather than passed as if it worked;
so is any variable that is not defined.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from dashboards.errors import MacroError

# Grafana's variable syntax (templateSrv's regex, without the deprecated [[name]] form)
VARIABLE: Final = re.compile(r"\$(\w+)|\$\{(\w+)(?::([^}]+))?\}")
BACKEND_MACROS: Final = frozenset({"timeFilter", "interval", "__interval", "__interval_ms"})
RANGE_VARIABLES: Final = frozenset({"__from", "__to"})
BUILT_IN: Final = BACKEND_MACROS | RANGE_VARIABLES
DEFAULT_MAX_DATA_POINTS: Final = 1000
_REGEX_SPECIAL: Final = re.compile(r"[\\^$*+?.()|\[\]{}/]")  # Grafana's escapeRegex
_NUMBER: Final = re.compile(r"-?\d+(\.\d*)?")
_DURATION: Final = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_MS: Final = {
    "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
    "w": 604_800_000, "y": 31_536_000_000,
}  # fmt: skip
# Grafana's roundInterval: (upper bound, step), both in ms
_STEPS: Final = (
    (10, 1), (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500),
    (1_500, 1_000), (3_500, 2_000), (7_500, 5_000), (12_500, 10_000), (17_500, 15_000),
    (25_000, 20_000), (45_000, 30_000), (90_000, 60_000), (210_000, 120_000),
    (450_000, 300_000), (750_000, 600_000), (1_050_000, 900_000), (1_500_000, 1_200_000),
    (2_700_000, 1_800_000), (5_400_000, 3_600_000), (9_000_000, 7_200_000),
    (16_200_000, 10_800_000), (32_400_000, 21_600_000), (86_400_000, 43_200_000),
    (604_800_000, 86_400_000), (1_814_400_000, 604_800_000), (3_628_800_000, 2_592_000_000),
)  # fmt: skip


@dataclass(frozen=True)
class Selection:
    """A template variable's current values, and whether it is multi-value or include-All."""

    values: tuple[str, ...]
    multi: bool = False


@dataclass(frozen=True)
class TimeRange:
    from_ms: int
    to_ms: int

    def __post_init__(self) -> None:
        if self.to_ms <= self.from_ms:
            raise MacroError(f"time range ends ({self.to_ms}) before it starts ({self.from_ms})")

    @classmethod
    def of_ns(cls, from_ns: int, to_ns: int) -> TimeRange:
        return cls(from_ns // 1_000_000, to_ns // 1_000_000)


def parse_duration_ms(text: str) -> int:
    """``10s``, ``1m``, ``2h`` (Grafana's interval syntax) in milliseconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise MacroError(f"not an interval: {text!r} (expected e.g. 10s, 1m, 2h)")
    return int(match[1]) * _MS[match[2]]


def round_interval_ms(ms: float) -> int:
    for bound, step in _STEPS:
        if ms <= bound:
            return step
    return _MS["y"]


def interval_ms(
    time_range: TimeRange,
    *,
    max_data_points: int = DEFAULT_MAX_DATA_POINTS,
    min_interval: str = "",
) -> int:
    """Grafana's $__interval: range / max data points, rounded, at least ``min_interval``."""
    ms = round_interval_ms((time_range.to_ms - time_range.from_ms) / max_data_points)
    return max(ms, parse_duration_ms(min_interval)) if min_interval else ms


def format_interval(ms: int) -> str:
    """Grafana's interval text: the largest unit that fits, truncated (90 s -> ``1m``)."""
    for unit in ("y", "d", "h", "m", "s", "ms"):
        if ms >= _MS[unit] or unit == "ms":
            return f"{max(1, ms // _MS[unit])}{unit}"
    raise AssertionError("unreachable")


def escape_regex(value: str) -> str:
    return _REGEX_SPECIAL.sub(lambda m: "\\" + m[0], value)


def _regex_format(values: Sequence[str]) -> str:
    escaped = [escape_regex(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def _format(name: str, selection: Selection, fmt: str | None) -> str:
    if not selection.values:
        raise MacroError(f"variable ${name} has no value")
    if fmt == "regex" or (fmt is None and selection.multi):
        return _regex_format(selection.values)
    if fmt == "raw":
        return ",".join(selection.values)
    if fmt is not None:
        raise MacroError(f"format :{fmt} of ${name} is not supported here (use :regex or :raw)")
    value = selection.values[0]
    return value if _NUMBER.fullmatch(value) else escape_regex(value)


def used_variables(query: str) -> set[str]:
    """Names of the template variables a query uses (Grafana's built-ins left out)."""
    names = {m[1] or m[2] for m in VARIABLE.finditer(query)}
    return names - BUILT_IN


def expand(
    query: str,
    time_range: TimeRange,
    variables: Mapping[str, Selection] | None = None,
    *,
    interval: int | None = None,
) -> str:
    """``query`` as Grafana sends it to InfluxDB; ``interval`` in ms (default: Grafana's)."""
    variables = variables or {}
    interval = interval if interval is not None else interval_ms(time_range)
    if "$__timeFilter" in query:
        raise MacroError(
            "Grafana's InfluxQL datasource does not expand $__timeFilter: use $timeFilter"
        )

    def template(match: re.Match[str]) -> str:
        name, fmt = match[1] or match[2], match[3]
        if name in BACKEND_MACROS:
            return match[0]  # the second pass
        if name in RANGE_VARIABLES:
            return str(time_range.from_ms if name == "__from" else time_range.to_ms)
        if name not in variables:
            raise MacroError(f"undefined variable ${name} in: {query}")
        return _format(name, variables[name], fmt)

    text = VARIABLE.sub(template, query)
    text = text.replace(
        "$timeFilter", f"time >= {time_range.from_ms}ms and time <= {time_range.to_ms}ms"
    )
    text = text.replace("$interval", format_interval(interval))
    text = text.replace("$__interval_ms", str(interval))
    return text.replace("$__interval", format_interval(interval))
