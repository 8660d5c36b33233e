"""The line-protocol contract, proven against a real influxd 1.6.

Hostile names and values either come back from InfluxDB exactly as written,
or the encoder refuses them with LineProtocolError before anything is sent.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testkit.servers import InfluxDB1Server
from tests import strategies as s
from wire import messages as m
from wire.errors import LineProtocolError
from wire.influxql import quote_ident, quote_string
from wire.lineproto import FieldValue, encode_point
from wire.points import point_time_ns, to_line

pytestmark = pytest.mark.integration

HOSTILE_ALPHABET = " ,=\"'\\\n\r\t\x00=é漢🙂\u00a0\u2028#$/*aZ09_-."
hostile_text = st.text(alphabet=HOSTILE_ALPHABET, max_size=12) | st.text(max_size=12)
field_values: st.SearchStrategy[FieldValue] = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | hostile_text
)
_databases = itertools.count()


def must_be_refused(text: str, *, key: bool = False, measurement: bool = False) -> bool:
    """The documented refusals (wire.lineproto's docstring) for a name."""
    if text == "" or any(c in text for c in "\\\n\r\t\x00"):
        return True
    if measurement and text.startswith("#"):
        return True
    return key and (text == "time" or text.startswith("_"))


def fresh_database(influxdb: InfluxDB1Server) -> str:
    name = f"roundtrip_{next(_databases)}"
    influxdb.create_database(name)
    return name


def read_all(influxdb: InfluxDB1Server, db: str, measurement: str) -> list[dict[str, Any]]:
    answer = influxdb.query(f"SELECT * FROM {quote_ident(measurement)}", db=db)
    result = answer["results"][0]
    assert "error" not in result, result
    rows = []
    for series in result.get("series", []):
        for values in series["values"]:
            rows.append(
                {k: v for k, v in zip(series["columns"], values, strict=True) if v is not None}
            )
    return rows


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    measurement=hostile_text,
    tags=st.dictionaries(hostile_text, hostile_text, max_size=3),
    fields=st.dictionaries(hostile_text, field_values, min_size=1, max_size=3),
    time_ns=st.integers(min_value=0, max_value=2**62),
)
def test_hostile_points_read_back_exactly_or_are_refused(
    influxdb_session: InfluxDB1Server,
    measurement: str,
    tags: dict[str, str],
    fields: dict[str, FieldValue],
    time_ns: int,
) -> None:
    tags = {k: v for k, v in tags.items() if k not in fields}  # one namespace on read
    refused = (
        must_be_refused(measurement, measurement=True)
        or any(must_be_refused(k, key=True) for k in [*tags, *fields])
        or any(v and must_be_refused(v) for v in tags.values())
    )
    try:
        line = encode_point(measurement, tags, fields, time_ns)
    except LineProtocolError as exc:
        assert refused, f"refused a point InfluxDB can store: {exc}"
        return
    assert not refused, f"encoded a point that should be refused: {line!r}"

    db = fresh_database(influxdb_session)
    influxdb_session.write(line, db)
    rows = read_all(influxdb_session, db, measurement)
    expected = {"time": time_ns, **{k: v for k, v in tags.items() if v}, **fields}
    assert len(rows) == 1
    # InfluxDB's JSON prints a whole float without a fraction (1e16 -> 10000000000000000);
    # Python then reads an int that parses back to the very same float.
    floats = {k for k, v in fields.items() if isinstance(v, float)}
    assert {k: float(v) if k in floats else v for k, v in rows[0].items()} == expected
    influxdb_session.query(f"DROP DATABASE {quote_ident(db)}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=s.device_messages)
def test_every_message_type_lands_with_its_fields(
    influxdb_session: InfluxDB1Server, message: m.DeviceMessage
) -> None:
    db = fresh_database(influxdb_session)
    influxdb_session.write(to_line(message), db)
    measurement = to_line(message).split(",", 1)[0]
    rows = read_all(influxdb_session, db, measurement)
    assert len(rows) == 1
    row = rows[0]
    assert (row["site"], row["device"]) == (message.site, message.device)
    if isinstance(message, m.DeviceState):
        assert row["time"] == message.ts and row["online"] == int(message.online)
    else:
        assert row["time"] == point_time_ns(message.ts, message.seq)
        assert row["seq"] == message.seq
    if isinstance(message, m.PaymentTransaction):
        assert row["txn_id"] == message.txn_id
        assert row["card_token"] == message.card_token
        assert row["amount_minor"] == message.amount_minor
        assert row["auth_latency_ms"] == message.auth_latency_ms
        assert "txn_id" not in answer_tag_keys(influxdb_session, db)
    influxdb_session.query(f"DROP DATABASE {quote_ident(db)}")


def answer_tag_keys(influxdb: InfluxDB1Server, db: str) -> set[str]:
    rows = influxdb.series_values("SHOW TAG KEYS", db=db)
    return {row[0] for row in rows}


def payment(seq: int, ts: int, txn: str) -> m.PaymentTransaction:
    return m.PaymentTransaction(
        site="store-1",
        device="pos-1",
        ts=ts,
        seq=seq,
        txn_id=txn,
        card_token="ct1_AAAAAAAAAAAAAAAAAAAAAA",
        amount_minor=500 + seq,
        currency="EUR",
        method=m.PaymentMethod.CHIP,
        acquirer="acq-a",
        mcc="5411",
        response_code="00",
        approved=True,
        auth_latency_ms=250.0,
    )


def test_redelivery_lands_on_the_same_point_and_distinct_events_never_collide(
    influxdb_session: InfluxDB1Server,
) -> None:
    db = fresh_database(influxdb_session)
    stuck_clock = 1_764_000_000_123_456_789
    # 2,000 distinct events from a device whose clock is stuck, each delivered twice.
    events = [payment(seq, stuck_clock, f"t-{seq}") for seq in range(2_000)]
    lines = [to_line(e) for e in events]
    influxdb_session.write(lines, db)
    influxdb_session.write(lines[::-1], db)  # redelivery, in another order
    count = influxdb_session.series_values('SELECT count("txn_id") FROM payment', db)
    assert count[0][1] == 2_000
    txns = influxdb_session.series_values(
        f'SELECT "txn_id" FROM payment WHERE "site" = {quote_string("store-1")}', db
    )
    assert sorted(row[1] for row in txns) == sorted(e.txn_id for e in events)
