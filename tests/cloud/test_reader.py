"""cloud.reading.influxql_reader against a real influxd 1.6: types, chunks, time bounds, errors."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator

import msgspec
import pytest

from cloud.reading.influxql_reader import (
    DatabaseNotFoundError,
    InfluxAuthError,
    InfluxQLError,
    InfluxQLReader,
    InfluxTimeoutError,
    InfluxUnavailableError,
    ReaderSettings,
    _lines,
)
from testkit.servers import InfluxDB1Server, ServerFactory, free_port
from wire.influxql import quote_ident, quote_string
from wire.lineproto import encode_point

BASE = 1_764_000_000_000_000_000  # 2025-11-24, one influxd shard group
HOUR = 3_600_000_000_000

ReaderFactory = Callable[..., InfluxQLReader]


@pytest.fixture
def db(influxdb_session: InfluxDB1Server) -> str:
    """A fresh database of its own on the shared influxd."""
    name = f"reader_{uuid.uuid4().hex[:10]}"
    influxdb_session.create_database(name)
    return name


@pytest.fixture
def reader(influxdb_session: InfluxDB1Server, db: str) -> Iterator[ReaderFactory]:
    """Readers of ``db`` on the shared influxd; settings can be overridden."""
    opened: list[InfluxQLReader] = []

    def make(**overrides: object) -> InfluxQLReader:
        settings = {"url": influxdb_session.url, "database": db, **overrides}
        opened.append(InfluxQLReader(msgspec.convert(settings, ReaderSettings)))
        return opened[-1]

    yield make
    for r in opened:
        r.close()


# ----------------------------------------------------------------------- settings


def test_settings_refuse_credentials_in_the_url_and_hide_secrets() -> None:
    with pytest.raises(msgspec.ValidationError, match="credentials"):
        msgspec.convert({"url": "http://u:secret@h:8086", "database": "d"}, ReaderSettings)
    with pytest.raises(ValueError, match="not both"):
        ReaderSettings(url="http://h:8086", database="d", username="u", token="t")
    settings = ReaderSettings(url="http://h:8086", database="d", username="u", password="pw-x")
    assert "pw-x" not in repr(settings)
    assert "tok-x" not in repr(ReaderSettings(url="http://h:8086", database="d", token="tok-x"))


@pytest.mark.parametrize("block", [1, 2, 5, 64])
def test_records_are_split_on_newlines_whatever_the_read_size(block: int) -> None:
    stream = b'{"a":1}\n{"b":[2,3]}\n\n{"c":"x\\ny"}'  # the last one without newline
    blocks = iter([stream[i : i + block] for i in range(0, len(stream), block)])
    expected = [b'{"a":1}', b'{"b":[2,3]}', b'{"c":"x\\ny"}']
    assert [bytes(line) for line in _lines(blocks)] == expected


# ------------------------------------------------------------------ reading data


@pytest.mark.integration
def test_round_trip_of_field_types_and_tags(
    influxdb_session: InfluxDB1Server, db: str, reader: ReaderFactory
) -> None:
    influxdb_session.write(
        [
            f'payment,site=s1,device=pos-1 amount_minor=1250i,lat=181.5,code="05",ok=true {BASE}',
            f'payment,site=s2,device=pos-2 amount_minor=-7i,lat=0.25,code="00",ok=false {BASE + 1}',
            f"payment,site=s2,device=pos-3 amount_minor=3i {BASE + 2}",  # the other fields missing
        ],
        db,
    )
    columns = ["device", "site", "amount_minor", "lat", "code", "ok"]
    table = reader().select("payment", columns, BASE, BASE + HOUR)
    assert len(table) == 3
    assert list(table.columns) == ["time", *columns]
    assert table.time == [BASE, BASE + 1, BASE + 2]
    assert table["device"] == ["pos-1", "pos-2", "pos-3"]
    assert table["site"] == ["s1", "s2", "s2"]
    assert table["amount_minor"] == [1250, -7, 3]
    assert table["lat"] == [181.5, 0.25, None]
    assert table["code"] == ["05", "00", None]
    assert table["ok"] == [True, False, None]
    assert [type(v) for v in table["amount_minor"]] == [int, int, int]
    assert isinstance(table.time[0], int)

    grouped = reader().query(f"SELECT amount_minor FROM payment WHERE time >= {BASE} GROUP BY site")
    assert [(s.name, s.tags, s.columns) for s in grouped] == [
        ("payment", {"site": "s1"}, ["time", "amount_minor"]),
        ("payment", {"site": "s2"}, ["time", "amount_minor"]),
    ]
    assert grouped[1].values == [[BASE + 1, -7], [BASE + 2, 3]]


@pytest.mark.integration
def test_many_chunks_and_sub_queries_deliver_every_row_once_in_time_order(
    influxdb_session: InfluxDB1Server, db: str, reader: ReaderFactory
) -> None:
    rows = 25_000
    influxdb_session.write(
        (f"beat,device=pos-{i % 7} n={i}i {BASE + i * 1000}" for i in range(rows)), db
    )
    # 1000 rows a chunk; 25 ms of data in sub-queries of 7 ms (the last one shorter).
    r = reader(chunk_size=1000, max_span_s=0.007)
    table = r.select("beat", ["n", "device"], BASE, BASE + rows * 1000)
    assert len(table) == rows
    assert table["n"] == list(range(rows))
    assert table.time == [BASE + i * 1000 for i in range(rows)]
    assert table["device"][:8] == [f"pos-{i % 7}" for i in range(8)]


@pytest.mark.integration
def test_a_series_split_across_chunks_is_merged(
    influxdb_session: InfluxDB1Server, db: str, reader: ReaderFactory
) -> None:
    influxdb_session.write((f"beat,device=pos-{i % 3} n={i}i {BASE + i}" for i in range(2_500)), db)
    series = reader(chunk_size=100).query(
        f"SELECT n FROM beat WHERE time >= {BASE} GROUP BY device; SELECT count(n) FROM beat"
    )
    assert [(s.statement_id, s.tags) for s in series] == [
        (0, {"device": "pos-0"}),
        (0, {"device": "pos-1"}),
        (0, {"device": "pos-2"}),
        (1, {}),
    ]
    for device, s in enumerate(series[:3]):
        assert [n for _, n in s.values] == list(range(device, 2_500, 3))
    assert series[3].values == [[0, 2_500]]


@pytest.mark.integration
def test_time_bounds_are_start_inclusive_end_exclusive_across_sub_queries(
    influxdb_session: InfluxDB1Server, db: str, reader: ReaderFactory
) -> None:
    influxdb_session.write((f"beat n={t}i {BASE + t}" for t in range(10)), db)
    whole = reader().select("beat", ["n"], BASE + 2, BASE + 7)
    assert whole["n"] == [2, 3, 4, 5, 6]
    # 3 ns per sub-query: points fall exactly on the boundaries between them.
    split = reader(max_span_s=3e-9).select("beat", ["n"], BASE, BASE + 10)
    assert split["n"] == list(range(10))
    assert len(reader().select("beat", ["n"], BASE + 5, BASE + 5)) == 0
    empty = reader().select("beat", ["n"], BASE - HOUR, BASE)
    assert (len(empty), list(empty.columns)) == (0, ["time", "n"])


@pytest.mark.integration
def test_hostile_names_and_values_are_quoted(
    influxdb_session: InfluxDB1Server, db: str, reader: ReaderFactory
) -> None:
    measurement, tag, field = 'pay "ment", x', "si'te", 'amo"unt ='
    hostile = 'O\'Brien "and" co, = x'
    influxdb_session.write(
        [
            encode_point(measurement, {tag: hostile}, {field: 1, "note": 'a \\ b\'s "q"'}, BASE),
            encode_point(measurement, {tag: "O"}, {field: 2, "note": "plain"}, BASE + 1),
            # 1.x reads a backslash before an ordinary character literally (wire.lineproto
            # refuses to write it, as 2.x reads it differently): the reader must still quote it.
            f"tagged,site=back\\slash'q n=3i {BASE + 2}",
        ],
        db,
    )
    r = reader()
    by_tag = r.select(
        measurement,
        [field, tag],
        BASE,
        BASE + HOUR,
        where=f"{quote_ident(tag)} = {quote_string(hostile)}",
    )
    assert (by_tag[field], by_tag[tag]) == ([1], [hostile])
    note = quote_string('a \\ b\'s "q"')
    assert r.select(measurement, [field], BASE, BASE + HOUR, where=f"note = {note}")[field] == [1]
    site = quote_string("back\\slash'q")
    backslash = r.select("tagged", ["n", "site"], BASE, BASE + HOUR, where=f"site = {site}")
    assert backslash["site"] == ["back\\slash'q"]
    # an injection attempt in a value stays a value: no row matches, nothing breaks
    sneaky = quote_string("x' OR 'a'='a")
    assert len(r.select(measurement, [field], BASE, BASE + HOUR, where=f"note = {sneaky}")) == 0


# ------------------------------------------------------------------------ errors


@pytest.mark.integration
def test_missing_database(influxdb_session: InfluxDB1Server) -> None:
    settings = ReaderSettings(url=influxdb_session.url, database="no_such_db")
    with InfluxQLReader(settings) as r, pytest.raises(DatabaseNotFoundError) as err:
        r.select("payment", ["amount_minor"], BASE, BASE + HOUR)
    assert "database not found: no_such_db" in str(err.value)
    assert influxdb_session.url in str(err.value)


@pytest.mark.integration
def test_bad_query_carries_the_servers_text(reader: ReaderFactory) -> None:
    r = reader()
    with pytest.raises(InfluxQLError, match="error parsing query: found SELEC"):
        r.query("SELEC n FROM beat")
    with pytest.raises(InfluxQLError, match="error parsing query") as err:
        r.select("beat", ["n"], BASE, BASE + HOUR, where="n = ")
    assert 'the query was \'SELECT "n" FROM "beat" WHERE time >= ' in str(err.value)


@pytest.mark.integration
def test_auth(influxdb_factory: ServerFactory[InfluxDB1Server]) -> None:
    server = influxdb_factory(auth=True)
    server.create_database("secure")
    server.write(f"beat n=1i {BASE}", "secure")
    server.query("CREATE USER reader_only WITH PASSWORD 'ro-pw'")

    def read(**credentials: str) -> int:
        settings = msgspec.convert(
            {"url": server.url, "database": "secure", **credentials}, ReaderSettings
        )
        with InfluxQLReader(settings) as r:
            return len(r.select("beat", ["n"], BASE, BASE + HOUR))

    assert read(username=server.admin_user, password=server.admin_password) == 1
    for credentials in (
        {"username": server.admin_user, "password": "wrong-pw-123"},
        {},
        {"token": "tok-secret-456"},  # influxd 1.6 does not take tokens
    ):
        with pytest.raises(InfluxAuthError) as err:
            read(**credentials)
        message = str(err.value)
        assert "HTTP 401" in message
        assert server.url in message and "'secure'" in message
        assert "check the username and password" in message
        assert "wrong-pw-123" not in message and "tok-secret-456" not in message
    with pytest.raises(InfluxAuthError, match="HTTP 403: error authorizing query"):
        read(username="reader_only", password="ro-pw")  # no READ on the database


@pytest.mark.integration
def test_stopped_and_absent_servers_are_unavailable(influxdb: InfluxDB1Server) -> None:
    with InfluxQLReader(ReaderSettings(url=influxdb.url, database="x")) as r:
        ping = r.ping()
        assert (ping.reachable, ping.version) == (True, "1.6.7~rc0")
        influxdb.stop()
        with pytest.raises(InfluxUnavailableError, match=r"cannot connect.*Connection refused"):
            r.query("SHOW DATABASES")
        assert not r.ping().reachable
    absent = ReaderSettings(url=f"http://127.0.0.1:{free_port()}", database="x")
    with InfluxQLReader(absent) as r, pytest.raises(InfluxUnavailableError) as err:
        r.select("beat", ["n"], BASE, BASE + HOUR)
    assert absent.url in str(err.value) and "check that the server runs" in str(err.value)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that never answers; its URL.

    It never even accepts: the kernel completes the handshake for connections in
    the backlog, so the client connects, sends its request and waits.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_a_server_that_never_answers_times_out(silent_server: str) -> None:
    settings = ReaderSettings(url=silent_server, database="tillpulse", timeout_s=0.5)
    with InfluxQLReader(settings) as r:
        started = time.monotonic()
        with pytest.raises(InfluxTimeoutError, match=r"no answer within 0\.5 s") as err:
            r.select("beat", ["n"], BASE, BASE + HOUR)
        assert time.monotonic() - started < 3
        assert silent_server in str(err.value)
        assert not r.ping().reachable
