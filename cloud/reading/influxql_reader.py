"""Read InfluxDB with InfluxQL over HTTP ``GET /query``: one dialect for every version.

InfluxDB 1.x speaks it natively, 2.7+ through its virtual DBRP mappings (a bucket
reads as database ``<bucket>`` and retention policy ``autogen``) and 3.x natively.
Requests ask for ``epoch=ns`` (timestamps as integer nanoseconds) and
``chunked=true``: the server streams one JSON object per chunk of at most
``chunk_size`` rows, newline-separated, so neither side holds one huge document.
The chunks are decoded one by one as they arrive (msgspec); a series split
across chunks (``"partial": true``) is merged again. A server that ignores
``chunked`` sends a single object, which reads the same way.

    with InfluxQLReader(ReaderSettings(url="http://influx:8086", database="tillpulse")) as r:
        table = r.select("payment", ["device", "amount_minor"], start_ns, end_ns)

There are no retries in here: every failure raises one of the errors below, and
the caller decides (``InfluxTimeoutError`` and ``InfluxUnavailableError`` are the
ones worth retrying; the others need the config or the query fixed).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import msgspec
import urllib3

from wire.influxql import quote_ident

_READ_BYTES: Final = 1 << 20  # socket read size while streaming a response
_MAX_ERROR_TEXT: Final = 500  # of a server's error body, in a message
_MAX_QUERY_TEXT: Final = 300  # of the query, in a message
# "<urllib3.connection.HTTPConnection object at 0x..>: " or "HTTPConnectionPool(host=..): "
_URLLIB3_PREFIX: Final = re.compile(r"^(<[^>]*>|\w+Pool\([^)]*\)): (Failed to establish [^:]*: )?")


# ----------------------------------------------------------------------------- errors


class InfluxQueryError(Exception):
    """Base class of every error the reader raises; the message names URL and database."""


class InfluxAuthError(InfluxQueryError):
    """401/403 or "authorization failed": wrong credentials or too few privileges."""


class DatabaseNotFoundError(InfluxQueryError):
    """The database (1.x/3.x) or its DBRP mapping / bucket (2.x) does not exist."""


class InfluxQLError(InfluxQueryError):
    """The server refused or failed the query; the message carries the server's text."""


class InfluxTimeoutError(InfluxQueryError):
    """No connection, or no data, within ``timeout_s``."""


class InfluxUnavailableError(InfluxQueryError):
    """Connection refused or dropped, or HTTP 429/5xx: the server is down or overloaded."""


# --------------------------------------------------------------------------- settings


class ReaderSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how to read. Credentials: ``username``/``password`` (1.x) or ``token``.

    ``timeout_s`` bounds the connect and every wait for data, not the whole
    query: a long read that keeps streaming chunks is not cut off, a server that
    goes silent for ``timeout_s`` is. ``max_span_s`` is the longest time range
    one request of :meth:`InfluxQLReader.select` covers.
    """

    url: str
    database: str
    retention_policy: str | None = None
    username: str | None = None
    password: str | None = None
    token: str | None = None
    timeout_s: float = 30.0
    chunk_size: int = 10_000
    max_span_s: float = 3600.0
    verify_tls: bool = True
    ca_file: str | None = None

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http(s)://host[:port], got {self.url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"url must not have a query or fragment, got {self.url!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("url must not carry credentials: use username/password or token")
        if not self.database:
            raise ValueError("database must not be empty")
        if self.token is not None and self.username is not None:
            raise ValueError("give either username/password (1.x) or token, not both")
        if self.timeout_s <= 0 or self.max_span_s <= 0 or self.chunk_size <= 0:
            raise ValueError("timeout_s, max_span_s and chunk_size must be positive")

    def __repr__(self) -> str:
        # The generated repr would print the password and the token.
        return f"ReaderSettings(url={self.url!r}, database={self.database!r})"


# ---------------------------------------------------------------------------- results


@dataclass(slots=True)
class Series:
    """One series of a statement: ``values`` are rows in ``columns`` order, time first."""

    statement_id: int
    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]]


@dataclass(slots=True)
class Table:
    """Columnar rows of :meth:`InfluxQLReader.select`, in time order.

    ``columns`` maps ``"time"`` (int ns) and every selected column to a list,
    one entry per row; a field missing from a row is ``None``. Lists, because
    they are what the decoded JSON transposes into fastest; for numpy,
    ``np.asarray(table["amount_minor"], dtype=float)`` turns ``None`` into NaN.
    """

    columns: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.columns["time"])

    def __getitem__(self, name: str) -> list[Any]:
        return self.columns[name]

    @property
    def time(self) -> list[int]:
        return self.columns["time"]


@dataclass(frozen=True, slots=True)
class Ping:
    """What ``GET /ping`` said: ``version`` is the ``X-Influxdb-Version`` header."""

    reachable: bool
    version: str | None
    detail: str  # why not reachable ("" when it is)


# The wire format of a /query answer (or of one chunk of it).
class _WireSeries(msgspec.Struct):
    name: str = ""
    tags: dict[str, str] = {}
    columns: list[str] = []
    values: list[list[Any]] = []
    partial: bool = False  # continued in the next chunk


class _WireResult(msgspec.Struct):
    statement_id: int = 0
    series: list[_WireSeries] = []
    error: str | None = None


class _WireAnswer(msgspec.Struct):
    results: list[_WireResult] = []
    error: str | None = None


_DECODER: Final = msgspec.json.Decoder(_WireAnswer)


# ----------------------------------------------------------------------------- reader


class InfluxQLReader:
    """A pooled HTTP client for ``/query``. Thread-safe; close it (or use ``with``)."""

    def __init__(self, settings: ReaderSettings) -> None:
        self.settings = settings
        self._base = settings.url.rstrip("/")
        self._where = f"InfluxDB at {self._base} (database {settings.database!r})"
        self._headers = {"Accept": "application/json"}
        if settings.token is not None:
            self._headers["Authorization"] = f"Token {settings.token}"
        elif settings.username is not None:
            basic = f"{settings.username}:{settings.password or ''}"
            self._headers.update(urllib3.make_headers(basic_auth=basic))
        self._params = {
            "db": settings.database,
            "epoch": "ns",
            "chunked": "true",
            "chunk_size": str(settings.chunk_size),
        }
        if settings.retention_policy:
            self._params["rp"] = settings.retention_policy
        # called with (query, rows returned) after each query read to its end
        self.on_query: Callable[[str, int], None] | None = None
        self._http = urllib3.PoolManager(
            retries=False,
            timeout=urllib3.Timeout(connect=settings.timeout_s, read=settings.timeout_s),
            cert_reqs="CERT_REQUIRED" if settings.verify_tls else "CERT_NONE",
            ca_certs=settings.ca_file,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.clear()

    def ping(self) -> Ping:
        """``GET /ping``; never raises: an unreachable server gives ``reachable=False``."""
        try:
            with self._translate_errors("GET /ping"):
                response = self._http.request("GET", f"{self._base}/ping", headers=self._headers)
        except InfluxQueryError as err:
            return Ping(reachable=False, version=None, detail=str(err))
        version = response.headers.get("X-Influxdb-Version")
        if 200 <= response.status < 300:
            return Ping(reachable=True, version=version, detail="")
        detail = f"{self._where}: /ping answered HTTP {response.status}"
        return Ping(reachable=False, version=version, detail=detail)

    def query(self, q: str, *, chunked: bool = True) -> list[Series]:
        """Run InfluxQL ``q`` (one or more statements); all series of all statements.

        A statement that fails raises (the first one that does); so does an
        error the server reports halfway through the stream. ``chunked=False`` asks
        for one document: for an answer of many small series (``GROUP BY device``),
        which influxd streams one series a chunk, it costs this side a tenth of the CPU.
        """
        merged: list[Series] = []
        continues = False  # the last series read is continued in the next chunk
        for statement_id, part in self._series_parts(q, chunked=chunked):
            last = merged[-1] if merged else None
            if (
                continues
                and last is not None
                and (last.statement_id, last.name, last.tags)
                == (statement_id, part.name, part.tags)
            ):
                last.values.extend(part.values)
            else:
                merged.append(Series(statement_id, part.name, part.tags, part.columns, part.values))
            continues = part.partial
        return merged

    def select(
        self,
        measurement: str,
        columns: Sequence[str],
        start_ns: int,
        end_ns: int,
        where: str = "",
    ) -> Table:
        """Raw rows of ``measurement`` with ``start_ns <= time < end_ns``, as a :class:`Table`.

        ``columns`` are field or tag keys (at least one must be a field: InfluxQL
        returns nothing for tags alone); they are quoted here. ``where`` is an
        extra InfluxQL condition, ANDed in parentheses: quote the values in it
        with ``wire.influxql.quote_string``. The range is read in consecutive
        requests of at most ``max_span_s`` each, so that no single request asks
        the server for an unbounded amount of data, and the rows come out in
        time order.
        """
        if not columns or len(set(columns)) != len(columns) or "time" in columns:
            raise ValueError(f"columns must be distinct, non-empty and not 'time': {columns!r}")
        if end_ns < start_ns:
            raise ValueError(f"end_ns {end_ns} is before start_ns {start_ns}")
        names = ["time", *columns]
        out: dict[str, list[Any]] = {name: [] for name in names}
        head = (
            f"SELECT {', '.join(quote_ident(c) for c in columns)} FROM {quote_ident(measurement)}"
        )
        extra = f" AND ({where})" if where else ""
        span = max(1, int(self.settings.max_span_s * 1e9))
        for lo in range(start_ns, end_ns, span):
            hi = min(lo + span, end_ns)
            q = f"{head} WHERE time >= {lo} AND time < {hi}{extra}"
            for _, part in self._series_parts(q):
                if part.columns != names:
                    raise InfluxQueryError(
                        f"{self._where}: asked for columns {names}, got {part.columns}"
                    )
                if part.values:
                    rows = zip(*part.values, strict=True)
                    for column, values in zip(out.values(), rows, strict=True):
                        column.extend(values)
        return Table(out)

    # -- internals ------------------------------------------------------------------

    def _series_parts(self, q: str, *, chunked: bool = True) -> Iterator[tuple[int, _WireSeries]]:
        """(statement id, series chunk) of every chunk of the answer, as it streams in."""
        with self._translate_errors(f"query {_short(q)}"):
            response = self._http.request(
                "GET",
                f"{self._base}/query",
                fields={**self._params, "q": q, "chunked": str(chunked).lower()},
                headers=self._headers,
                preload_content=False,
            )
            try:
                if response.status != 200:
                    raise self._http_error(response.status, response.read(), q)
                rows = 0
                for line in _lines(response.stream(_READ_BYTES)):
                    answer = self._decode(line)
                    if answer.error is not None:
                        raise self._server_error(answer.error, q)
                    for result in answer.results:
                        if result.error is not None:
                            raise self._server_error(result.error, q)
                        for part in result.series:
                            rows += len(part.values)
                            yield result.statement_id, part
                if self.on_query is not None:
                    self.on_query(q, rows)
            except BaseException:
                response.close()  # a half-read connection must not go back to the pool
                raise
            finally:
                response.release_conn()

    @contextmanager
    def _translate_errors(self, doing: str) -> Iterator[None]:
        """urllib3's exceptions as this module's errors; ``doing`` says what was being done."""
        try:
            yield
        except urllib3.exceptions.NewConnectionError as err:  # before its base class
            raise InfluxUnavailableError(
                f"{self._where}: cannot connect ({_reason(err)}); "
                "check that the server runs and the url (host, port, http/https)"
            ) from err
        except (
            urllib3.exceptions.ConnectTimeoutError,
            urllib3.exceptions.ReadTimeoutError,
        ) as err:
            raise InfluxTimeoutError(
                f"{self._where}: no answer within {self.settings.timeout_s:g} s "
                f"({_reason(err)}) to {doing}; check that the server is not overloaded, "
                "or raise timeout_s / narrow the query"
            ) from err
        except urllib3.exceptions.SSLError as err:
            raise InfluxQueryError(
                f"{self._where}: TLS failed ({_reason(err)}); check ca_file and verify_tls"
            ) from err
        except urllib3.exceptions.HTTPError as err:  # ProtocolError and the rest
            raise InfluxUnavailableError(
                f"{self._where}: connection failed ({_reason(err)}) during {doing}; "
                "check that the server (or a proxy in front of it) is up"
            ) from err

    def _decode(self, line: bytes | bytearray) -> _WireAnswer:
        try:
            return _DECODER.decode(line)
        except msgspec.DecodeError as err:
            raise InfluxQueryError(
                f"{self._where}: not a /query answer ({err}): "
                f"{_short(line.decode(errors='replace'))}; check the url"
            ) from err

    def _http_error(self, status: int, body: bytes, q: str) -> InfluxQueryError:
        text = _error_text(body)
        lowered = text.lower()
        if status in (401, 403):
            return self._auth_error(f"HTTP {status}: {text}")
        if "not found" in lowered and ("database" in lowered or "bucket" in lowered):
            return self._not_found_error(text)
        if status == 429 or status >= 500:
            return InfluxUnavailableError(
                f"{self._where}: HTTP {status}: {text}; the server is overloaded or failing"
            )
        if status == 400:
            return InfluxQLError(f"{self._where}: {text}; the query was {_short(q)}")
        return InfluxQueryError(f"{self._where}: HTTP {status} from /query: {text}; check the url")

    def _server_error(self, text: str, q: str) -> InfluxQueryError:
        """An ``"error"`` inside the JSON: of one statement, or of the whole request."""
        if text.startswith("database not found"):
            return self._not_found_error(text)
        if text.startswith(("authorization failed", "error authorizing")):
            return self._auth_error(text)
        return InfluxQLError(f"{self._where}: {text}; the query was {_short(q)}")

    def _auth_error(self, text: str) -> InfluxAuthError:
        return InfluxAuthError(
            f"{self._where}: {text}; check the username and password (1.x) or the token "
            "(2.x/3.x), and that they may read this database"
        )

    def _not_found_error(self, text: str) -> DatabaseNotFoundError:
        return DatabaseNotFoundError(
            f"{self._where}: {text}; check the database name (on 2.x: the bucket's DBRP "
            "mapping) and the retention policy"
        )


# ---------------------------------------------------------------------------- helpers


def _lines(blocks: Iterator[bytes]) -> Iterator[bytes | bytearray]:
    """Newline-separated records of a byte stream (the last one may lack its newline)."""
    pending = bytearray()
    for block in blocks:
        pending += block
        if b"\n" not in block:
            continue
        *complete, rest = pending.split(b"\n")
        yield from (line for line in complete if line.strip())
        pending = bytearray(rest)
    if pending.strip():
        yield pending


def _error_text(body: bytes) -> str:
    """The message of an HTTP error body: 1.x ``{"error"}``, 2.x/3.x ``{"message"}``, or text."""
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        decoded = None
    if isinstance(decoded, dict):
        for key in ("error", "message"):
            if isinstance(decoded.get(key), str):
                return str(decoded[key])[:_MAX_ERROR_TEXT]
    return body.decode(errors="replace").strip()[:_MAX_ERROR_TEXT] or "(empty body)"


def _reason(err: urllib3.exceptions.HTTPError) -> str:
    """The cause, without urllib3's repr of its connection or pool."""
    return _URLLIB3_PREFIX.sub("", str(err))


def _short(q: str) -> str:
    return repr(q if len(q) <= _MAX_QUERY_TEXT else q[:_MAX_QUERY_TEXT] + "...")
