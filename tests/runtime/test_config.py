from pathlib import Path

import msgspec
import pytest

from runtime.cli import EXIT_USAGE, OperatorError
from runtime.config import ConfigError, load_config, read_secret
from runtime.durations import parse_duration


class Mqtt(msgspec.Struct, forbid_unknown_fields=True):
    host: str
    port: int = 1883
    tls: bool = False


class Sample(msgspec.Struct, forbid_unknown_fields=True):
    site: str
    mqtt: Mqtt
    ports: list[str] = []
    window: str = "1h"

    def __post_init__(self) -> None:
        try:
            parse_duration(self.window)
        except ValueError as exc:
            raise ValueError(f"window: {exc}") from None


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sample.toml"
    path.write_bytes(text.encode("latin-1" if "\xe9" in text else "utf-8"))
    return path


def test_valid_file_loads(tmp_path: Path) -> None:
    path = write(tmp_path, 'site = "s1"\n[mqtt]\nhost = "broker"\nport = 8883\n')
    assert load_config(path, Sample, "x", environ={}) == Sample("s1", Mqtt("broker", 8883))


def test_a_byte_order_mark_as_windows_editors_write_it_is_no_error(tmp_path: Path) -> None:
    path = tmp_path / "sample.toml"
    path.write_bytes(b'\xef\xbb\xbfsite = "s1"\n[mqtt]\nhost = "broker"\n')
    assert load_config(path, Sample, "x", environ={}) == Sample("s1", Mqtt("broker"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'site = "s1"\n[mqtt]\nhost = "b"\nport = "x"\n',
            r"mqtt\.port: Expected `int`, got `str`: fix it there \(tillpulse x sample-config",
        ),
        (
            'site = "s1"\n[mqtt]\nhost = "b"\nprot = 1\n',
            r"no key \[mqtt\] prot \(known: host, port, tls\): fix its spelling",
        ),
        ('site = "s1"\n[mqtt]\nhost = "b"\n[mqtt.tls]\n', r"mqtt\.tls: Expected `bool`"),
        ('site = "s1"\n', r"missing required field `mqtt`: add it \(tillpulse x sample-config"),
        ('site = "s1"\n[mqtt\nhost = "b"\n', r"not valid TOML: .*: fix it there"),
        ('site = "caf\xe9"\n', r"not UTF-8 text \(byte 0xe9 at offset 11\): save it as UTF-8"),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(path, Sample, "x", environ={})
    assert str(path) in str(info.value)


def test_missing_file_is_a_clear_error_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist: .*tillpulse x sample-config"):
        load_config(tmp_path / "nope.toml", Sample, "x", environ={})
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, Sample, "x", environ={})


def test_a_config_error_is_an_operator_error_exit_2() -> None:
    assert issubclass(ConfigError, OperatorError) and ConfigError("x").exit_code == EXIT_USAGE


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


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "TILLPULSE_X__MQTT__PORT",
            "eighty",
            "TILLPULSE_X__MQTT__PORT=eighty: mqtt.port: Expected `int`, got `str`: "
            "fix or unset the variable",
        ),
        (
            "TILLPULSE_X__MQTT__HOTS",
            "b",
            "TILLPULSE_X__MQTT__HOTS: no key [mqtt] hots (known: host, port, tls): "
            "fix the variable's name or unset it",
        ),
        (
            "TILLPULSE_X__MQQT__HOST",
            "b",
            "TILLPULSE_X__MQQT__HOST: no key mqqt (known: site, mqtt, ports, window): "
            "fix the variable's name or unset it",
        ),
        (
            "TILLPULSE_X__WINDOW",
            "soon",
            "TILLPULSE_X__WINDOW=soon: window: 'soon' is not a duration: numbers with units "
            "ms s m h d (e.g. '15m', '1h30m'): fix or unset the variable",
        ),
        (
            "TILLPULSE_X__SITE__NAME",
            "b",
            "TILLPULSE_X__SITE__NAME: site is a value, not a table: fix or unset the variable",
        ),
    ],
)
def test_a_bad_override_blames_the_variable_not_the_file(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    path = write(tmp_path, 'site = "s1"\n[mqtt]\nhost = "b"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, Sample, "x", environ={variable: value})
    assert str(info.value) == expected


def test_a_key_checked_after_loading_is_named_with_its_table(tmp_path: Path) -> None:
    path = write(tmp_path, 'site = "s1"\nwindow = "soon"\n[mqtt]\nhost = "b"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, Sample, "x", environ={})
    assert str(info.value) == (
        f"config file {path}: window: 'soon' is not a duration: numbers with units ms s m h d "
        "(e.g. '15m', '1h30m')"
    )


def test_secrets_come_from_a_file_or_the_environment(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    assert read_secret(str(secret), "PW", environ={}) == "s3cret"
    assert read_secret(None, "PW", environ={"PW": "from-env"}) == "from-env"
    with pytest.raises(ConfigError, match="set PW"):
        read_secret(None, "PW", environ={})
    with pytest.raises(ConfigError, match="cannot be read"):
        read_secret(str(tmp_path / "missing"), "PW", environ={})
