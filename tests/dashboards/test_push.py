"""`tillpulse dashboards push --config FILE`: the config file, and one-line errors.

No Grafana can run here (it is not packaged for Debian) and no fake one is
built: the tests cover the config and what fails before or without Grafana,
against real ports and real servers that are not Grafana.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dashboards.alert_rules import RULES
from dashboards.boards import ALL
from dashboards.cli import main
from dashboards.config import (
    GRAFANA_PASSWORD_ENV,
    GRAFANA_TOKEN_ENV,
    DashboardsConfig,
    load_dashboards_config,
)
from dashboards.errors import PushError
from dashboards.provisioning import InfluxSettings
from dashboards.push import PushSettings, require_version
from runtime.config import load_config
from runtime.config_sections import INFLUX_PASSWORD_ENV
from testkit.servers import InfluxDB1Server, free_port

EXAMPLE = Path(__file__).parents[2] / "dashboards" / "deploy" / "dashboards.example.toml"
TOKEN = "glsa_secret_token_value"
PASSWORD = "influx-secret-password"
DATASOURCE = '[datasource]\nurl = "http://influxdb:8086"\ndatabase = "tillpulse"\n'
THEIRS = "influxdb-prod"  # an existing Grafana's datasource uid


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No secret and no override from the environment the tests run in."""
    for name in os.environ:
        if name.startswith("TILLPULSE_DASHBOARDS__") or name in (
            GRAFANA_TOKEN_ENV,
            GRAFANA_PASSWORD_ENV,
            INFLUX_PASSWORD_ENV,
        ):
            monkeypatch.delenv(name)
    return monkeypatch


def secret(tmp_path: Path, name: str, value: str) -> Path:
    path = tmp_path / name
    path.write_text(value + "\n")
    return path


def config_file(tmp_path: Path, grafana: str, rest: str = DATASOURCE) -> Path:
    """A config of ``[grafana]`` lines (``url`` first) and the other tables."""
    path = tmp_path / "dashboards.toml"
    path.write_text(f"[grafana]\n{grafana}\n{rest}")
    return path


def token_config(tmp_path: Path, url: str, rest: str = DATASOURCE) -> Path:
    token_file = secret(tmp_path, "grafana-token", TOKEN)
    return config_file(tmp_path, f'url = "{url}"\ntoken_file = "{token_file}"', rest)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err  # one line, no traceback
    assert TOKEN not in err and PASSWORD not in err
    return code, err


def unreachable() -> str:
    return f"http://127.0.0.1:{free_port()}"


# the config


