"""``tillpulse dashboards push``'s config file (TOML), validated before anything is sent.

    [grafana]
    url = "https://grafana.example.net"      # Grafana's base URL (a sub-path is kept)
    token_file = "/etc/tillpulse/grafana-token"      # or env TILLPULSE_GRAFANA_TOKEN
    # username = "admin"                     # basic auth instead of a token:
    # password_file = "/etc/tillpulse/grafana-password"   # or env TILLPULSE_GRAFANA_PASSWORD

    # datasource_uid = "influxdb-prod"       # under [grafana]: use a datasource Grafana has
    #                                          instead of [datasource]; the dashboards and
    #                                          alert rules then query that one

    [datasource]                             # push adds it to Grafana as tillpulse-influxdb
    url = "http://influxdb:8086"             # as Grafana reaches it
    database = "tillpulse"
    username = "grafana"
    password_file = "/etc/tillpulse/influx-password"  # or env TILLPULSE_INFLUX_PASSWORD

    [webhook]                                # optional: the alert rules' contact point
    url = "https://hooks.example.net/tillpulse"

See dashboards/deploy/dashboards.example.toml for every key with its default.
Any key can be overridden from the environment, e.g.
``TILLPULSE_DASHBOARDS__GRAFANA__URL`` (see runtime.config). Secrets are read
when the push starts (`DashboardsConfig.push_settings`), never logged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from dashboards.grafana_json import DATASOURCE_UID
from dashboards.provisioning import InfluxSettings
from dashboards.push import Credential, PushSettings
from runtime.config import ConfigError, load_config, read_secret
from runtime.config_sections import InfluxQuerySection, Seconds, Section, require_http_url

GRAFANA_TOKEN_ENV: Final = "TILLPULSE_GRAFANA_TOKEN"
GRAFANA_PASSWORD_ENV: Final = "TILLPULSE_GRAFANA_PASSWORD"


class GrafanaSection(Section, kw_only=True, frozen=True):
    url: str
    timeout_s: Seconds = 10.0  # per HTTP request
    token_file: str | None = None  # else env TILLPULSE_GRAFANA_TOKEN (when no username)
    username: str | None = None  # basic auth instead of a token
    password_file: str | None = None  # else env TILLPULSE_GRAFANA_PASSWORD when username is set
    datasource_uid: str | None = None  # an InfluxDB datasource Grafana has, instead of [datasource]

    def __post_init__(self) -> None:
        require_http_url("grafana.url", self.url)
        if self.datasource_uid is not None and not self.datasource_uid.strip():
            raise ValueError("grafana.datasource_uid must not be empty")
        if self.token_file and self.username is not None:
            raise ValueError("grafana.token_file and grafana.username: set one, not both")

    def credential(self) -> Credential:
        """A token, or (username, password); from the named file or else the environment."""
        if self.username is not None:
            return (
                self.username,
                _secret("password_file", self.password_file, GRAFANA_PASSWORD_ENV),
            )
        if not self.token_file and not os.environ.get(GRAFANA_TOKEN_ENV):
            raise ConfigError(
                f"no Grafana credentials: set grafana.token_file or {GRAFANA_TOKEN_ENV}, "
                f"or grafana.username with grafana.password_file or {GRAFANA_PASSWORD_ENV}"
            )
        return _secret("token_file", self.token_file, GRAFANA_TOKEN_ENV)


def _secret(key: str, file: str | None, env_var: str) -> str:
    """`read_secret`, its error naming the config key too."""
    try:
        return read_secret(file, env_var)
    except ConfigError as exc:
        raise ConfigError(f"grafana.{key}: {exc}") from None


class DatasourceSection(InfluxQuerySection, kw_only=True, frozen=True):
    """The InfluxDB Grafana's InfluxQL datasource reads (1.x, 2.x through DBRP, 3.x), as
    Grafana reaches it; ``username`` is a 1.x user, or a 2.x v1-auth user (or any user,
    a token as its password)."""

    def __post_init__(self) -> None:
        require_http_url("datasource.url", self.url)
        if not self.database:
            raise ValueError("datasource.database must not be empty")

    def influx_settings(self) -> InfluxSettings:
        return InfluxSettings(
            url=self.url,
            database=self.database,
            user=self.username or "",
            password=self.password() or "",
        )


class WebhookSection(Section, kw_only=True, frozen=True):
    url: str  # where Grafana's contact point POSTs alerts

    def __post_init__(self) -> None:
        require_http_url("webhook.url", self.url)


class DashboardsConfig(Section, kw_only=True, frozen=True):
    grafana: GrafanaSection
    datasource: DatasourceSection | None = None  # None: grafana.datasource_uid names one
    webhook: WebhookSection | None = None  # None: the contact point is left alone

    def __post_init__(self) -> None:
        if self.datasource is None and self.grafana.datasource_uid is None:
            raise ValueError(
                "no datasource: set [datasource] (an InfluxDB for push to add to Grafana) or "
                "grafana.datasource_uid (the uid of an InfluxDB datasource Grafana has)"
            )
        if self.datasource is not None and self.grafana.datasource_uid is not None:
            raise ValueError("grafana.datasource_uid and [datasource]: set one, not both")

    def push_settings(self) -> PushSettings:
        """What `push` needs, secrets read; ConfigError names a secret it cannot read."""
        return PushSettings(
            url=self.grafana.url.rstrip("/"),
            credential=self.grafana.credential(),
            influx=self.datasource.influx_settings() if self.datasource else None,
            datasource_uid=self.grafana.datasource_uid or DATASOURCE_UID,
            webhook_url=self.webhook.url if self.webhook else None,
            timeout_s=self.grafana.timeout_s,
        )


def load_dashboards_config(path: str | Path) -> DashboardsConfig:
    return load_config(path, DashboardsConfig, "dashboards")
