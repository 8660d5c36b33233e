"""InfluxDB line protocol encoder.

Escaping follows what InfluxDB 1.x, 2.x and 3.x all parse the same way:
- measurement: ``,`` and space are backslash-escaped;
- tag keys, tag values and field keys: ``,``, ``=`` and space are escaped;
- string field values: ``"`` and ``\\`` are escaped; any other character,
  newline included, is written as is.
Some things cannot be written so that every version reads them back intact,
and are refused with `LineProtocolError` before anything is sent:
- a backslash in a measurement, tag or field key or tag value (InfluxDB 1.x
  reads it literally, 2.x as an escape: the two disagree);
- newline, carriage return and NUL there (they end or truncate the line) and
  tab (InfluxDB 1.x skips it as white space at the start of a field key);
- the key ``time`` and keys starting with ``_`` (reserved by InfluxDB);
- a measurement starting with ``#`` (the line would be read as a comment);
- NaN and infinite floats, integers outside int64, an empty field set,
  over-long names and strings.
An empty tag value is left out of the line: InfluxDB stores a missing tag and
an empty one identically. Tags are written sorted by key, as InfluxDB prefers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Final

from wire.errors import LineProtocolError

FieldValue = bool | int | float | str

MAX_NAME_BYTES: Final = 256  # measurement, tag key, tag value, field key
MAX_STRING_FIELD_BYTES: Final = 64 * 1024 - 1  # InfluxDB 1.x's limit
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

_UNSAFE_NAME: Final = re.compile(r"[\\\n\r\t\x00]")
_NEEDS_WORK: Final = re.compile(r"[,= \\\n\r\t\x00\ud800-\udfff]")  # escape or refuse
_SURROGATE: Final = re.compile(r"[\ud800-\udfff]")
_KEY_ESCAPES: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_MEASUREMENT_ESCAPES: Final = str.maketrans({",": r"\,", " ": r"\ "})

# Keys and measurements come from a small fixed set, so their escaped form is
# cached; the cache is bounded in case a caller feeds it unbounded names.
_CACHE_LIMIT: Final = 4096
_measurement_cache: dict[str, str] = {}
_key_cache: dict[str, str] = {}


def encode_point(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, FieldValue],
    time_ns: int,
) -> str:
    """One line (without the trailing newline) for one point."""
    head = _measurement(measurement)
    if tags:
        parts = [head]
        for key in sorted(tags):
            escaped_key = _key(key, "tag key")  # checked even when the value is empty
            value = tags[key]
            if value:
                parts.append(f"{escaped_key}={tag_value(value, key)}")
        head = ",".join(parts)
    if not fields:
        raise LineProtocolError(f"point in {measurement[:80]!r} has no fields")
    body = ",".join(
        f"{_key(key, 'field key')}={_field_value(key, value)}" for key, value in fields.items()
    )
    if type(time_ns) is not int or not _INT64_MIN <= time_ns <= _INT64_MAX:
        raise LineProtocolError(f"timestamp {time_ns!r} is not an int64 of nanoseconds")
    return f"{head} {body} {time_ns}"


def encode_lines(lines: Iterable[str]) -> bytes:
    """A write request body: lines joined by newlines, UTF-8."""
    return "\n".join(lines).encode("utf-8")


def _measurement(name: str) -> str:
    escaped = _measurement_cache.get(name)
    if escaped is None:
        _check_name(name, "measurement")
        if name.startswith("#"):
            raise LineProtocolError(f"measurement {name[:80]!r} starts with '#': a comment line")
        escaped = name.translate(_MEASUREMENT_ESCAPES)
        _remember(_measurement_cache, name, escaped)
    return escaped


def _key(name: str, what: str) -> str:
    escaped = _key_cache.get(name)
    if escaped is None:
        _check_name(name, what)
        if name == "time" or name.startswith("_"):
            raise LineProtocolError(f"{what} {name!r} is reserved by InfluxDB")
        escaped = name.translate(_KEY_ESCAPES)
        _remember(_key_cache, name, escaped)
    return escaped


def tag_value(value: str, key: str = "tag") -> str:
    """A tag value, escaped; raises LineProtocolError if it cannot round-trip."""
    if _NEEDS_WORK.search(value) is None and len(value) <= MAX_NAME_BYTES // 4:
        return value  # the common case: an id made of safe characters
    _check_name(value, f"tag value for {key!r}")
    return value.translate(_KEY_ESCAPES)


def int_field(value: int, key: str = "field") -> str:
    return f"{int_digits(value, key)}i"


def int_digits(value: int, key: str = "field") -> str:
    """An integer field without its ``i`` suffix; raises LineProtocolError if not an int64."""
    if type(value) is not int or not _INT64_MIN <= value <= _INT64_MAX:
        raise LineProtocolError(f"field {key!r} = {value!r} is not an int64")
    return str(value)


def float_field(value: float, key: str = "field") -> str:
    """A float field; ints are widened, so a field never changes type between points."""
    if type(value) is not float:
        if type(value) is not int:
            raise LineProtocolError(f"field {key!r} = {value!r} is not a number")
        value = float(value)
    if not math.isfinite(value):
        raise LineProtocolError(f"field {key!r} is {value}: InfluxDB stores finite floats only")
    return repr(value)


def bool_field(value: bool) -> str:
    return "true" if value else "false"


def string_field(value: str, key: str = "field") -> str:
    """A string field, quoted and escaped."""
    return f'"{string_content(value, key)}"'


def string_content(value: str, key: str = "field") -> str:
    """A string field escaped, without its quotes (a `enum.StrEnum` member: its value)."""
    if not isinstance(value, str):
        raise LineProtocolError(f"field {key!r} = {value!r} is not a string")
    if len(value) * 4 > MAX_STRING_FIELD_BYTES and _utf8_len(value, key) > MAX_STRING_FIELD_BYTES:
        raise LineProtocolError(
            f"string field {key!r} is longer than {MAX_STRING_FIELD_BYTES} bytes"
        )
    if _SURROGATE.search(value) is not None:
        raise LineProtocolError(f"string field {key!r} is not valid Unicode (lone surrogate)")
    if "\\" in value or '"' in value:
        return value.replace("\\", "\\\\").replace('"', '\\"')
    return value


def _field_value(key: str, value: FieldValue) -> str:
    if isinstance(value, bool):  # before int: bool is an int subclass
        return bool_field(value)
    if isinstance(value, int):
        return int_field(value, key)
    if isinstance(value, float):
        return float_field(value, key)
    if isinstance(value, str):
        return string_field(value, key)
    raise LineProtocolError(f"field {key!r} has unsupported type {type(value).__name__}")


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str):
        raise LineProtocolError(f"{what} must be a string, got {type(name).__name__}")
    if not name:
        raise LineProtocolError(f"{what} is empty")
    bad = _UNSAFE_NAME.search(name)
    if bad is not None:
        raise LineProtocolError(
            f"{what} {name[:80]!r} contains {bad.group()!r}, which InfluxDB versions "
            "do not read back alike"
        )
    if _utf8_len(name, what) > MAX_NAME_BYTES:
        raise LineProtocolError(f"{what} {name[:80]!r}... is longer than {MAX_NAME_BYTES} bytes")


def _utf8_len(text: str, what: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise LineProtocolError(f"{what} is not valid Unicode (lone surrogate)") from None


def _remember(cache: dict[str, str], name: str, escaped: str) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[name] = escaped