def test_the_shipped_example_loads_and_checks(
    tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_dashboards_config(EXAMPLE)
    assert (config.grafana.url, config.grafana.timeout_s) == ("https://grafana.example.net", 10.0)
    assert config.grafana.token_file == "/etc/tillpulse/grafana-token"
    assert config.grafana.username is None
    assert (config.datasource.url, config.datasource.database) == (
        "http://influxdb:8086",
        "tillpulse",
    )
    assert config.datasource.username == "grafana"
    assert config.webhook is not None
    # check-config reads the secrets push reads: the example's are the operator's to create
    code, err = run(capsys, "check-config", "--config", str(EXAMPLE))
    assert code == 2 and "grafana.token_file: secret file /etc/tillpulse/grafana-token" in err
    env.setenv(GRAFANA_TOKEN_ENV, TOKEN)
    env.setenv(INFLUX_PASSWORD_ENV, PASSWORD)
    path = tmp_path / "dashboards.toml"
    path.write_text(EXAMPLE.read_text().replace("token_file =", "# token_file ="))
    path.write_text(path.read_text().replace("password_file =", "# password_file ="))
    assert main(["check-config", "--config", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok\n"


def test_the_config_becomes_the_push_settings(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    influx_password = secret(tmp_path, "influx-password", PASSWORD)
    path = token_config(
        tmp_path,
        "https://example.net/grafana/",
        DATASOURCE + f'username = "grafana"\npassword_file = "{influx_password}"\n'
        '[webhook]\nurl = "https://hooks.example.net/tp"\n',
    )
    assert load_dashboards_config(path).push_settings() == PushSettings(
        url="https://example.net/grafana",
        credential=TOKEN,
        influx=InfluxSettings(
            url="http://influxdb:8086", database="tillpulse", user="grafana", password=PASSWORD
        ),
        datasource_uid="tillpulse-influxdb",
        webhook_url="https://hooks.example.net/tp",
        timeout_s=10.0,
    )


def test_without_a_webhook_or_a_datasource_user_those_are_left_out(
    tmp_path: Path, env: pytest.MonkeyPatch
) -> None:
    settings = load_dashboards_config(token_config(tmp_path, "http://g:3000")).push_settings()
    assert settings.webhook_url is None
    assert (settings.influx.user, settings.influx.password) == ("", "")


def test_an_existing_datasource_named_by_uid_replaces_the_datasource_table(
    tmp_path: Path, env: pytest.MonkeyPatch
) -> None:
    path = config_file(tmp_path, f'url = "http://g:3000"\ndatasource_uid = "{THEIRS}"', "")
    env.setenv(GRAFANA_TOKEN_ENV, TOKEN)
    settings = load_dashboards_config(path).push_settings()
    assert (settings.influx, settings.datasource_uid) == (None, THEIRS)


def test_what_push_uploads_reads_the_datasource_it_is_given() -> None:
    """The dashboards default to it (their queries read $datasource); the rules query it."""
    for board in ALL:
        (variable, *_) = board.json(THEIRS)["templating"]["list"]
        assert variable["current"]["value"] == THEIRS
    for rule in RULES:
        queried = {step["datasourceUid"] for step in rule.api_body(THEIRS)["data"]}
        assert queried == {THEIRS, "__expr__"}


def test_secrets_may_come_from_the_environment(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    env.setenv(GRAFANA_TOKEN_ENV, TOKEN)
    env.setenv(INFLUX_PASSWORD_ENV, PASSWORD)
    path = config_file(tmp_path, 'url = "http://g:3000"', DATASOURCE + 'username = "grafana"\n')
    settings = load_dashboards_config(path).push_settings()
    assert (settings.credential, settings.influx.password) == (TOKEN, PASSWORD)

    env.setenv(GRAFANA_PASSWORD_ENV, "admin-password")
    path = config_file(tmp_path, 'url = "http://g:3000"\nusername = "admin"')
    assert load_dashboards_config(path).push_settings().credential == ("admin", "admin-password")


def test_environment_overrides_apply(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    path = token_config(tmp_path, "http://grafana:3000")
    environ = {
        "TILLPULSE_DASHBOARDS__GRAFANA__URL": "http://10.0.0.5:3000",
        "TILLPULSE_DASHBOARDS__GRAFANA__TIMEOUT_S": "2.5",
        "TILLPULSE_DASHBOARDS__DATASOURCE__DATABASE": "fleet",
        "TILLPULSE_DASHBOARDS__WEBHOOK__URL": "https://hooks.example.net/tp",  # a new table
    }
    config = load_config(path, DashboardsConfig, "dashboards", environ=environ)
    assert (config.grafana.url, config.grafana.timeout_s) == ("http://10.0.0.5:3000", 2.5)
    assert config.datasource.database == "fleet"
    assert config.webhook is not None and config.webhook.url == "https://hooks.example.net/tp"


def test_a_bad_override_names_the_variable(
    tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("TILLPULSE_DASHBOARDS__GRAFANA__TIMEOUT_S", "0")
    code, err = run(capsys, "push", "--config", str(token_config(tmp_path, "http://g:3000")))
    assert code == 2
    assert "grafana.timeout_s" in err and "TILLPULSE_DASHBOARDS__GRAFANA__TIMEOUT_S" in err


# push reads its config


def test_push_goes_where_the_config_and_its_overrides_say(
    tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = token_config(tmp_path, "http://grafana.invalid:3000")
    url = unreachable()
    env.setenv("TILLPULSE_DASHBOARDS__GRAFANA__URL", url)
    env.setenv("TILLPULSE_DASHBOARDS__GRAFANA__TIMEOUT_S", "2")
    code, err = run(capsys, "push", "--config", str(path))
    assert code == 1
    assert err.startswith(f"tillpulse dashboards push: cannot reach Grafana at {url}")


def test_an_unreachable_grafana_is_one_clear_line(
    tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = unreachable()
    path = token_config(tmp_path, url, DATASOURCE + '[webhook]\nurl = "https://hooks.example/x"\n')
    code, err = run(capsys, "push", "--config", str(path))
    assert code == 1
    assert err.startswith(f"tillpulse dashboards push: cannot reach Grafana at {url}")


def test_basic_auth_from_the_config_is_accepted(
    tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    password_file = secret(tmp_path, "grafana-password", "admin-password")
    path = config_file(
        tmp_path,
        f'url = "{unreachable()}/"\ntimeout_s = 2\nusername = "admin"\n'
        f'password_file = "{password_file}"',
    )
    code, err = run(capsys, "push", "--config", str(path))
    assert code == 1 and "cannot reach Grafana" in err  # got past the settings
    assert "admin-password" not in err


@pytest.mark.integration
def test_a_server_that_is_not_grafana_is_named(
    tmp_path: Path,
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    influxdb_session: InfluxDB1Server,
) -> None:
    code, err = run(capsys, "push", "--config", str(token_config(tmp_path, influxdb_session.url)))
    assert code == 1
    assert "has no /health: is this Grafana?" in err


# a wrong config, or a secret that cannot be read: one line, exit 2, nothing sent


@pytest.mark.parametrize("command", ["push", "check-config"])
def test_a_missing_config_file_is_one_line(
    tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    path = tmp_path / "nowhere.toml"
    code, err = run(capsys, command, "--config", str(path))
    assert code == 2
    assert err.startswith(f"tillpulse dashboards {command}: config file {path} does not exist")
    assert "tillpulse dashboards sample-config" in err


G = '[grafana]\nurl = "http://g"\n'


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[grafana]\nurl = "grafana:3000"\n' + DATASOURCE, "grafana.url must be http(s)://host"),
        ('[grafana]\nurl = "ftp://grafana"\n' + DATASOURCE, "grafana.url must be http(s)://host"),
        ('[grafana]\nurl = "http://"\n' + DATASOURCE, "grafana.url must be http(s)://host"),
        (G + "timeout_s = 0\n" + DATASOURCE, "grafana.timeout_s"),
        (G + 'tokenfile = "/t"\n' + DATASOURCE, "tokenfile"),
        (G + 'token_file = "/t"\nusername = "a"\n' + DATASOURCE, "set one, not both"),
        (G, "no datasource: set [datasource]"),
        (G + 'datasource_uid = "x"\n' + DATASOURCE, "set one, not both"),
        (G + 'datasource_uid = ""\n', "grafana.datasource_uid must not be empty"),
        (G + '[datasource]\nurl = "http://i"\n', "`database`"),
        (G + '[datasource]\nurl = "i:8086"\ndatabase = "d"\n', "datasource.url"),
        (G + DATASOURCE + '[webhook]\nurl = "hooks"\n', "webhook.url"),
        (G + DATASOURCE + DATASOURCE, "not valid TOML"),
    ],
)
@pytest.mark.parametrize("command", ["push", "check-config"])
@pytest.mark.usefixtures("env")
def test_a_wrong_config_names_the_key_and_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, named: str, command: str
) -> None:
    path = tmp_path / "dashboards.toml"
    path.write_text(text)
    code, err = run(capsys, command, "--config", str(path))
    assert code == 2 and named in err and str(path) in err


@pytest.mark.parametrize("which", ["grafana", "datasource"])
def test_a_missing_secret_file_is_one_line_naming_it(
    tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    missing = tmp_path / "secrets" / f"{which}-password"
    grafana = f'url = "http://grafana:3000"\ntoken_file = "{missing}"'
    rest = DATASOURCE
    if which == "datasource":
        grafana = f'url = "http://grafana:3000"\ntoken_file = "{secret(tmp_path, "t", TOKEN)}"'
        rest = DATASOURCE + f'username = "grafana"\npassword_file = "{missing}"\n'
    path = config_file(tmp_path, grafana, rest)
    for command in ("check-config", "push"):  # check-config reads what push reads
        code, err = run(capsys, command, "--config", str(path))
        assert code == 2
        assert f"secret file {missing} cannot be read" in err


@pytest.mark.parametrize(
    ("grafana", "complaint"),
    [
        (
            'url = "http://grafana:3000"',
            "no Grafana credentials: set grafana.token_file or TILLPULSE_GRAFANA_TOKEN, "
            "or grafana.username with grafana.password_file or TILLPULSE_GRAFANA_PASSWORD",
        ),
        ('url = "http://grafana:3000"\nusername = "admin"', "set TILLPULSE_GRAFANA_PASSWORD"),
    ],
)
def test_missing_credentials_are_named(
    tmp_path: Path,
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    grafana: str,
    complaint: str,
) -> None:
    code, err = run(capsys, "push", "--config", str(config_file(tmp_path, grafana)))
    assert code == 2 and complaint in err


def test_a_datasource_user_without_a_password_is_named(
    tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = token_config(tmp_path, "http://grafana:3000", DATASOURCE + 'username = "grafana"\n')
    code, err = run(capsys, "push", "--config", str(path))
    assert code == 2 and "set TILLPULSE_INFLUX_PASSWORD" in err


# Grafana's version


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
