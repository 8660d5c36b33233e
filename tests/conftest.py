"""Shared pytest fixtures: real Mosquitto, InfluxDB 1.x and VictoriaMetrics servers.

Function-scoped fixtures (``mosquitto``, ``influxdb``, ``victoriametrics``) give each
test its own server in its own temp dir, so fault tests may ``kill()`` and
``restart()`` them. The ``*_session`` variants are shared by the whole run: use them
only for tests that neither stop the server nor depend on its contents being empty
(use unique database / topic / metric names).

For a non-default server (auth, extra broker config, ...) use the factories::

    def test_auth(influxdb_factory):
        server = influxdb_factory(auth=True)

Every server a fixture started is stopped at teardown, also when the test failed;
when a test fails, the tail of each of its servers' logs is added to the report.
A missing server binary fails the test with the apt package to install.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.servers import (
    BinaryNotFoundError,
    InfluxDB1Server,
    ManagedServer,
    MosquittoServer,
    ServerFactory,
    VictoriaMetricsServer,
)

S = TypeVar("S", bound=ManagedServer)

_STARTED_KEY = pytest.StashKey[list[ManagedServer]]()


def _require_binary(cls: type[ManagedServer]) -> None:
    try:
        cls.binary_path()
    except BinaryNotFoundError as err:
        pytest.fail(str(err), pytrace=False)


def _factory(cls: type[S], base: Path, started: list[ManagedServer]) -> Callable[..., S]:
    def make(**kwargs: Any) -> S:
        _require_binary(cls)
        workdir = base / f"{cls.binary}-{sum(isinstance(s, cls) for s in started)}"
        server = cls(workdir, **kwargs)
        started.append(server)  # registered before start, so a half-started one is stopped
        server.start()
        return server

    return make


@pytest.fixture
def _started_servers(request: pytest.FixtureRequest) -> Iterator[list[ManagedServer]]:
    """Servers started for the current test; all stopped at teardown."""
    started: list[ManagedServer] = []
    request.node.stash[_STARTED_KEY] = started
    try:
        yield started
    finally:
        errors: list[BaseException] = []
        for server in reversed(started):
            try:
                server.stop()
            except Exception as err:  # noqa: BLE001 - stop the others, then re-raise
                errors.append(err)
        if errors:
            raise errors[0]


@pytest.fixture
def mosquitto_factory(
    tmp_path: Path, _started_servers: list[ManagedServer]
) -> ServerFactory[MosquittoServer]:
    return _factory(MosquittoServer, tmp_path, _started_servers)


@pytest.fixture
def influxdb_factory(
    tmp_path: Path, _started_servers: list[ManagedServer]
) -> ServerFactory[InfluxDB1Server]:
    return _factory(InfluxDB1Server, tmp_path, _started_servers)


@pytest.fixture
def victoriametrics_factory(
    tmp_path: Path, _started_servers: list[ManagedServer]
) -> ServerFactory[VictoriaMetricsServer]:
    return _factory(VictoriaMetricsServer, tmp_path, _started_servers)


@pytest.fixture
def mosquitto(mosquitto_factory: ServerFactory[MosquittoServer]) -> MosquittoServer:
    """A Mosquitto broker of its own for this test (persistence on, big queues)."""
    return mosquitto_factory()


@pytest.fixture
def influxdb(influxdb_factory: ServerFactory[InfluxDB1Server]) -> InfluxDB1Server:
    """An influxd 1.x of its own for this test (no auth)."""
    return influxdb_factory()


@pytest.fixture
def victoriametrics(
    victoriametrics_factory: ServerFactory[VictoriaMetricsServer],
) -> VictoriaMetricsServer:
    """A VictoriaMetrics of its own for this test (retention 100y)."""
    return victoriametrics_factory()


# -- session-scoped: shared, for read-only / name-isolated tests ----------------------


def _session_server(cls: type[S], tmp_path_factory: pytest.TempPathFactory) -> Iterator[S]:
    _require_binary(cls)
    server = cls(tmp_path_factory.mktemp(f"{cls.binary}-session"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mosquitto_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    """One broker for the whole run. Don't stop it; use unique topics and client ids."""
    yield from _session_server(MosquittoServer, tmp_path_factory)


@pytest.fixture(scope="session")
def influxdb_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1Server]:
    """One influxd for the whole run. Don't stop it; use a unique database per test."""
    yield from _session_server(InfluxDB1Server, tmp_path_factory)


@pytest.fixture(scope="session")
def victoriametrics_session(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[VictoriaMetricsServer]:
    """One VictoriaMetrics for the whole run. Don't stop it; use unique metric names."""
    yield from _session_server(VictoriaMetricsServer, tmp_path_factory)


# -- server logs in failure reports ---------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for server in item.stash.get(_STARTED_KEY, []):
            title = f"{server.binary} log tail ({server.log_path})"
            report.sections.append((title, server.log_tail(30)))
    return report
