"""The config vocabulary every component shares: the ``[mqtt]`` and ``[influxdb]``
sections and where their secrets come from.

A component's config (edge, gateway, cloud, dashboards push) is a msgspec
Struct built from `Section`s; the MQTT and InfluxDB keys mean the same in
every file. A component that needs more MQTT keys subclasses `MqttSection`
(the gateway's shared subscription, the agent's in-flight window).

Secrets never live in the file: ``password_file`` / ``token_file`` name a file,
or else the environment variable below holds the secret (`read_secret`).
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from runtime.config import read_secret

MQTT_PASSWORD_ENV = "TILLPULSE_MQTT_PASSWORD"
INFLUX_TOKEN_ENV = "TILLPULSE_INFLUX_TOKEN"
INFLUX_PASSWORD_ENV = "TILLPULSE_INFLUX_PASSWORD"

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
Host = Annotated[str, msgspec.Meta(min_length=1)]


def require_http_url(key: str, url: str) -> None:
    """ValueError naming ``key`` unless ``url`` is http(s)://host[:port][/path] (no
    scheme, another scheme or a port out of range otherwise fails only at the first
    request, after check-config said ok)."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (urlsplit checks the port when asked for it)
    except ValueError:
        parts = parts._replace(scheme="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{key} must be http(s)://host[:port][/path], not {url!r}")


class TlsFiles(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[mqtt.tls]``: the broker verified against ``ca_file``."""

    ca_file: str
    cert_file: str | None = None  # with key_file: mutual TLS
    key_file: str | None = None


class LinkSettings(msgspec.Struct, kw_only=True, frozen=True):
    """What `runtime.mqtt_link.MqttLink` needs; built by `MqttSection.link_settings`."""

    host: str
    port: int
    client_id: str
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    username: str | None = None
    tls: TlsFiles | None = None
    receive_maximum: int | None = None  # MQTT v5 flow control for inbound QoS 1
    max_inflight: int = 20  # paho's own cap on outbound QoS 1 in flight
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0


class Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A config table: a misspelt key is an error naming it."""


class MqttSection(Section, kw_only=True, frozen=True):
    host: Host
    port: Port = 1883
    username: str | None = None
    password_file: str | None = None  # else env TILLPULSE_MQTT_PASSWORD when username is set
    tls: TlsFiles | None = None
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=65535)] = 30
    session_expiry_s: Annotated[int, msgspec.Meta(ge=0)] = 7 * 24 * 3600
    reconnect_min_s: Seconds = 1.0
    reconnect_max_s: Seconds = 60.0

    def __post_init__(self) -> None:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s: {self.reconnect_min_s} is more than reconnect_max_s "
                f"{self.reconnect_max_s}: the backoff grows from min to max"
            )

    def password(self) -> str | None:
        """The broker password (file or env), or None when no username is configured."""
        if self.username is None:
            return None
        return read_secret(self.password_file, MQTT_PASSWORD_ENV)

    def link_settings(
        self, client_id: str, *, receive_maximum: int | None = None, max_inflight: int = 20
    ) -> LinkSettings:
        """The `MqttLink` settings of this section, logged in as ``client_id``."""
        return LinkSettings(
            host=self.host,
            port=self.port,
            client_id=client_id,
            keepalive_s=self.keepalive_s,
            session_expiry_s=self.session_expiry_s,
            username=self.username,
            tls=self.tls,
            receive_maximum=receive_maximum,
            max_inflight=max_inflight,
            reconnect_min_s=self.reconnect_min_s,
            reconnect_max_s=self.reconnect_max_s,
        )


class InfluxSection(Section, kw_only=True, frozen=True):
    """Where line protocol is written: the gateway's points, the cloud's anomalies."""

    dialect: Literal["v2", "v1"] = "v2"
    url: str
    timeout_s: Seconds = 10.0
    # v2: InfluxDB 2.x/3.x/Cloud, 1.8+ (and VictoriaMetrics' /api/v2/write)
    org: str | None = None
    bucket: str | None = None
    token_file: str | None = None  # else env TILLPULSE_INFLUX_TOKEN
    # v1: /write?db=&rp= on every InfluxDB 1.x
    database: str | None = None
    retention_policy: str | None = None
    username: str | None = None
    password_file: str | None = None  # else env TILLPULSE_INFLUX_PASSWORD when username is set

    def __post_init__(self) -> None:
        require_http_url("url", self.url)
        required = ("org", "bucket") if self.dialect == "v2" else ("database",)
        for key in required:
            if not getattr(self, key):
                raise ValueError(f'{key}: is required when dialect = "{self.dialect}"')

    def token(self) -> str:
        """The v2 API token (file or env)."""
        return read_secret(self.token_file, INFLUX_TOKEN_ENV)

    def password(self) -> str | None:
        """The v1 password (file or env), or None when no username is configured."""
        if self.username is None:
            return None
        return read_secret(self.password_file, INFLUX_PASSWORD_ENV)


class InfluxQuerySection(Section, kw_only=True, frozen=True):
    """Where InfluxQL is read (``GET /query``): the cloud's ``[query]``, Grafana's
    ``[datasource]``."""

    url: str
    database: str  # InfluxDB 2.x: the DBRP-mapped database of the bucket
    username: str | None = None
    password_file: str | None = None  # else env TILLPULSE_INFLUX_PASSWORD when username is set

    def __post_init__(self) -> None:
        require_http_url("url", self.url)

    def password(self) -> str | None:
        """The read password (file or env), or None when no username is configured."""
        if self.username is None:
            return None
        return read_secret(self.password_file, INFLUX_PASSWORD_ENV)
