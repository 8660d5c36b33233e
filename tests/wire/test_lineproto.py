import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.errors import LineProtocolError
from wire.lineproto import MAX_NAME_BYTES, MAX_STRING_FIELD_BYTES, encode_lines, encode_point


def test_plain_point() -> None:
    line = encode_point("payment", {"site": "s1", "device": "d1"}, {"amount": 12, "ok": True}, 7)
    assert line == "payment,device=d1,site=s1 amount=12i,ok=true 7"


def test_field_types() -> None:
    line = encode_point("m", {}, {"i": -5, "f": 0.1, "b": False, "s": "x", "big": 1e300}, 1)
    assert line == 'm i=-5i,f=0.1,b=false,s="x",big=1e+300 1'


def test_escaping_rules() -> None:
    line = encode_point(
        "my meas,x=1",
        {"tag key=": "v a,l=ue"},
        {"field key,=": 'say "hi" \\ bye\nnext line'},
        1,
    )
    assert line == (
        r"my\ meas\,x=1,tag\ key\==v\ a\,l\=ue field\ key\,\=="
        + '"say \\"hi\\" \\\\ bye\nnext line" 1'
    )


def test_tags_are_sorted_and_empty_values_left_out() -> None:
    line = encode_point("m", {"b": "2", "a": "1", "c": ""}, {"f": 1}, 1)
    assert line == "m,a=1,b=2 f=1i 1"


@pytest.mark.parametrize("bad", ["a\\b", "a\nb", "a\rb", "\tab", "a\x00b", "x\ud800"])
@pytest.mark.parametrize("where", ["measurement", "tag key", "tag value", "field key"])
def test_characters_that_do_not_round_trip_are_refused(bad: str, where: str) -> None:
    point: dict[str, object] = {"measurement": "m", "tags": {"t": "v"}, "fields": {"f": 1}}
    if where == "measurement":
        point["measurement"] = bad
    elif where == "tag key":
        point["tags"] = {bad: "v"}
    elif where == "tag value":
        point["tags"] = {"t": bad}
    else:
        point["fields"] = {bad: 1}
    with pytest.raises(LineProtocolError, match=where):
        encode_point(time_ns=1, **point)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["time", "_field", "_measurement"])
def test_reserved_keys_are_refused(key: str) -> None:
    with pytest.raises(LineProtocolError, match="reserved"):
        encode_point("m", {key: "v"}, {"f": 1}, 1)
    with pytest.raises(LineProtocolError, match="reserved"):
        encode_point("m", {}, {key: 1}, 1)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({}, "no fields"),
        ({"f": math.nan}, "finite"),
        ({"f": math.inf}, "finite"),
        ({"f": 2**63}, "int64"),
        ({"f": None}, "unsupported type"),
        ({"f": b"bytes"}, "unsupported type"),
        ({"f": "x\udfff"}, "surrogate"),
        ({"f": "x" * (MAX_STRING_FIELD_BYTES + 1)}, "longer than"),
        ({"f": "é" * (MAX_STRING_FIELD_BYTES // 2 + 1)}, "longer than"),
    ],
)
def test_bad_fields_are_refused(fields: dict[str, object], match: str) -> None:
    with pytest.raises(LineProtocolError, match=match):
        encode_point("m", {}, fields, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "x" * (MAX_NAME_BYTES + 1), "é" * (MAX_NAME_BYTES // 2 + 1)])
def test_empty_and_overlong_names_are_refused(name: str) -> None:
    with pytest.raises(LineProtocolError):
        encode_point(name, {}, {"f": 1}, 1)
    with pytest.raises(LineProtocolError):
        encode_point("m", {"t": name or "v", name or "k": "v"} if name else {"": "v"}, {"f": 1}, 1)


@pytest.mark.parametrize("ts", [2**63, -(2**63) - 1, 1.5, "1"])
def test_bad_timestamps_are_refused(ts: object) -> None:
    with pytest.raises(LineProtocolError, match="timestamp"):
        encode_point("m", {}, {"f": 1}, ts)  # type: ignore[arg-type]


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_are_written_exactly(value: float) -> None:
    line = encode_point("m", {}, {"f": value}, 1)
    assert float(line.split("=", 1)[1].rsplit(" ", 1)[0]) == value


def test_encode_lines_joins_with_newlines() -> None:
    assert encode_lines(["a f=1i 1", "b f=2i 2"]) == b"a f=1i 1\nb f=2i 2"


def test_measurement_that_would_read_as_a_comment_is_refused() -> None:
    with pytest.raises(LineProtocolError, match="comment"):
        encode_point("#m", {}, {"f": 1}, 1)
    assert encode_point("m#", {"t": "#v"}, {"#f": 1}, 1) == "m#,t=#v #f=1i 1"
