import json
import logging
import sys

import pytest

from runtime.logs import JsonFormatter, KeyValueFormatter, kv


def record(message: str, **fields: object) -> logging.LogRecord:
    log = logging.getLogger("edge.publisher")
    return log.makeRecord(
        log.name, logging.WARNING, __file__, 1, message, (), None, extra=kv(**fields)
    )


def test_key_value_line_quotes_only_what_needs_it() -> None:
    line = KeyValueFormatter().format(record("broker_lost", host="b1", reason="timed out", n=3))
    assert line.startswith("ts=")
    assert line.endswith(
        ' level=warning logger=edge.publisher event=broker_lost host=b1 reason="timed out" n=3'
    )
    assert "\n" not in KeyValueFormatter().format(record("x", text="two\nlines"))


def test_json_line_carries_every_field() -> None:
    doc = json.loads(JsonFormatter().format(record("spool_full", depth=10)))
    assert doc["event"] == "spool_full" and doc["depth"] == 10 and doc["level"] == "warning"


def test_exceptions_stay_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        log = logging.getLogger("x")
        rec = log.makeRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = KeyValueFormatter().format(rec)
    assert "\n" not in line and "boom" in line


@pytest.mark.parametrize("value", ["", "a=b", 'say "hi"'])
def test_awkward_values_are_quoted(value: str) -> None:
    assert f"v={json.dumps(value)}" in KeyValueFormatter().format(record("e", v=value))


PAN = "4111111111111111"


@pytest.mark.parametrize(
    "spelling",
    [PAN, "4111.1111.1111.1111", "\\u0034\\u0031\\u0031\\u0031111111111111", int(PAN)],
)
def test_card_numbers_are_masked_in_every_field_of_both_formats(spelling: object) -> None:
    try:
        raise ValueError(f"bad frame {spelling}")
    except ValueError:
        log = logging.getLogger("x")
        rec = log.makeRecord(
            "x",
            logging.ERROR,
            __file__,
            1,
            f"event {spelling}",
            (),
            sys.exc_info(),
            extra=kv(reason=f"card {spelling} seen", seq=spelling),
        )
    key_value = KeyValueFormatter().format(rec)
    doc = json.loads(JsonFormatter().format(rec))
    for line in (key_value, json.dumps(doc, ensure_ascii=False)):
        assert "1111" not in line and "\\u0031" not in line, line
        assert line.count("[card number masked]") >= 4
    assert doc["seq"] == "[card number masked]"


def test_ordinary_values_are_left_as_they_are() -> None:
    doc = json.loads(JsonFormatter().format(record("e", ts_ns=1_764_000_000_123_456_789, n=3)))
    assert doc["ts_ns"] == 1_764_000_000_123_456_789 and doc["n"] == 3
