import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import GatewayConfig, load_gateway_config
from runtime.config import ConfigError, load_config
from runtime.config_sections import INFLUX_PASSWORD_ENV, INFLUX_TOKEN_ENV, InfluxSection
from wire.timestamps import NS_PER_DAY, NS_PER_S

EXAMPLE = Path(__file__).parents[2] / "gateway" / "deploy" / "gateway.example.toml"
MINIMAL = '[gateway]\nid = "gw1"\n[mqtt]\nhost = "b"\n[influxdb]\nurl = "http://i:8086"\n'
V2 = MINIMAL + 'org = "o"\nbucket = "b"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_the_shipped_example_loads() -> None:
    config = load_gateway_config(EXAMPLE)
    assert config.gateway.id == "gw1"
    assert config.mqtt.shared_group == "gateways"
    assert config.mqtt.tls is not None and config.mqtt.tls.ca_file.endswith("ca.pem")
    assert (config.influxdb.dialect, config.influxdb.bucket) == ("v2", "tillpulse")
    assert config.aggregates.allowed_lateness_s == 120
    assert (config.timestamps.max_event_age, config.timestamps.max_future_skew) == ("30d", "1h")
    assert config.http.address == ("127.0.0.1", 9464)
    assert config.spool_dir == Path("/var/lib/tillpulse-gateway/spool")


def test_defaults_fill_every_optional_section(tmp_path: Path) -> None:
    config = load_gateway_config(write(tmp_path, V2))
    assert config.spool.fsync == "always"
    assert config.dedup.max_entries == 200_000
    assert config.gaps.enabled
    assert config.mqtt.shared_group is None
    assert config.timestamps.max_event_age_ns == 30 * NS_PER_DAY
    assert config.timestamps.max_future_skew_ns == 3600 * NS_PER_S


def test_v1_needs_a_database(tmp_path: Path) -> None:
    path = write(
        tmp_path, MINIMAL + 'dialect = "v1"\ndatabase = "tp"\nretention_policy = "autogen"\n'
    )
    assert load_gateway_config(path).influxdb.database == "tp"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (MINIMAL + 'bucket = "b"\n', "influxdb.org"),
        (MINIMAL + 'org = "o"\n', "influxdb.bucket"),
        (MINIMAL + 'dialect = "v1"\n', "influxdb.database"),
        (MINIMAL + 'dialect = "v3"\norg = "o"\nbucket = "b"\n', "influxdb.dialect"),
        (V2.replace('id = "gw1"', 'id = "gw 1"'), "gateway.id"),
        (
            '[gateway]\nid = "gw1"\n[influxdb]\nurl = "http://i"\norg = "o"\nbucket = "b"\n',
            "`mqtt`",
        ),
        (V2.replace('host = "b"', 'host = "b"\nreceive_maximum = 0'), "mqtt.receive_maximum"),
        (V2.replace('host = "b"', 'host = "b"\nshared_group = "a/#"'), "mqtt.shared_group"),
        (V2.replace('host = "b"', 'host = "b"\nprot = 1'), "prot"),
        (V2 + '[spool]\nfsync = "sometimes"\n', "spool.fsync"),
        (V2 + "[spool]\nmax_bytes = 2097152\nsegment_bytes = 4194304\n", "spool.segment_bytes"),
        (V2 + "[aggregates]\nwindow_s = 0\n", "aggregates.window_s"),
        (V2 + "[dedup]\nmax_entries = -1\n", "dedup.max_entries"),
        (V2 + '[http]\nlisten = "9464"\n', "http.listen"),
        (V2 + '[http]\nlisten = "0.0.0.0:99999"\n', "http.listen"),
        (V2 + "[forwarder]\nlinger_ms = 1.5\n", "forwarder.linger_ms"),
        (V2 + '[timestamps]\nmax_event_age = "30 days"\n', "timestamps.max_event_age"),
        (V2 + "[timestamps]\nmax_event_age = 30\n", "timestamps.max_event_age"),
        (V2 + '[timestamps]\nmax_future_skew = "0s"\n', "timestamps.max_future_skew"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_key_and_the_file(
    tmp_path: Path, text: str, named: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, GatewayConfig, "gateway", environ={})
    assert named in str(info.value) and str(path) in str(info.value)


def test_environment_overrides_name_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, V2)
    environ = {"TILLPULSE_GATEWAY__MQTT__PORT": "8883", "TILLPULSE_GATEWAY__HTTP__LISTEN": "[::]:0"}
    config = load_config(path, GatewayConfig, "gateway", environ=environ)
    assert (config.mqtt.port, config.http.address) == (8883, ("::", 0))
    with pytest.raises(ConfigError, match="TILLPULSE_GATEWAY__MQTT__PORT"):
        load_config(path, GatewayConfig, "gateway", environ={"TILLPULSE_GATEWAY__MQTT__PORT": "0"})


def test_secrets_come_from_files_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    v2 = InfluxSection(url="http://influxdb:8086", org="o", bucket="b", token_file=str(token_file))
    assert v2.token() == "from-file"
    monkeypatch.setenv(INFLUX_TOKEN_ENV, "from-env")
    assert InfluxSection(url="http://influxdb:8086", org="o", bucket="b").token() == "from-env"
    v1 = InfluxSection(url="http://influxdb:8086", dialect="v1", database="tp", username="gw")
    monkeypatch.delenv(INFLUX_PASSWORD_ENV, raising=False)
    with pytest.raises(ConfigError, match=INFLUX_PASSWORD_ENV):
        v1.password()
    assert InfluxSection(url="http://influxdb:8086", dialect="v1", database="tp").password() is None


def test_a_bad_duration_stops_the_gateway_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, V2 + '[timestamps]\nmax_event_age = "a month"\n')
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert run.stderr == (
        f"tillpulse gateway: config file {path}: timestamps.max_event_age: 'a month' is not a "
        "duration: numbers with units ms s m h d (e.g. '15m', '1h30m')\n"
    )
