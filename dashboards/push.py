"""Upload the folder, datasource, dashboards and alerting to a running Grafana (>= 10).

Idempotent: everything is created or updated by its uid (dashboards with
``overwrite``), so pushing twice changes nothing the second time. The rule
group is written whole (PUT), which creates, updates and removes its rules to
match the code, the way Grafana's Terraform provider does.

Grafana's version is read from ``/api/health`` (no credentials needed) before
anything is written: the alerting provisioning API this relies on is
Grafana 10's.

The datasource is either created or updated from the config (uid
``tillpulse-influxdb``), or one Grafana already has, named by its uid and
checked to be an InfluxQL one: the dashboards' ``$datasource`` defaults to it
and the alert rules query it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import niquests
from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaTimeoutError

from dashboards.alert_rules import (
    CONTACT_POINT,
    EVALUATE_EVERY_S,
    FOLDER_TITLE,
    FOLDER_UID,
    RULE_GROUP,
    RULES,
    contact_point,
)
from dashboards.boards import ALL
from dashboards.errors import PushError
from dashboards.provisioning import InfluxSettings, datasource
from runtime.logs import kv

log = logging.getLogger(__name__)

MIN_VERSION: Final = (10, 0)
NOT_FOUND: Final = 404
_VERSION: Final = re.compile(r"(\d+)\.(\d+)")
# the useful part of urllib3's nested connection errors
_CAUSE: Final = re.compile(r"\[Errno -?\d+\] [^'\")]+|Failed to resolve '[^']+'|timed out")

Credential = str | tuple[str, str]  # a token, or (user, password)
Grafana = Any  # a GrafanaApi: grafana-client leaves most of its methods untyped


@dataclass(frozen=True)
class PushSettings:
    url: str
    credential: Credential
    influx: InfluxSettings | None  # None: Grafana has the datasource `datasource_uid` already
    datasource_uid: str  # the one `influx` becomes, or the existing one
    webhook_url: str | None  # the contact point is left alone without one
    timeout_s: float = 10.0


@dataclass(frozen=True)
class PushReport:
    grafana_version: str
    dashboards: int
    rules: int
    contact_point: bool


def push(settings: PushSettings) -> PushReport:
    """Push everything; raises PushError with a one-line reason."""
    api = _api(settings)
    log.debug("push_started", extra=kv(url=settings.url))
    with _errors(settings.url):
        version = _check_version(api)
        _upsert_folder(api)
        if settings.influx is None:
            _require_datasource(api, settings.url, settings.datasource_uid)
        else:
            _upsert_datasource(api, settings.influx)
        for board in ALL:
            api.dashboard.update_dashboard(
                {
                    "dashboard": board.json(settings.datasource_uid),
                    "folderUid": FOLDER_UID,
                    "overwrite": True,
                }
            )
            log.info("dashboard_pushed", extra=kv(uid=board.uid))
        api.alertingprovisioning.update_rule_group(
            FOLDER_UID,
            RULE_GROUP,
            {
                "title": RULE_GROUP,
                "folderUid": FOLDER_UID,
                "interval": EVALUATE_EVERY_S,
                "rules": [rule.api_body(settings.datasource_uid) for rule in RULES],
            },
        )
        if settings.webhook_url:
            _upsert_contact_point(api, settings.webhook_url)
    return PushReport(version, len(ALL), len(RULES), bool(settings.webhook_url))


def check_grafana(settings: PushSettings) -> str:
    """What push needs of Grafana, changing nothing: it answers, is new enough, takes
    the credentials (and has the datasource to use); returns its version or raises
    PushError as push would."""
    api = _api(settings)
    with _errors(settings.url):
        version = _check_version(api)
        api.folder.get_all_folders()  # needs the credentials
        if settings.influx is None:
            _require_datasource(api, settings.url, settings.datasource_uid)
    return version


def _api(settings: PushSettings) -> Grafana:
    return GrafanaApi.from_url(  # the trailing slash keeps a sub-path (/grafana/)
        settings.url.rstrip("/") + "/", credential=settings.credential, timeout=settings.timeout_s
    )


@contextmanager
def _errors(url: str) -> Iterator[None]:
    """The client's and the HTTP library's exceptions as one-line PushErrors."""
    try:
        yield
    except GrafanaTimeoutError as exc:
        raise PushError(f"Grafana at {url} did not answer in time: {exc}") from exc
    except GrafanaException as exc:
        raise _refused(url, exc) from exc
    except niquests.exceptions.RequestException as exc:
        raise PushError(
            f"cannot reach Grafana at {url}: {_cause(exc)}: check that it runs "
            "there and the config's [grafana] url"
        ) from exc


def _check_version(api: Grafana) -> str:
    try:
        health: Any = api.client.GET("/health")
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        raise PushError(f"{api.client.url} has no /health: is this Grafana?") from exc
    return require_version(health.get("version") if isinstance(health, dict) else None)


def require_version(version: object) -> str:
    """``version`` (from /api/health) if it is Grafana 10 or newer; PushError otherwise."""
    match = _VERSION.match(str(version or ""))
    if match is None:
        raise PushError(f"cannot tell Grafana's version from /api/health: {version!r:.80}")
    if (int(match[1]), int(match[2])) < MIN_VERSION:
        raise PushError(
            f"Grafana {version} is too old: the alerting provisioning API needs Grafana "
            f">= {MIN_VERSION[0]}.{MIN_VERSION[1]}"
        )
    return str(version)


def _missing(exc: GrafanaException) -> bool:
    return isinstance(exc, GrafanaClientError) and exc.status_code == NOT_FOUND


def _upsert_folder(api: Grafana) -> None:
    try:
        api.folder.get_folder(FOLDER_UID)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)


def _upsert_datasource(api: Grafana, influx: InfluxSettings) -> None:
    body = datasource(influx)
    try:
        api.datasource.get_datasource_by_uid(body["uid"])
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.datasource.create_datasource(body)
        return
    api.datasource.update_datasource_by_uid(body["uid"], body)


def _require_datasource(api: Grafana, url: str, uid: str) -> None:
    try:
        found: Any = api.datasource.get_datasource_by_uid(uid)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        raise PushError(
            f"Grafana at {url} has no datasource with uid {uid!r}: set grafana.datasource_uid "
            "to its InfluxDB datasource's uid (the last part of the datasource's page URL)"
        ) from exc
    kind = found.get("type")
    language = (found.get("jsonData") or {}).get("version") or "InfluxQL"  # unset: InfluxQL
    if kind != "influxdb" or language != "InfluxQL":
        raise PushError(
            f"datasource {uid!r} in Grafana at {url} is {kind} ({language}), not InfluxDB with "
            "InfluxQL: set grafana.datasource_uid to an InfluxQL InfluxDB datasource's uid"
        )


def _upsert_contact_point(api: Grafana, url: str) -> None:
    body = contact_point()
    body["settings"] = body["settings"] | {"url": url}
    existing = api.alertingprovisioning.get_contactpoints(name=CONTACT_POINT)
    if any(point.get("uid") == body["uid"] for point in existing or []):
        api.alertingprovisioning.update_contactpoint(body["uid"], body)
    else:
        api.alertingprovisioning.create_contactpoint(body)


def _refused(url: str, exc: GrafanaException) -> PushError:
    if exc.status_code in (401, 403):
        return PushError(
            f"Grafana at {url} refused the credentials (HTTP {exc.status_code}): check "
            "the config's [grafana] credentials (an Admin service account token, or an Admin's "
            "username and password)"
        )
    return PushError(f"Grafana at {url} refused the upload: {_first_line(exc)}")


def _cause(exc: BaseException) -> str:
    match = _CAUSE.search(str(exc))
    return match[0] if match else _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
