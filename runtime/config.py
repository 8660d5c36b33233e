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
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from runtime.cli import OperatorError

C = TypeVar("C", bound=msgspec.Struct)


class ConfigError(OperatorError):
    """A config file that is missing, unreadable or invalid, or an override that is:
    the text names the file or the variable, the key, and the fix (exit 2)."""


def load_config(
    path: str | Path,
    schema: type[C],
    component: str,
    environ: Mapping[str, str] | None = None,
) -> C:
    """Read ``path``, apply ``TILLPULSE_<COMPONENT>__...`` overrides, validate into ``schema``."""
    path = Path(path)
    try:
        # utf-8-sig: a byte-order mark, as some Windows editors write, is not an error
        document = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist: write one (tillpulse {component} "
            "sample-config prints an example), or name another with --config FILE"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory: name the TOML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} cannot be read: not UTF-8 text (byte {exc.object[exc.start]:#04x} "
            f"at offset {exc.start}): save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"config file {path} cannot be read: {exc.strerror}: check the file and its "
            "permissions for this user"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not valid TOML: {exc}: fix it there (tillpulse "
            f"{component} sample-config shows the format)"
        ) from None

    prefix = f"TILLPULSE_{component.upper()}__"
    overrides = {
        tuple(name[len(prefix) :].lower().split("__")): (name, value)
        for name, value in (os.environ if environ is None else environ).items()
        if name.startswith(prefix)
    }
    for keys, (name, value) in sorted(overrides.items()):
        _set_path(document, keys, _parse_env_value(value), name)

    try:
        return msgspec.convert(document, schema)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(str(exc), schema, path, overrides, component)) from None


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


def _set_path(document: dict[str, Any], keys: tuple[str, ...], value: Any, variable: str) -> None:
    table = document
    for key in keys[:-1]:
        child = table.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(
                f"{variable}: {key} is a value, not a table: fix or unset the variable"
            )
        table = child
    table[keys[-1]] = value


def _explain(
    message: str,
    schema: type[msgspec.Struct],
    path: Path,
    overrides: Mapping[tuple[str, ...], tuple[str, str]],
    component: str,
) -> str:
    """msgspec's "<problem> - at `$.mqtt.port`" as a line naming the key, where its
    value came from (the file, or the environment variable that set it) and the fix."""
    problem, sep, location = message.rpartition(" - at `$.")
    if not sep:
        problem, location = message, ""
    table = [part for part in location.rstrip("`").split(".") if part]
    fields = _fields(schema, table)
    unknown = re.fullmatch(r"Object contains unknown field `(.+)`", problem)
    missing = re.fullmatch(r"Object missing required field `(.+)`", problem)
    named = re.match(r"(\w+): (.*)", problem)  # a __post_init__ naming its key
    if unknown:
        key = [*table, unknown.group(1)]
    elif named and named.group(1) in fields:
        key, problem = [*table, named.group(1)], named.group(2)
    else:
        key = table
    variable = _variable_of(tuple(part.partition("[")[0] for part in key), overrides)
    if unknown:
        section = f"[{'.'.join(table)}] " if table else ""
        text = f"no key {section}{key[-1]} (known: {', '.join(fields)})"
        if variable is not None:
            return f"{variable[0]}: {text}: fix the variable's name or unset it"
        return f"config file {path}: {text}: fix its spelling"
    where = f"{'.'.join(key)}: " if key else ""
    if variable is not None:
        name, value = variable
        return f"{name}={value}: {where}{problem}: fix or unset the variable"
    if named and named.group(1) in fields:  # a __post_init__ message says its own fix
        return f"config file {path}: {where}{problem}"
    fix = "add it" if missing else "fix it there"
    example = f"tillpulse {component} sample-config shows it"
    return f"config file {path}: {where}{problem}: {fix} ({example})"


def _variable_of(
    key: tuple[str, ...], overrides: Mapping[tuple[str, ...], tuple[str, str]]
) -> tuple[str, str] | None:
    """The override (variable, value) that set ``key`` or something inside it."""
    if not key:  # the whole document: no variable to blame
        return None
    if key in overrides:
        return overrides[key]
    inside = [overrides[keys] for keys in sorted(overrides) if keys[: len(key)] == key]
    return inside[0] if inside else None


def _fields(schema: type[msgspec.Struct], table: list[str]) -> list[str]:
    """The keys of the table at ``table`` (e.g. ``["mqtt", "tls"]``, ``["serial[0]"]``)."""
    current: Any = schema
    for part in table:
        name, _, index = part.partition("[")
        types = {field.name: field.type for field in msgspec.structs.fields(current)}
        current = _struct_of(types.get(name), index=bool(index))
        if current is None:
            return []
    return [field.name for field in msgspec.structs.fields(current)]


def _struct_of(annotation: Any, *, index: bool) -> Any:
    """The Struct inside ``annotation`` (through Annotated, ``| None`` and, for an
    indexed key, the list), or None."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            annotation = args[0] if len(args) == 1 else None
        elif index and origin in (list, tuple):
            annotation, index = typing.get_args(annotation)[0], False
        else:
            break
    is_struct = isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)
    return annotation if is_struct and not index else None
