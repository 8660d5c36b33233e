import json
import logging
import sys

import pytest

from tillpulse.logs import JsonFormatter, KeyValueFormatter, kv


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
