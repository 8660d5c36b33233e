"""Checks a command runs before its work, so that `check-config` and `run` agree: one
function per component calls these, and both commands call that function.

    check_file(section.password_file, "[mqtt] password_file", source, "write the password there")
    check_dir(config.agent.state_dir, "[agent] state_dir", source)
    check_tls_files(section.tls, source)
    problem = probe_mqtt(config.mqtt, client_id=agent_id)        # check-config --connect
    problem = probe_influx(config.influxdb)                        # check-config --connect

Each check raises `OperatorError` (exit 2) with one line naming the key, its value,
the config file and the fix. `probe_mqtt` returns the problem instead (None: the
broker accepted us), so `check-config --connect` can report every server on its
own line. paho is imported inside it: this module is imported by command lines
whose ``--help`` must stay fast.
"""

from __future__ import annotations

import errno
import getpass
import os
import socket
import ssl
import tempfile
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from runtime.cli import OperatorError
from runtime.config_sections import (
    INFLUX_PASSWORD_ENV,
    INFLUX_TOKEN_ENV,
    InfluxSection,
    MqttSection,
    TlsFiles,
)

PROBE_TIMEOUT_S: Final = 5.0


def _where(key: str, value: str | Path, source: str | Path | None) -> str:
    return f"{key} {value}" if source is None else f"{key} {value} (in {source})"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid (a container)
        return f"uid {os.geteuid()}"


def check_file(path: str | Path, key: str, source: str | Path | None, fix: str) -> None:
    """``path`` (the value of ``key`` in the config file ``source``, or of the option
    ``key`` when ``source`` is None) is a file the current user can read; else
    `OperatorError` ending with ``fix``."""
    where = _where(key, path, source)
    target = Path(path)
    if target.is_dir():
        raise OperatorError(f"{where}: is a directory, not a file: {fix}")
    if not target.exists():  # also a broken symlink
        raise OperatorError(f"{where}: no such file: {fix} or fix the path")
    try:
        with target.open("rb"):
            pass
    except OSError as exc:
        raise OperatorError(
            f"{where}: not readable by user {_user()} ({exc.strerror}): give that user read "
            "access (chown/chmod), or run as the user the service runs as"
        ) from None


def check_dir(path: str | Path, key: str, source: str | Path) -> Path:
    """``path`` is a directory the current user can write, created (with its parents)
    if missing, as the work would; else `OperatorError` naming the key and the fix."""
    where = _where(key, path, source)
    target = Path(path)
    try:
        target.mkdir(parents=True, exist_ok=True)
        # A real write: os.access() says yes to root on a read-only mount.
        with tempfile.TemporaryFile(dir=target):
            pass
    except FileExistsError:
        raise OperatorError(
            f"{where}: is a file, not a directory: move it away or choose another directory"
        ) from None
    except NotADirectoryError:
        raise OperatorError(
            f"{where}: a part of the path is a file, not a directory: fix the path"
        ) from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return target  # writable, only full: the work runs degraded and says so
        if exc.errno == errno.EROFS:
            fix = "the file system is read-only: remount it read-write, or choose another"
        else:
            fix = (
                f"chown it to that user (e.g. sudo chown -R {_user()} {target}), or choose another"
            )
        raise OperatorError(
            f"{where}: not writable by user {_user()} ({exc.strerror}): {fix} directory"
        ) from None
    return target


def check_tls_files(tls: TlsFiles | None, source: str | Path, table: str = "[mqtt.tls]") -> None:
    """The files of a ``[mqtt.tls]`` table exist and are readable; a client
    certificate comes with its key."""
    if tls is None:
        return
    check_file(tls.ca_file, f"{table} ca_file", source, "copy the broker's CA certificate there")
    if (tls.cert_file is None) != (tls.key_file is None):
        raise OperatorError(
            f"{table} (in {source}): cert_file and key_file go together (mutual TLS): "
            "set both, or neither"
        )
    if tls.cert_file is not None and tls.key_file is not None:
        check_file(
            tls.cert_file, f"{table} cert_file", source, "copy this client's certificate there"
        )
        check_file(tls.key_file, f"{table} key_file", source, "copy this client's key there")


def check_secret(
    file: str | None, env_var: str, key: str, source: str | Path, environ: Mapping[str, str]
) -> None:
    """A secret is there: the file ``key`` names is readable and not empty, or else
    the variable ``env_var`` is set."""
    if file is not None:
        check_file(file, key, source, "write the secret there (one line)")
        if not Path(file).read_text(encoding="utf-8", errors="replace").strip():
            raise OperatorError(
                f"{_where(key, file, source)}: the file is empty: write the secret there"
            )
    elif not environ.get(env_var):
        raise OperatorError(
            f"no secret: neither {key} (in {source}) nor the environment variable {env_var} "
            "is set: set one of them"
        )


