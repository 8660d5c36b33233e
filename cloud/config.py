"""The cloud jobs' config file (TOML), validated at start.

    [cloud]
    state_dir = "/var/lib/tillpulse-cloud"   # memory.json, alerts.json (per shard)
    model = "/var/lib/tillpulse-cloud/model.skops"   # relative: to state_dir
    window_s = 300
    lag_s = 120                              # detect a window this long after it ended
    calendar = "/etc/tillpulse/calendar.toml"  # optional: sale/holiday/closed days (wire.calendar)

    [query]                                  # InfluxQL over /query (1.x, 2.7+ DBRP, 3.x)
    url = "http://influxdb:8086"
    database = "tillpulse"
    username = "reader"                      # 1.x; password from password_file or
    password_file = "/etc/tillpulse/influx-password"  # env TILLPULSE_INFLUX_PASSWORD
    # token_file = "..."                     # 2.x / 3.x (or env TILLPULSE_INFLUX_TOKEN)

    [influxdb]                               # where anomalies are written: as the gateway's
    dialect = "v1"
    url = "http://influxdb:8086"
    database = "tillpulse"

    [mqtt]                                   # optional: alerts on tp/v1/alerts/...
    host = "broker"
    [webhook]                                # optional
    url = "https://hooks.example.net/tillpulse"

Overrides from the environment: ``TILLPULSE_CLOUD__<SECTION>__<KEY>``.

`check` is what every command verifies before its work, the same for
`check-config`: the files the config names are there and readable, the state
directory writable, the model there when the config names one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import msgspec

from cloud.reading.influxql_reader import ReaderSettings
from runtime.config import ConfigError, load_config, read_secret
from runtime.config_sections import (
    INFLUX_PASSWORD_ENV,
    INFLUX_TOKEN_ENV,
    MQTT_PASSWORD_ENV,
    InfluxQuerySection,
    InfluxSection,
    MqttSection,
    Section,
    require_http_url,
)
from runtime.preflight import check_dir, check_file, check_secret, check_tls_files
from wire.calendar import Calendar, load_calendar


class CloudSection(Section, kw_only=True, frozen=True):
    state_dir: str = "/var/lib/tillpulse-cloud"
    model: str | None = None  # None: <state_dir>/model.skops; relative: to state_dir
    window_s: Annotated[int, msgspec.Meta(ge=60, le=3600)] = 300
    lag_s: Annotated[int, msgspec.Meta(ge=0, le=3600)] = 120
    cooldown_s: Annotated[float, msgspec.Meta(ge=0)] = 1800.0
    clear_windows: Annotated[int, msgspec.Meta(ge=1)] = 2
    calendar: str | None = None  # the operator calendar (wire.calendar); None: none
    # the streaming detector on sensor, gateway and acquirer-latency series (series_watch)
    series_watch: bool = True
    series_threshold: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.95


class QuerySection(InfluxQuerySection, kw_only=True, frozen=True):
    retention_policy: str | None = None
    token_file: str | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0

    def reader_settings(self) -> ReaderSettings:
        password = self.password()
        # without a user (1.x), a token (2.x, 3.x) from token_file or else the environment
        wants_token = self.token_file or (not self.username and os.environ.get(INFLUX_TOKEN_ENV))
        token = read_secret(self.token_file, INFLUX_TOKEN_ENV) if wants_token else None
        return ReaderSettings(
            url=self.url,
            database=self.database,
            retention_policy=self.retention_policy,
            username=self.username,
            password=password,
            token=token,
            timeout_s=self.timeout_s,
        )


class CloudMqttSection(MqttSection, kw_only=True, frozen=True):
    client_id: str = "tillpulse-cloud"


class WebhookSection(Section, kw_only=True, frozen=True):
    url: str
    token_file: str | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0

    def __post_init__(self) -> None:
        require_http_url("url", self.url)


class CloudConfig(Section, kw_only=True, frozen=True):
    cloud: CloudSection = CloudSection()
    query: QuerySection
    influxdb: InfluxSection | None = None
    mqtt: CloudMqttSection | None = None
    webhook: WebhookSection | None = None

    @property
    def state_dir(self) -> Path:
        return Path(self.cloud.state_dir)

    @property
    def model_path(self) -> Path:
        # relative to state_dir, not to whatever directory the job was started in
        return self.state_dir / (self.cloud.model or "model.skops")

    def calendar(self, path: Path | None = None) -> Calendar | None:
        """The operator calendar at ``path``, else the config's, if any; ValueError with one
        line naming the file when it cannot be read or is not a calendar."""
        chosen = path or (Path(self.cloud.calendar) if self.cloud.calendar else None)
        return load_calendar(chosen) if chosen is not None else None


def check(
    config: CloudConfig,
    source: str | Path,
    *,
    training: bool = False,
    environ: dict[str, str] | None = None,
) -> None:
    """What every command needs of the config, before its work (and all `check-config`
    checks without `--connect`): `OperatorError` naming the key, the file and the fix.
    ``training``: the model is to be written, else (detect) read."""
    env = dict(os.environ if environ is None else environ)
    check_dir(config.state_dir, "[cloud] state_dir", source)
    if training:
        check_dir(config.model_path.parent, "[cloud] model's directory", source)
    elif config.cloud.model is not None:  # named: detect needs it (the default may be absent)
        check_file(
            config.model_path,
            "[cloud] model",
            source,
            f"train one (tillpulse cloud train -c {source}), or remove the key",
        )
    query = config.query
    if query.token_file is not None:
        check_secret(query.token_file, INFLUX_TOKEN_ENV, "[query] token_file", source, env)
    if query.username is not None:
        check_secret(query.password_file, INFLUX_PASSWORD_ENV, "[query] password_file", source, env)
    if config.influxdb is not None:
        out = config.influxdb
        if out.dialect == "v2":
            check_secret(out.token_file, INFLUX_TOKEN_ENV, "[influxdb] token_file", source, env)
        elif out.username is not None:
            check_secret(
                out.password_file, INFLUX_PASSWORD_ENV, "[influxdb] password_file", source, env
            )
    if config.mqtt is not None:
        if config.mqtt.username is not None:
            check_secret(
                config.mqtt.password_file, MQTT_PASSWORD_ENV, "[mqtt] password_file", source, env
            )
        check_tls_files(config.mqtt.tls, source)
    if config.webhook is not None and config.webhook.token_file is not None:
        check_file(
            config.webhook.token_file, "[webhook] token_file", source, "write the token there"
        )


def load_cloud_config(path: str | Path) -> CloudConfig:
    """The config, its calendar checked too: a bad calendar stops the start, not a cycle."""
    config = load_config(path, CloudConfig, "cloud")
    try:
        config.calendar()
    except ValueError as exc:
        raise ConfigError(f"config file {path}: cloud.calendar: {exc}") from None
    return config
