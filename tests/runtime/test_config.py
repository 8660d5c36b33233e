from pathlib import Path

import msgspec
import pytest

from runtime.config import ConfigError, load_config, read_secret


class Mqtt(msgspec.Struct, forbid_unknown_fields=True):
    host: str
    port: int = 1883
    tls: bool = False


class Sample(msgspec.Struct, forbid_unknown_fields=True):
    site: str
    mqtt: Mqtt
    ports: list[str] = []


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sample.toml"
    path.write_text(text)
    return path


def test_valid_file_loads(tmp_path: Path) -> None:
    path = write(tmp_path, 'site = "s1"\n[mqtt]\nhost = "broker"\nport = 8883\n')
    assert load_config(path, Sample, "x", environ={}) == Sample("s1", Mqtt("broker", 8883))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('site = "s1"\n[mqtt]\nhost = "b"\nport = "x"\n', r"mqtt\.port: Expected `int`, got `str`"),
        ('site = "s1"\n[mqtt]\nhost = "b"\nprot = 1\n', r"mqtt: .*unknown field `prot`"),
        ('site = "s1"\n', r"missing required field `mqtt`"),
        ('site = "s1"\n[mqtt\nhost = "b"\n', r"not valid TOML"),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(path, Sample, "x", environ={})
    assert str(path) in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", Sample, "x", environ={})


def test_environment_overrides_single_keys_with_toml_typing(tmp_path: Path) -> None:
    path = write(tmp_path, 'site = "s1"\n[mqtt]\nhost = "b"\n')
    environ = {
        "TILLPULSE_X__MQTT__PORT": "8883",
        "TILLPULSE_X__MQTT__TLS": "true",
        "TILLPULSE_X__MQTT__HOST": "broker.local",
        "TILLPULSE_X__PORTS": '["/dev/ttyUSB0", "/dev/ttyUSB1"]',
        "TILLPULSE_OTHER__SITE": "ignored",
    }
    config = load_config(path, Sample, "x", environ=environ)
    assert config.mqtt == Mqtt("broker.local", 8883, True)
    assert config.ports == ["/dev/ttyUSB0", "/dev/ttyUSB1"]


def test_a_bad_override_names_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, 'site = "s1"\n[mqtt]\nhost = "b"\n')
    with pytest.raises(ConfigError, match="TILLPULSE_X__MQTT__PORT"):
        load_config(path, Sample, "x", environ={"TILLPULSE_X__MQTT__PORT": "eighty"})


def test_secrets_come_from_a_file_or_the_environment(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    assert read_secret(str(secret), "PW", environ={}) == "s3cret"
    assert read_secret(None, "PW", environ={"PW": "from-env"}) == "from-env"
    with pytest.raises(ConfigError, match="set PW"):
        read_secret(None, "PW", environ={})
    with pytest.raises(ConfigError, match="cannot be read"):
        read_secret(str(tmp_path / "missing"), "PW", environ={})
