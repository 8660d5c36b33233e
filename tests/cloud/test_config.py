"""The cloud jobs' config: the shipped example loads, mistakes are named clearly."""

from pathlib import Path

import pytest

from cloud.cli import main as cloud_main
from cloud.config import load_cloud_config

EXAMPLE = Path(__file__).parents[2] / "cloud" / "deploy" / "cloud.example.toml"


def test_the_shipped_example_loads_and_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_cloud_config(EXAMPLE)
    assert config.cloud.window_s == 300
    assert config.model_path == Path("/var/lib/tillpulse-cloud/model.skops")
    assert config.influxdb is not None and config.influxdb.bucket == "tillpulse"
    assert config.mqtt is not None and config.mqtt.tls is not None
    assert config.webhook is not None
    # check-config checks what the jobs need: the secret files it names are not here
    monkeypatch.setenv("TILLPULSE_CLOUD__CLOUD__STATE_DIR", str(tmp_path))
    assert cloud_main(["check-config", "--config", str(EXAMPLE)]) == 2
    err = capsys.readouterr().err
    assert "[query] token_file /etc/tillpulse/influx-token" in err and "no such file" in err


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[cloud]\nwindow_s = 5\n[query]\nurl = "u"\ndatabase = "d"\n', "cloud.window_s"),
        ('[cloud]\nstate_dir = "/tmp"\n', "`query`"),
        ('[query]\nurl = "u"\ndatabase = "d"\nshard = 1\n', "shard"),
    ],
)
def test_a_wrong_config_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, named: str
) -> None:
    path = tmp_path / "cloud.toml"
    path.write_text(text)
    assert cloud_main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert named in err and str(path) in err


def test_the_query_token_may_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cloud.toml"
    path.write_text('[query]\nurl = "http://influxdb:8086"\ndatabase = "tillpulse"\n')
    monkeypatch.setenv("TILLPULSE_INFLUX_TOKEN", "secret-token")
    assert load_cloud_config(path).query.reader_settings().token == "secret-token"
    monkeypatch.delenv("TILLPULSE_INFLUX_TOKEN")
    assert load_cloud_config(path).query.reader_settings().token is None
