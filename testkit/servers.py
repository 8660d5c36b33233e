"""Real servers run as child processes: Mosquitto, InfluxDB 1.x and VictoriaMetrics.

Used by the integration tests (``testkit/servers.py`` re-exports this module for the
fixtures in ``tests/conftest.py``) and by ``tillpulse demo``. Each server runs the
Debian-packaged binary as a child process on a free port on 127.0.0.1, with its
config, data and log in a directory the caller owns. Readiness is polled with a
deadline (never a bare sleep); a server that exits or does not become
ready raises :class:`ServerStartError` carrying the tail of its log.

    with MosquittoServer(tmp_path / "mqtt") as broker:
        client.connect(broker.host, broker.port)

``stop()`` is SIGTERM then SIGKILL after a grace period, ``kill()`` is SIGKILL at once
(for fault tests), ``restart()`` brings the server back on the same port with the same
data directory, so whatever the server persisted survives.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from runtime.lifecycle import pid_exists

__all__ = [
    "BinaryNotFoundError",
    "InfluxDB1Server",
    "ManagedServer",
    "MosquittoServer",
    "ServerError",
    "ServerFactory",
    "ServerHTTPError",
    "ServerStartError",
    "VictoriaMetricsServer",
    "WaitTimeoutError",
    "free_port",
    "http_request",
    "parent_death_prefix",
    "pid_exists",
    "wait_until",
]

LOCALHOST = "127.0.0.1"
T = TypeVar("T")
S_co = TypeVar("S_co", bound="ManagedServer", covariant=True)


# --------------------------------------------------------------------------- errors


class ServerError(RuntimeError):
    """Base class for everything that goes wrong with a test server."""


class BinaryNotFoundError(ServerError):
    """The server binary is not installed; the message names the apt package."""


class ServerStartError(ServerError):
    """The server exited or did not become ready in time; the message has its log tail."""


class ServerHTTPError(ServerError):
    """A helper's HTTP request got a non-2xx answer."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url} -> HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class WaitTimeoutError(AssertionError):
    """``wait_until`` ran out of time. An AssertionError, so pytest reports it as a failure."""


