"""Loading a component's TOML config file: validated, with env-var overrides.

Every component describes its config as msgspec Structs (with
``forbid_unknown_fields=True``, so a misspelt key is an error) and loads it
with `load_config`. Environment variables override single keys:
``TILLPULSE_EDGE__MQTT__PORT=8883`` sets ``[mqtt] port`` of the ``edge``
config; a value is read as a TOML value when it parses as one (``8883``,
``true``, ``[1, 2]``) and as a plain string otherwise. Errors name the key,
the file and, for an override, the variable.

Secrets never live in the file or on the command line: a config names a file
holding the secret, or the secret comes from an environment variable
(`read_secret`); neither is logged.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

C = TypeVar("C", bound=msgspec.Struct)


class ConfigError(Exception):
    """A config file that is missing, unreadable or invalid; the text says where."""


def load_config(
    path: str | Path,
    schema: type[C],
    component: str,
    environ: Mapping[str, str] | None = None,
) -> C:
    """Read ``path``, apply ``TILLPULSE_<COMPONENT>__...`` overrides, validate into ``schema``."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None

    prefix = f"TILLPULSE_{component.upper()}__"
    overrides = {
        name: value
        for name, value in (os.environ if environ is None else environ).items()
        if name.startswith(prefix)
    }
    for name, value in sorted(overrides.items()):
        _set_path(document, name[len(prefix) :].lower().split("__"), _parse_env_value(value))

    try:
        return msgspec.convert(document, schema)
    except msgspec.ValidationError as exc:
        where = _override_hint(str(exc), overrides, prefix)
        raise ConfigError(f"config file {path}: {_readable(str(exc))}{where}") from None


def read_secret(file: str | None, env_var: str, environ: Mapping[str, str] | None = None) -> str:
    """A secret from ``file`` (first line, stripped) or else the variable ``env_var``."""
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise ConfigError(f"secret file {file} cannot be read: {exc}") from None
    value = (os.environ if environ is None else environ).get(env_var)
    if not value:
        raise ConfigError(f"no secret: set {env_var} or name a file in the config")
    return value


def _parse_env_value(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _set_path(document: dict[str, Any], keys: list[str], value: Any) -> None:
    table = document
    for key in keys[:-1]:
        child = table.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override of {'.'.join(keys)}: {key} is not a table")
        table = child
    table[keys[-1]] = value


def _readable(message: str) -> str:
    """msgspec's "... - at `$.mqtt.port`" as "mqtt.port: ..."."""
    text, sep, location = message.rpartition(" - at `$.")
    if not sep:
        return message
    return f"{location.rstrip('`')}: {text}"


def _override_hint(message: str, overrides: Mapping[str, str], prefix: str) -> str:
    location = message.rpartition(" - at `$.")[2].rstrip("`")
    variable = prefix + location.replace(".", "__").upper()
    if location and variable in overrides:
        return f" (set by environment variable {variable})"
    return ""
