"""Shared pytest fixtures: real Mosquitto, InfluxDB 1.x and VictoriaMetrics servers.

Function-scoped fixtures (``mosquitto``, ``influxdb``, ``victoriametrics``) give each
test its own server in its own temp dir, so fault tests may ``kill()`` and
``restart()`` them. The ``*_session`` variants are shared by the whole run: use them
only for tests that neither stop the server nor depend on its contents being empty
(use unique database / topic / metric names).

``small_disk`` (and ``small_disk_factory`` for another size) is a real tmpfs of its own,
mounted for the test and unmounted at teardown, to fill up: full-disk tests run the
real code against a real ENOSPC.

For a non-default server (auth, extra broker config, ...) use the factories::

    def test_auth(influxdb_factory):
        server = influxdb_factory(auth=True)

Every server a fixture started is stopped at teardown, also when the test failed;
when a test fails, the tail of each of its servers' logs is added to the report.
A missing server binary fails the test with the apt package to install.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from testkit.servers import (
    BinaryNotFoundError,
    InfluxDB1Server,
    ManagedServer,
    MosquittoServer,
    ServerFactory,
    VictoriaMetricsServer,
)

S = TypeVar("S", bound=ManagedServer)


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """A command run in-process (``main(argv)``) configures logging: its handler writes
    to that test's captured stderr, closed once the test ends. Without this every later
    test's log records would fail on it (``Logging error ... closed file``)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


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


# -- a small real filesystem to fill up -----------------------------------------------


class SmallDisk:
    """A mounted tmpfs of its own: ``fill()`` it until ENOSPC, ``free()`` it again.

    Files a test creates under ``path`` share the disk with the filler, so after
    ``fill()`` any write there fails with ENOSPC until ``free()``.
    """

    def __init__(self, path: Path, size_bytes: int) -> None:
        self.path = path
        self.size_bytes = size_bytes
        self._filler = path / ".filler"

    def free_bytes(self) -> int:
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize

    def fill(self, leave_bytes: int = 0) -> None:
        """Write a filler file until fewer than ``leave_bytes`` (+ one page) stay free."""
        with open(self._filler, "ab", buffering=0) as f:
            chunk = 64 << 10
            while chunk >= 512:
                room = self.free_bytes() - leave_bytes
                if room < chunk:
                    chunk //= 2
                    continue
                try:
                    f.write(b"\0" * chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    chunk //= 2

    def free(self) -> None:
        """Delete the filler: the space it held is free again."""
        self._filler.unlink(missing_ok=True)


def _mount_tmpfs(mountpoint: Path, size_bytes: int) -> None:
    if os.geteuid() != 0:
        pytest.skip("small_disk mounts a tmpfs, which needs root")
    mountpoint.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for small_disk: {done.stderr.strip()}")


def _unmount(mountpoint: Path) -> None:
    """Unmount; lazily if a process the test left behind still holds a file there."""
    if subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


@pytest.fixture
def small_disk_factory(tmp_path: Path) -> Iterator[Callable[..., SmallDisk]]:
    """``small_disk_factory(size_bytes=...)``: a fresh tmpfs of that size per call."""
    mounted: list[Path] = []

    def make(size_bytes: int = 256 << 10) -> SmallDisk:
        mountpoint = tmp_path / f"small-disk-{len(mounted)}"
        _mount_tmpfs(mountpoint, size_bytes)
        mounted.append(mountpoint)
        return SmallDisk(mountpoint, size_bytes)

    try:
        yield make
    finally:
        for mountpoint in reversed(mounted):
            _unmount(mountpoint)


@pytest.fixture
def small_disk(small_disk_factory: Callable[..., SmallDisk]) -> SmallDisk:
    """A 256 KiB tmpfs of its own for this test (skipped, with the reason, if not root)."""
    return small_disk_factory()


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
