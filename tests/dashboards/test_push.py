"""`tillpulse dashboards push`: settings from the environment, and one-line errors.

No Grafana can run here (it is not packaged for Debian) and no fake one is
built: the tests cover what fails before or without Grafana, against real
ports and real servers that are not Grafana.
"""

from __future__ import annotations

import pytest

from dashboards.cli import main
from dashboards.errors import PushError
from dashboards.push import require_version
from testkit.servers import InfluxDB1Server, free_port

TOKEN = "glsa_secret_token_value"
ENV = {"GRAFANA_TOKEN": TOKEN, "INFLUX_URL": "http://influxdb:8086", "INFLUX_DB": "tillpulse"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("GRAFANA_TOKEN", "GRAFANA_USER", "GRAFANA_PASSWORD", "INFLUX_USER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def push(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["push", *args])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err  # one line, no traceback
    assert TOKEN not in err
    return code, err


def test_an_unreachable_grafana_is_one_clear_line(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, err = push(capsys, "--url", url, "--timeout", "2")
    assert code == 2
    assert err.startswith(f"tillpulse dashboards push: cannot reach Grafana at {url}")


def test_basic_auth_from_the_environment_is_accepted(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.delenv("GRAFANA_TOKEN")
    env.setenv("GRAFANA_USER", "admin")
    env.setenv("GRAFANA_PASSWORD", "admin-password")
    code, err = push(capsys, "--url", f"http://127.0.0.1:{free_port()}/", "--timeout", "2")
    assert code == 2 and "cannot reach Grafana" in err  # got past the settings
    assert "admin-password" not in err


@pytest.mark.integration
def test_a_server_that_is_not_grafana_is_named(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], influxdb_session: InfluxDB1Server
) -> None:
    code, err = push(capsys, "--url", influxdb_session.url)
    assert code == 2
    assert "has no /health: is this Grafana?" in err


@pytest.mark.parametrize(
    ("unset", "complaint"),
    [
        ("GRAFANA_TOKEN", "no Grafana credentials: set GRAFANA_TOKEN, or GRAFANA_USER and"),
        ("INFLUX_URL", "set INFLUX_URL: the datasource"),
        ("INFLUX_DB", "set INFLUX_DB: the datasource"),
    ],
)
def test_missing_settings_are_named(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], unset: str, complaint: str
) -> None:
    env.delenv(unset)
    code, err = push(capsys, "--url", "http://grafana:3000")
    assert code == 2 and complaint in err


def test_a_user_without_a_password_is_not_credentials(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.delenv("GRAFANA_TOKEN")
    env.setenv("GRAFANA_USER", "admin")
    code, err = push(capsys, "--url", "http://grafana:3000")
    assert code == 2 and "no Grafana credentials" in err


@pytest.mark.parametrize("url", ["grafana:3000", "ftp://grafana", "http://", "/api"])
def test_a_url_that_is_not_http_is_refused(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    code, err = push(capsys, "--url", url)
    assert code == 2 and "--url must be http(s)://host[:port]" in err


def test_a_non_positive_timeout_is_refused(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = push(capsys, "--url", "http://grafana:3000", "--timeout", "0")
    assert code == 2 and "--timeout must be positive" in err


@pytest.mark.parametrize("version", ["10.0.0", "10.4.3", "11.2.0-pre", "12.0.1+security-01"])
def test_grafana_10_and_newer_are_accepted(version: str) -> None:
    assert require_version(version) == version


@pytest.mark.parametrize(
    ("version", "complaint"),
    [
        ("9.5.2", "Grafana 9.5.2 is too old: the alerting provisioning API needs Grafana >= 10.0"),
        ("8.0.0", "too old"),
        (None, "cannot tell Grafana's version"),
        ("dev", "cannot tell Grafana's version"),
    ],
)
def test_an_old_or_unknown_grafana_is_refused(version: str | None, complaint: str) -> None:
    with pytest.raises(PushError, match=complaint):
        require_version(version)
