"""How a sink classifies InfluxDB's answers, with the HTTP answers scripted.

The real servers are in test_sink_v1.py / test_sink_v2.py; what they cannot be
made to answer on demand (429 with Retry-After, 503) is scripted here.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from runtime.influx_sinks import LineSink, retry_after_seconds
from runtime.influx_sinks.base import Reply, error_text
from runtime.influx_sinks.errors import SinkConfigError, SinkRetriableError


class ScriptedSink(LineSink):
    """Answers each request body with ``answer(lines)``."""

    name = "scripted"

    def __init__(self, answer: Callable[[list[bytes]], Reply]) -> None:
        self.answer = answer
        self.bodies: list[list[bytes]] = []

    def _post(self, body: bytes) -> Reply:
        lines = body.split(b"\n")
        self.bodies.append(lines)
        return self.answer(lines)

    def close(self) -> None:
        pass


def test_too_large_splits_in_halves_down_to_one_line() -> None:
    sink = ScriptedSink(lambda lines: Reply(413, "too large") if len(lines) > 2 else Reply(204, ""))
    lines = [str(i).encode() for i in range(10)]
    result = sink.write(lines)
    assert result.written == 10 and not result.rejected
    assert sorted(line for body in sink.bodies if len(body) <= 2 for line in body) == sorted(lines)
    lonely = ScriptedSink(lambda lines: Reply(413, "too large")).write([b"huge"])
    assert [r.reason for r in lonely.rejected] == ["HTTP 413: too large"]


def test_bad_points_are_isolated_and_the_rest_written() -> None:
    bad = {b"3", b"7", b"8"}

    def answer(lines: list[bytes]) -> Reply:
        return (
            Reply(400, "partial write: field type conflict") if bad & set(lines) else Reply(204, "")
        )

    result = ScriptedSink(answer).write([str(i).encode() for i in range(10)])
    assert result.written == 7
    assert {r.line for r in result.rejected} == bad
    assert all(r.reason == "HTTP 400: partial write: field type conflict" for r in result.rejected)
    assert result.splits > 0 and result.requests > 1


def test_a_batch_influxdb_says_it_dropped_whole_is_rejected_in_one_request() -> None:
    sink = ScriptedSink(lambda lines: Reply(422, f"partial write: conflict dropped={len(lines)}"))
    result = sink.write([b"a", b"b", b"c"])
    assert (result.written, len(result.rejected), result.requests) == (0, 3, 1)


def test_every_line_refused_without_a_drop_count_is_held_as_a_config_error() -> None:
    sink = ScriptedSink(lambda _: Reply(400, "unsupported path requested"))
    with pytest.raises(SinkConfigError, match="refused every one of 4 lines"):
        sink.write([b"a", b"b", b"c", b"d"])


@pytest.mark.parametrize(
    ("reply", "retry_after"),
    [
        (Reply(429, "slow down", "7"), 7.0),
        (Reply(503, "unavailable"), None),
        (Reply(500, "boom", "Thu, 01 Jan 1970 00:00:00 GMT"), 0.0),
    ],
)
def test_overload_and_server_errors_are_retriable(reply: Reply, retry_after: float | None) -> None:
    with pytest.raises(SinkRetriableError) as caught:
        ScriptedSink(lambda _: reply).write([b"a", b"b"])
    assert caught.value.status == reply.status
    assert caught.value.retry_after_s == retry_after


@pytest.mark.parametrize("status", [401, 403, 404, 405])
def test_auth_and_missing_targets_are_config_errors(status: int) -> None:
    with pytest.raises(SinkConfigError, match=f"HTTP {status}: nope.*credentials") as caught:
        ScriptedSink(lambda _: Reply(status, "nope")).write([b"a"])
    assert caught.value.status == status


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_000_000_000.0  # 2001-09-09T01:46:40Z
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds("Sun, 09 Sep 2001 01:47:00 GMT", now) == 20.0
    assert retry_after_seconds("Sun, 09 Sep 2001 01:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


def test_error_text_of_both_dialects() -> None:
    assert error_text(b'{"error":"partial write: x dropped=1"}\n') == "partial write: x dropped=1"
    assert error_text(b'{"code":"invalid","message":"unable to parse"}') == "unable to parse"
    assert error_text(b"plain text\n") == "plain text"
    assert error_text(None) == ""