# -------------------------------------------------------------------------- helpers


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.02,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """Poll ``predicate`` until it returns a truthy value and return that value.

    Raises :class:`WaitTimeoutError` (an ``AssertionError``) after ``timeout`` seconds.
    ``message`` may be a callable so that the error can describe the state at the
    deadline (e.g. ``lambda: f"got {len(received)} of 2000"``). The predicate is always
    evaluated once more at the deadline, so a slow poll never loses a last chance.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        now = time.monotonic()
        if now >= deadline:
            text = message() if callable(message) else message
            raise WaitTimeoutError(f"timed out after {timeout:.1f}s: {text}")
        time.sleep(min(interval, max(deadline - now, 0.0)))


_handed_out_ports: set[int] = set()
_ports_lock = threading.Lock()


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port on ``host`` that was free a moment ago (bind to port 0, then release).

    Another process may take the port before the server binds it. ``ManagedServer``
    copes: the server then exits with "address already in use" and ``start()`` retries
    on a new port, and readiness requires that *its* process owns the listener, so a
    probe never mistakes somebody else's server for ours. Within this process the same
    port is never handed out twice.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        with _ports_lock:
            if port not in _handed_out_ports:
                _handed_out_ports.add(port)
                return port
    raise ServerError("could not find a free port that was not handed out already")


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes of TCP sockets listening on ``port`` (Linux /proc/net/tcp{,6})."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(inode)
    return inodes


def _process_listens_on(pid: int, port: int) -> bool:
    """True if process ``pid`` holds a socket listening on TCP ``port``.

    Guards against a port race: another process (a concurrent test run) grabbing the
    port between ``free_port()`` and our server's bind, in which case our readiness
    probe would otherwise talk to somebody else's server.
    """
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        targets = [os.readlink(fd_dir / name) for name in os.listdir(fd_dir)]
    except OSError:
        return False
    return any(t.startswith("socket:[") and t[8:-1] in inodes for t in targets)


def parent_death_prefix() -> list[str]:
    """``setpriv --pdeathsig KILL`` (util-linux) if available and safe, else nothing.

    The child then gets SIGKILL when its parent (pytest, the demo) dies, so an
    interrupted or crashed run leaves no orphaned servers. setpriv execs the child
    (same pid). The kernel sends the signal when the *thread* that forked the child
    ends, so it is only used from the main thread: a child started from a worker
    thread would otherwise die with it.
    (Not ``preexec_fn``: that is unsafe while other threads, e.g. paho's, are running.)
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return []
    return [setpriv, "--pdeathsig", "KILL", "--"]


def http_request(
    method: str,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    data: bytes | Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """One HTTP request with urllib; returns (status, body) for 2xx, raises otherwise."""
    if params:
        url = f"{url}?{urllib.parse.urlencode(params)}"
    headers: dict[str, str] = {}
    body: bytes | None
    if isinstance(data, Mapping):
        body = urllib.parse.urlencode(data).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    else:
        body = data
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        text = err.read().decode(errors="replace")
        raise ServerHTTPError(method, url, err.code, text) from err


def _http_status(url: str, timeout: float = 1.0) -> int | None:
    """Status of a GET, or None if the server is not answering (yet)."""
    try:
        return http_request("GET", url, timeout=timeout)[0]
    except ServerHTTPError as err:
        return err.status
    except OSError:  # connection refused/reset, timeout (URLError is an OSError)
        return None


# ------------------------------------------------------------------------ base class


class ManagedServer(ABC):
    """A real server binary run as a child process on a free port on 127.0.0.1.

    Subclasses say which binary (and which apt package provides it), write their
    config in ``_prepare``, give the arguments in ``_arguments`` and a readiness probe
    in ``_is_ready``. Everything else (ports, log file, start/stop/kill/restart,
    readiness deadline, error reporting) lives here once.
    """

    binary: ClassVar[str]
    apt_package: ClassVar[str]
    scheme: ClassVar[str] = "http"
    #: environment variables with these prefixes are not passed to the server
    #: (influxd, for example, lets INFLUXDB_* override every config key).
    env_strip_prefixes: ClassVar[tuple[str, ...]] = ()
    start_attempts: ClassVar[int] = 3  # retries with a new port if the port was taken

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        ready_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.host = LOCALHOST
        self._port_fixed = port is not None
        self._port = port if port is not None else free_port()
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.log_path = self.workdir / f"{self.binary}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._last_pid: int | None = None
        self._last_returncode: int | None = None
        self._log_offset = 0
        self._starts = 0

    # -- what subclasses provide ----------------------------------------------------

    @abstractmethod
    def _prepare(self) -> None:
        """Create directories and write the config file (called before every start)."""

    @abstractmethod
    def _arguments(self) -> list[str]:
        """Command-line arguments that run the server in the foreground."""

    @abstractmethod
    def _is_ready(self) -> bool:
        """One readiness probe; must return quickly (short timeouts)."""

    def _after_ready(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Runs once per start after the server is ready (e.g. create an admin user)."""

    def _reassign_ports(self) -> None:
        """Pick new free ports after a port clash; subclasses with more ports extend."""
        self._port = free_port()

    # -- addresses ------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self._port)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self._port}"

    # -- process state --------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """Pid of the current process, or of the last one after it stopped."""
        return self._last_pid

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit code of the current process, or of the last one after it stopped/died."""
        return self._proc.poll() if self._proc is not None else self._last_returncode

    @classmethod
    def binary_path(cls) -> str:
        """Absolute path of the binary, or BinaryNotFoundError naming the apt package."""
        found = shutil.which(cls.binary) or shutil.which(cls.binary, path="/usr/sbin:/sbin")
        if found is None:
            raise BinaryNotFoundError(
                f"{cls.binary!r} not found on PATH or in /usr/sbin: the integration tests and "
                f"the demo need the real server; install it with "
                f"`apt-get install {cls.apt_package}`"
            )
        return found

    def log_tail(self, lines: int = 40, *, since_start: bool = False) -> str:
        """Last ``lines`` lines of the server log (optionally only of the current start)."""
        try:
            with self.log_path.open("rb") as f:
                if since_start:
                    f.seek(self._log_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return "<no log file>"
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> Self:
        """Start the server and wait until it is ready. Returns self."""
        if self.is_running:
            raise ServerError(f"{self!r} is already running")
        self.binary_path()  # BinaryNotFoundError before anything is written
        for attempt in range(1, self.start_attempts + 1):
            try:
                self._start_once()
            except ServerStartError:
                clash = "address already in use" in self.log_tail(since_start=True).lower()
                retry = clash and self._starts == 0 and not self._port_fixed
                if not retry or attempt == self.start_attempts:
                    raise
                self._reassign_ports()  # the free port was taken meanwhile: try another
            else:
                self._starts += 1
                return self
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        command = [*parent_death_prefix(), self.binary_path(), *self._arguments()]
        env = {k: v for k, v in os.environ.items() if not k.startswith(self.env_strip_prefixes)}
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()  # log_tail(since_start=True) reads from here
        self._append_log(f"starting: {' '.join(command)}")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
            )
        self._last_pid = self._proc.pid
        try:
            self._wait_ready()
            self._after_ready()
        except BaseException:
            self._terminate(graceful=False)
            raise

    def _wait_ready(self) -> None:
        assert self._proc is not None
        proc = self._proc
        deadline = time.monotonic() + self.ready_timeout
        interval = 0.005
        while True:
            code = proc.poll()
            if code is not None:
                raise ServerStartError(
                    f"{self.binary} exited with code {code} before it was ready "
                    f"(port {self._port}); log {self.log_path}:\n"
                    f"{self.log_tail(since_start=True)}"
                )
            if _process_listens_on(proc.pid, self._port) and self._is_ready():
                return
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    f"{self.binary} (pid {proc.pid}) not ready on {self.url} after "
                    f"{self.ready_timeout:.0f}s; log {self.log_path}:\n"
                    f"{self.log_tail(since_start=True)}"
                )
            time.sleep(interval)
            interval = min(interval * 2, 0.05)

    def stop(self) -> None:
        """SIGTERM, wait up to ``stop_timeout``, then SIGKILL. No-op if not running."""
        self._terminate(graceful=True)

    def kill(self) -> None:
        """SIGKILL at once, like a crash or power loss. No-op if not running."""
        self._terminate(graceful=False)

    def restart(self) -> Self:
        """Stop (gracefully, if running) and start again: same port, same data dir."""
        self.stop()
        return self.start()

    def _terminate(self, *, graceful: bool) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            if graceful:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    self._append_log(f"no exit {self.stop_timeout}s after SIGTERM: SIGKILL")
                    proc.kill()
            else:
                proc.kill()
        self._last_returncode = proc.wait()  # reap, so the pid is really gone
        self._proc = None

    def _append_log(self, note: str) -> None:
        with contextlib.suppress(OSError), self.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            log.write(f"=== {stamp} testkit.servers: {note}\n".encode())

    # -- context manager ------------------------------------------------------------

    def __enter__(self) -> Self:
        return self if self.is_running else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self._last_pid}" if self.is_running else "stopped"
        return f"<{type(self).__name__} {self.url} {state} in {self.workdir}>"


class ServerFactory(Protocol[S_co]):
    """What the ``*_factory`` fixtures return: ``factory(**constructor_kwargs)`` gives a
    started server in a fresh subdir of the test's ``tmp_path``, stopped at teardown."""

    def __call__(self, **kwargs: Any) -> S_co: ...


# ------------------------------------------------------------------------- Mosquitto


class MosquittoServer(ManagedServer):
    """Eclipse Mosquitto 2.x with persistence, on a free port on 127.0.0.1.

    ``max_queued_messages`` / ``max_inflight_messages`` are set deliberately: the broker
    default queue of 1000 messages per client *silently drops* QoS 1 messages for a
    slow or offline persistent subscriber (DESIGN.md, "Traps").

    Persistence (Mosquitto 2.0.11): the in-memory database (retained messages,
    persistent sessions, their subscriptions and queued messages) is written to
    ``mosquitto.db`` when the broker exits on SIGTERM/SIGINT, every
    ``autosave_interval`` seconds (default 1800), or on SIGUSR1. So ``stop()`` and
    ``restart()`` keep everything, while ``kill()`` (SIGKILL) loses all changes since
    the last autosave, exactly like a crashed production broker with the default
    config. Fault tests that want a SIGKILL to lose less can pass a small
    ``autosave_interval`` (with ``autosave_on_changes=True`` the interval counts
    changes instead of seconds), or call ``save()`` first.

    Running as root, Mosquitto 2.x drops privileges to the ``mosquitto`` user unless
    the config says ``user root``; that user cannot write into pytest's 0700 temp dirs
    and the broker then fails to save its database (only logging the error at exit).
    So when the tests run as root, the config says ``user root``.

    With ``accounts`` (username -> password) the listener takes only those accounts
    and makes every client id its username (``use_username_as_clientid``), so no
    client can take another's session (the broker's default lets the newest
    connection with a client id close the old one and resume its session).
    The passwords reach ``mosquitto_passwd -U`` through a 0600 file, never argv.
    """

    binary = "mosquitto"
    apt_package = "mosquitto"
    scheme = "mqtt"

    def __init__(
        self,
        workdir: Path,
        *,
        max_queued_messages: int = 1_000_000,
        max_inflight_messages: int = 100,
        autosave_interval: int = 1800,
        autosave_on_changes: bool = False,
        extra_config: str = "",
        accounts: Mapping[str, str] | None = None,
        port: int | None = None,
        ready_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(workdir, port=port, ready_timeout=ready_timeout, stop_timeout=stop_timeout)
        self.accounts = dict(accounts or {})
        self.passwd_path = self.workdir / "passwd"
        self.max_queued_messages = max_queued_messages
        self.max_inflight_messages = max_inflight_messages
        self.autosave_interval = autosave_interval
        self.autosave_on_changes = autosave_on_changes
        self.extra_config = extra_config
        self.config_path = self.workdir / "mosquitto.conf"
        self.data_dir = self.workdir / "data"

    @property
    def db_path(self) -> Path:
        """The persistence file (exists once the broker saved at least once)."""
        return self.data_dir / "mosquitto.db"

    def config_text(self) -> str:
        lines = [
            "# generated by testkit.servers",
            f"listener {self.port} {self.host}",
            *(self._accounts_only() if self.accounts else ["allow_anonymous true"]),
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "persistence_file mosquitto.db",
            f"autosave_interval {self.autosave_interval}",
            f"autosave_on_changes {'true' if self.autosave_on_changes else 'false'}",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_inflight_messages {self.max_inflight_messages}",
            "log_dest stderr",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0:
            lines.append("# as root, 2.x would switch to user 'mosquitto' (see class doc)")
            lines.append("user root")
        text = "\n".join(lines) + "\n"
        if self.extra_config:
            text += "\n# extra_config\n" + self.extra_config.strip("\n") + "\n"
        return text

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.accounts:
            self._write_password_file()
        self.config_path.write_text(self.config_text())

    def _accounts_only(self) -> list[str]:
        """A listener's settings: the accounts only, each client id its username."""
        return [
            "allow_anonymous false",
            "use_username_as_clientid true",
            f"password_file {self.passwd_path}",
        ]

    def _write_password_file(self) -> None:
        """``accounts`` as a password file: plain text into a 0600 file, which
        ``mosquitto_passwd -U`` hashes in place."""
        mosquitto_passwd = shutil.which("mosquitto_passwd") or shutil.which(
            "mosquitto_passwd", path="/usr/sbin:/sbin"
        )
        if mosquitto_passwd is None:
            raise BinaryNotFoundError(
                f"'mosquitto_passwd' not found: `apt-get install {self.apt_package}`"
            )
        self.passwd_path.unlink(missing_ok=True)
        fd = os.open(self.passwd_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.writelines(f"{user}:{password}\n" for user, password in self.accounts.items())
        done = subprocess.run(
            [mosquitto_passwd, "-U", str(self.passwd_path)],
            check=False,
            capture_output=True,
            timeout=30,
        )
        if done.returncode != 0:
            raise ServerStartError(f"mosquitto_passwd -U failed: {done.stderr.decode()[-500:]}")

    def _arguments(self) -> list[str]:
        return ["-c", str(self.config_path)]

    def _is_ready(self) -> bool:
        """An MQTT CONNECT that gets a CONNACK, not just an open TCP port. Any CONNACK:
        a refusal (e.g. ``extra_config`` requires a password) still means "ready"."""
        return self.connack(timeout=1.0) is not None

    def probe_connect(self, timeout: float = 2.0) -> bool:
        """True if an anonymous clean-session client gets a successful CONNACK."""
        reason = self.connack(timeout)
        return reason is not None and not reason.is_failure

    def connack(self, timeout: float = 2.0) -> ReasonCode | None:
        """Connect a throwaway anonymous client (MQTT 3.1.1, clean session) and disconnect.

        Returns the CONNACK's reason code, or None if there was no CONNACK in time.
        """
        connack = threading.Event()
        reasons: list[ReasonCode] = []

        def on_connect(
            client: mqtt.Client,
            userdata: Any,
            flags: mqtt.ConnectFlags,
            reason_code: ReasonCode,
            properties: Any,
        ) -> None:
            reasons.append(reason_code)
            connack.set()

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"tests-probe-{uuid.uuid4().hex[:12]}"
        )
        client.on_connect = on_connect
        try:
            client.connect(self.host, self.port, keepalive=10)
            deadline = time.monotonic() + timeout
            while not connack.is_set() and time.monotonic() < deadline:
                client.loop(timeout=0.02)
            if connack.is_set():
                client.disconnect()
        except OSError:  # refused/reset while the broker starts
            return None
        finally:
            sock = client.socket()
            if sock is not None:
                sock.close()
        return reasons[0] if reasons else None

    def save(self) -> None:
        """Ask the broker to write its database now (SIGUSR1) and wait until it did."""
        if self._proc is None or not self.is_running:
            raise ServerError(f"{self!r} is not running")

        def identity() -> tuple[int, int] | None:
            try:
                st = self.db_path.stat()
            except FileNotFoundError:
                return None
            return (st.st_ino, st.st_mtime_ns)

        before = identity()
        marker = self.log_path.stat().st_size
        self._proc.send_signal(signal.SIGUSR1)

        def saved() -> bool:
            # The broker logs first, then writes mosquitto.db.new and renames it over
            # mosquitto.db: a new inode there means the save is complete.
            with self.log_path.open("rb") as f:
                f.seek(marker)
                logged = b"Saving in-memory database" in f.read()
            now = identity()
            return logged and now is not None and now != before

        wait_until(saved, timeout=10, message=f"mosquitto did not save {self.db_path}")


# --------------------------------------------------------------------- InfluxDB 1.x


class InfluxDB1Server(ManagedServer):
    """InfluxDB 1.x (``influxd`` from Debian, 1.6.7) on free ports on 127.0.0.1.

    Two ports: the HTTP API (``port``) and the RPC/backup ``bind-address``
    (``rpc_port``; its default 8088 would clash between parallel instances).

    With ``auth=True`` the HTTP API requires credentials, and an admin user
    (``admin_user``/``admin_password``) is created via the API after every start
    (InfluxDB lets anyone create the first admin user while there are no users; a
    repeated ``CREATE USER`` with the same password is a no-op). The helper methods
    use the admin credentials; a client without them gets HTTP 401.

    Writes are acknowledged after the WAL write (``wal-fsync-delay = "0s"``), so data
    survives ``kill()``.
    """

    binary = "influxd"
    apt_package = "influxdb"
    env_strip_prefixes = ("INFLUXDB_",)

    def __init__(
        self,
        workdir: Path,
        *,
        auth: bool = False,
        admin_user: str = "admin",
        admin_password: str = "tillpulse-admin-pw",
        port: int | None = None,
        rpc_port: int | None = None,
        log_level: str = "warn",
        ready_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(workdir, port=port, ready_timeout=ready_timeout, stop_timeout=stop_timeout)
        self.rpc_port = rpc_port if rpc_port is not None else free_port()
        self.auth = auth
        self.admin_user = admin_user
        self.admin_password = admin_password
        self.log_level = log_level
        self.config_path = self.workdir / "influxdb.conf"

    @property
    def credentials(self) -> tuple[str, str] | None:
        """(user, password) the helpers send, or None without auth."""
        return (self.admin_user, self.admin_password) if self.auth else None

    def _reassign_ports(self) -> None:
        super()._reassign_ports()
        self.rpc_port = free_port()

    def config_text(self) -> str:
        d = self.workdir
        return f"""\
# generated by testkit.servers
# upstream 1.x spells it reporting-disabled; Debian's 1.6.7 build reads
# reporting-enabled (unknown keys are silently ignored, so both are set)
reporting-disabled = true
reporting-enabled = false
bind-address = "{self.host}:{self.rpc_port}"

[meta]
  dir = "{d / "meta"}"
  logging-enabled = false

[data]
  dir = "{d / "data"}"
  wal-dir = "{d / "wal"}"
  wal-fsync-delay = "0s"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "{self.host}:{self.port}"
  auth-enabled = {"true" if self.auth else "false"}
  log-enabled = false
  pprof-enabled = false

[logging]
  level = "{self.log_level}"
  suppress-logo = true

[continuous_queries]
  log-enabled = false
"""

    def _prepare(self) -> None:
        self.config_path.write_text(self.config_text())

    def _arguments(self) -> list[str]:
        return ["-config", str(self.config_path)]

    def _is_ready(self) -> bool:
        return _http_status(f"{self.url}/ping") == 204

    def _after_ready(self) -> None:
        if self.auth:
            password = self.admin_password.replace("\\", "\\\\").replace("'", "\\'")
            self.query(
                f"CREATE USER \"{self.admin_user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES"
            )

    # -- helpers (plain HTTP against the real server) -----------------------------

    def query(
        self,
        q: str,
        db: str | None = None,
        epoch: str | None = "ns",
        *,
        auth: tuple[str, str] | bool | None = True,
    ) -> dict[str, Any]:
        """POST /query; returns the raw JSON answer.

        InfluxQL errors of single statements come back inside ``results`` (HTTP 200);
        HTTP errors (401, 400, ...) raise :class:`ServerHTTPError` with ``.status``.
        ``auth=True`` sends the admin credentials when auth is on; pass ``auth=False``
        for none or a ``(user, password)`` tuple for another user.
        """
        params = {"q": q}
        if db is not None:
            params["db"] = db
        if epoch is not None:
            params["epoch"] = epoch
        creds = self._creds(auth)
        _, body = http_request("POST", f"{self.url}/query", data=params, auth=creds)
        result: dict[str, Any] = json.loads(body)
        return result

    def create_database(self, name: str) -> None:
        """CREATE DATABASE (idempotent); raises if InfluxDB reports an error."""
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        answer = self.query(f'CREATE DATABASE "{quoted}"')
        errors = [r["error"] for r in answer.get("results", []) if "error" in r]
        if errors:
            raise ServerError(f"CREATE DATABASE {name!r} failed: {errors}")

    def write(
        self,
        lines: str | Iterable[str],
        db: str,
        *,
        precision: str = "ns",
        rp: str | None = None,
        auth: tuple[str, str] | bool | None = True,
    ) -> None:
        """POST line protocol to /write (expects 204)."""
        body = lines if isinstance(lines, str) else "\n".join(lines)
        params = {"db": db, "precision": precision}
        if rp is not None:
            params["rp"] = rp
        url = f"{self.url}/write?{urllib.parse.urlencode(params)}"
        http_request("POST", url, data=body.encode(), auth=self._creds(auth))

    def series_values(self, q: str, db: str) -> list[list[Any]]:
        """All ``values`` rows of all series of a single-statement query ([] if none)."""
        result = self.query(q, db=db)["results"][0]
        if "error" in result:
            raise ServerError(f"query {q!r} failed: {result['error']}")
        return [row for series in result.get("series", []) for row in series["values"]]

    def _creds(self, auth: tuple[str, str] | bool | None) -> tuple[str, str] | None:
        if auth is True:
            return self.credentials
        if auth is False or auth is None:
            return None
        return auth


# ------------------------------------------------------------------- VictoriaMetrics


class VictoriaMetricsServer(ManagedServer):
    """Single-node VictoriaMetrics (Debian, 1.79) on a free port on 127.0.0.1.

    It implements InfluxDB's ``/api/v2/write`` (org/bucket are accepted; a field
    ``f`` of measurement ``m`` becomes the metric ``m_f``). Flags chosen for tests:

    - ``-retentionPeriod=100y``: VictoriaMetrics silently drops (and still answers
      204 for) points older than its retention, default one month.
    - ``-search.latencyOffset=0s``: queries otherwise hide the last 30 s of data.
    - ``-search.disableCache`` (+ ``-search.disableAutoCacheReset``, which only
      silences a warning per old-timestamp write): no query result cache.
    - ``-loggerLevel=WARN``.

    Freshly written samples are *not* searchable at once. Measured with 1.79 here:
    without ``/internal/force_flush`` a write took ~10 s to show up in /export; with
    it, new samples of known series (and new series whose samples lie outside the
    current hour) show up at once, but a new series with samples in the current hour
    still takes ~1 s. Use :meth:`wait_for_export`, which flushes and polls with a
    deadline.

    Not InfluxDB semantics (keep this in mind for idempotency tests): timestamps are
    cut to milliseconds (``-influxTrimTimestamp=1ms``), and a sample written twice with
    the same series and timestamp is stored twice (no overwrite; only
    ``-dedup.minScrapeInterval`` would merge them). ``org``/``bucket`` of
    ``/api/v2/write`` do not become labels (``/write?db=`` adds a ``db`` label).
    """

    binary = "victoria-metrics"
    apt_package = "victoria-metrics"

    def __init__(
        self,
        workdir: Path,
        *,
        retention_period: str = "100y",
        extra_args: Sequence[str] = (),
        port: int | None = None,
        ready_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(workdir, port=port, ready_timeout=ready_timeout, stop_timeout=stop_timeout)
        self.retention_period = retention_period
        self.extra_args = list(extra_args)
        self.data_dir = self.workdir / "data"

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _arguments(self) -> list[str]:
        return [
            f"-httpListenAddr={self.host}:{self.port}",
            f"-storageDataPath={self.data_dir}",
            f"-retentionPeriod={self.retention_period}",
            "-loggerLevel=WARN",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-search.disableAutoCacheReset",
            *self.extra_args,
        ]

    def _is_ready(self) -> bool:
        return _http_status(f"{self.url}/health") == 200

    def v2_write_url(self, org: str = "tillpulse", bucket: str = "tillpulse") -> str:
        """The InfluxDB-v2-compatible write endpoint (what influxdb-client posts to)."""
        query = urllib.parse.urlencode({"org": org, "bucket": bucket})
        return f"{self.url}/api/v2/write?{query}"

    def write_v2(
        self, lines: str | Iterable[str], *, org: str = "tillpulse", bucket: str = "tillpulse"
    ) -> None:
        """POST line protocol (ns precision) to /api/v2/write."""
        body = lines if isinstance(lines, str) else "\n".join(lines)
        http_request("POST", self.v2_write_url(org, bucket), data=body.encode())

    def flush(self) -> None:
        """GET /internal/force_flush: move in-memory buffers into searchable parts."""
        http_request("GET", f"{self.url}/internal/force_flush")

    def export(
        self, match: str, *, start: str | None = None, end: str | None = None
    ) -> list[dict[str, Any]]:
        """GET /api/v1/export?match[]=...: one dict per series (``metric``, ``values``,
        ``timestamps`` in ms), sorted by the series' labels."""
        params = {"match[]": match}
        if start is not None:
            params["start"] = start
        if end is not None:
            params["end"] = end
        _, body = http_request("GET", f"{self.url}/api/v1/export", params=params)
        rows = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        return sorted(rows, key=lambda r: sorted(r["metric"].items()))

    def wait_for_export(
        self,
        match: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 15.0,
    ) -> list[dict[str, Any]]:
        """Flush and export until ``predicate(rows)`` holds; return the rows."""
        last: list[list[dict[str, Any]]] = [[]]

        def attempt() -> bool:
            self.flush()
            last[0] = self.export(match)
            return predicate(last[0])

        wait_until(
            attempt,
            timeout=timeout,
            interval=0.05,
            message=lambda: f"export of {match} never satisfied the predicate; last: {last[0]}",
        )
        return last[0]