def probe_mqtt(
    section: MqttSection, *, client_id: str, timeout_s: float = PROBE_TIMEOUT_S
) -> str | None:
    """Connect to the broker as ``section`` says (account, password, TLS) and
    disconnect: None when it accepted us, else one line naming ``host:port`` (and the
    key) and the fix.

    The probe resumes the session of ``client_id`` (clean start off) and keeps the
    section's ``session_expiry_s``, so probing with a running agent's id (a broker that
    makes the client id the username does that anyway) never discards the
    messages the broker keeps for it: the agent is only disconnected once and
    reconnects."""
    import paho.mqtt.client as mqtt  # noqa: PLC0415 (heavy: only when probing)
    from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode  # noqa: PLC0415
    from paho.mqtt.packettypes import PacketTypes  # noqa: PLC0415
    from paho.mqtt.properties import Properties  # noqa: PLC0415

    host, port, username, tls = section.host, section.port, section.username, section.tls
    address = f"{host}:{port}"
    connack: list[str] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.connect_timeout = timeout_s
    client.on_connect = lambda _c, _u, _f, reason, _p: connack.append(
        "" if not reason.is_failure else str(reason)
    )
    if username is not None:
        client.username_pw_set(username, section.password())
    try:
        if tls is not None:
            client.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file)
    except (OSError, ssl.SSLError) as exc:  # check_tls_files names the key first
        return f"MQTT broker {address}: [mqtt.tls] files unusable ({exc}): fix [mqtt.tls]"
    try:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = section.session_expiry_s
        client.connect(host, port, keepalive=30, clean_start=False, properties=properties)
        deadline = time.monotonic() + timeout_s
        while not connack and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
    except OSError as exc:  # ssl.SSLError and socket.gaierror are OSErrors
        return _connect_error(exc, address, port, timeout_s)
    if not connack:
        return (
            f"MQTT broker {address}: closed the connection or sent no CONNACK within "
            f"{timeout_s:.0f}s (a refused client certificate, or not an MQTT port): check "
            "[mqtt] port and [mqtt.tls], and the broker's log"
        )
    if connack[0]:
        return (
            f"MQTT broker {address} refused {username or 'an anonymous login'}: {connack[0]}: "
            "check [mqtt] username and its password (password_file or "
            "TILLPULSE_MQTT_PASSWORD), and that the account is provisioned (tillpulse "
            "broker add / rotate)"
        )
    client.disconnect()
    client.loop(timeout=0.1)
    return None


def _connect_error(exc: OSError, address: str, port: int, timeout_s: float) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"MQTT broker {address}: its TLS certificate does not verify ({exc.verify_message})"
            ": set [mqtt.tls] ca_file to the CA that signed it, and [mqtt] host to a name "
            "the certificate carries"
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"MQTT broker {address}: TLS failed ({exc.reason or exc}): is {port} the broker's "
            "TLS port? check [mqtt] port and [mqtt.tls]"
        )
    if isinstance(exc, socket.gaierror):
        return f"MQTT broker {address}: unknown host ({exc.strerror}): fix [mqtt] host"
    if isinstance(exc, TimeoutError):
        return (
            f"MQTT broker {address}: no answer within {timeout_s:.0f}s: check [mqtt] host and "
            "port, and that a firewall lets this machine reach it"
        )
    return (
        f"MQTT broker {address}: cannot connect ({exc.strerror or exc}): is the broker "
        "running there? check [mqtt] host and port"
    )


def probe_influx(influx: InfluxSection, *, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """An empty write to InfluxDB as the config would write (the credentials, the
    database or bucket, nothing stored): None when it would take our points, else
    one line naming the URL, the problem and the fix.

    The server checks the credentials and the target before the body, so a refused
    empty body (400) still means the real writes will be taken."""
    import urllib3  # noqa: PLC0415 (only when probing)

    from runtime.influx_sinks.base import error_text, unreachable  # noqa: PLC0415

    base = influx.url.rstrip("/")
    if influx.dialect == "v2":
        params = {"org": influx.org or "", "bucket": influx.bucket or "", "precision": "ns"}
        path, headers = "/api/v2/write", {"Authorization": f"Token {influx.token()}"}
        target = f"org {influx.org} bucket {influx.bucket}"
        credentials = f"[influxdb] token_file (or {INFLUX_TOKEN_ENV})"
    else:
        params = {"db": influx.database or "", "precision": "ns"}
        if influx.retention_policy:
            params["rp"] = influx.retention_policy
        path, headers = "/write", {}
        if influx.username is not None:
            auth = f"{influx.username}:{influx.password() or ''}"
            headers = urllib3.make_headers(basic_auth=auth)
        target = f"database {influx.database}"
        credentials = f"[influxdb] username and password_file (or {INFLUX_PASSWORD_ENV})"
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    try:
        reply = urllib3.request(
            "POST", url, body=b"", headers=headers, timeout=timeout_s, retries=False
        )
    except urllib3.exceptions.HTTPError as exc:
        return (
            f"InfluxDB {base}: {unreachable(base, exc)}: is InfluxDB running there? "
            "check [influxdb] url"
        )
    status, text = reply.status, error_text(reply.data)
    if status < 300 or status == 400:
        return None
    if status in (401, 403):
        return (
            f"InfluxDB {base} refused the credentials (HTTP {status}: {text}): check {credentials}"
        )
    if status == 404:
        return (
            f"InfluxDB {base}: no {target} (HTTP 404: {text}): create it, or fix [influxdb] "
            "url and the names"
        )
    return f"InfluxDB {base}: HTTP {status} to a write ({text}): is [influxdb] url an InfluxDB?"
