"""What a documented command that cannot run here names, checked against the checkout.

    problems = check_command("sudo /opt/tillpulse/venv/bin/tillpulse edge check-config", compose)

- a `tillpulse` command (also ``.venv/bin/tillpulse``, ``/opt/tillpulse/venv/bin/tillpulse``,
  ``python -m <package>``, after ``docker-compose run --rm <service>``, whose image's
  entrypoint is `tillpulse`, and ``docker-compose exec <service>``) parses with the real
  command line, in this process (`parse_problem`): placeholders (``<agent>``) become a
  sample value, optional parts (``[--connect]``) are parsed as given;
- a docker-compose service or profile exists in docker-compose.yml (`Compose`);
- a ``make`` target exists in the Makefile;
- a path of the repository exists, and a wheel's file name has the project's version.

Each problem is one line naming the command and what is wrong.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from unittest import mock

from runtime.cli import Parser
from tests.doc_blocks import ROOT
from tillpulse import cli

PLACEHOLDER: Final = "sample"
_PACKAGES: Final = {component.package: name for name, component in cli.COMPONENTS.items()}
_MAKE_TARGET: Final = re.compile(r"^([\w.-]+):(?!=)", re.MULTILINE)
_WHEEL: Final = re.compile(r"tillpulse-([\w.]+)-py3-none-any\.whl")
_NOT_REPOSITORY: Final = {"build", "dist", ".venv", ".demo", ".state", "secrets"}


@dataclass(frozen=True)
class Compose:
    services: frozenset[str]
    profiles: frozenset[str]

    @classmethod
    def load(cls, compose: str) -> Compose:
        """docker-compose's own reading of docker-compose.yml, with .env.example."""
        listed = [
            subprocess.Popen(
                [compose, "--env-file", ".env.example", "config", what],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for what in ("--services", "--profiles")
        ]
        names = []
        for process in listed:
            out, err = process.communicate(timeout=60)
            assert process.returncode == 0, f"docker-compose config: {err}"
            names.append(frozenset(out.split()))
        return cls(*names)


class _Parsed(Exception):
    """Raised in place of running the command, once its arguments parsed."""


def parse_problem(argv: Sequence[str]) -> str | None:
    """Why ``tillpulse <argv>`` does not parse (its usage error), or None."""
    original = Parser.parse_args

    def parse_only(self: Parser, *args: Any, **kwargs: Any) -> Any:
        original(self, *args, **kwargs)
        raise _Parsed

    stderr = io.StringIO()
    with (
        mock.patch.object(Parser, "parse_args", parse_only),
        contextlib.redirect_stderr(stderr),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        try:
            code = cli.main(list(argv))
        except _Parsed:
            return None
        except SystemExit as exc:  # --help, --version: 0
            code = exc.code if isinstance(exc.code, int) else 2
    return None if code == 0 else stderr.getvalue().strip() or f"exit {code}"


def check_command(command: str, compose: Compose | None) -> list[str]:
    """The problems of one documented command (``a && b | c``: each part); ``compose``
    None: docker-compose is not installed, its names are not checked."""
    problems = [
        f"`{command}`: the wheel is tillpulse-{version}, not {wrong}"
        for wrong in _WHEEL.findall(command)
        if wrong != (version := _project_version()) and wrong != PLACEHOLDER
    ]
    text = re.sub(r"<[^>]+>", PLACEHOLDER, command)
    text = re.sub(r"\[(--?[^\]]*)\]", r"\1", text)  # [--connect]: parse it as given
    for part in re.split(r"&&|\|", text):
        argv = _command_of(shlex.split(part, comments=True))
        problems += [f"`{part.strip()}`: {p}" for p in _problems(argv, compose)]
    return problems


def _command_of(argv: list[str]) -> list[str]:
    """``argv`` without what runs it as someone else: sudo [-u USER], VAR=value."""
    while argv:
        if argv[0] == "sudo":
            argv = argv[3:] if argv[1:2] == ["-u"] else argv[1:]
        elif re.fullmatch(r"[A-Z_]+=\S*", argv[0]):
            argv = argv[1:]
        else:
            return argv
    return argv


def _problems(argv: list[str], compose: Compose | None) -> list[str]:
    if not argv:
        return []
    program = Path(argv[0]).name
    problems = [f"no {arg} in the repository" for arg in argv[1:] if _missing(arg)]
    if program == "cp" and not (ROOT / argv[1]).exists():
        problems.append(f"no {argv[1]} in the repository")
    if program == "tillpulse":
        problems += _parse(argv[1:])
    elif re.fullmatch(r"python3?", program) and argv[1:2] == ["-m"] and argv[2] in _PACKAGES:
        problems += _parse([_PACKAGES[argv[2]], *argv[3:]])
    elif program == "make":
        targets = set(_MAKE_TARGET.findall((ROOT / "Makefile").read_text(encoding="utf-8")))
        problems += [f"no make target {t}" for t in argv[1:] if "=" not in t and t not in targets]
    elif program in ("docker-compose", "docker") and compose is not None:
        problems += _compose_problems(argv[2:] if program == "docker" else argv[1:], compose)
    return problems


def _parse(argv: list[str]) -> list[str]:
    problem = parse_problem(argv)
    return [] if problem is None else [problem]


def _compose_problems(argv: list[str], compose: Compose) -> list[str]:
    """docker-compose [--profile P] COMMAND [options] [SERVICE [ARGS]]."""
    problems = []
    while argv[:1] == ["--profile"]:
        if argv[1] not in compose.profiles:
            problems.append(f"no compose profile {argv[1]}")
        argv = argv[2:]
    command, rest = argv[0], argv[1:]
    if command in ("run", "exec"):  # [options] SERVICE [COMMAND ...]
        at = next(i for i, arg in enumerate(rest) if not arg.startswith("-"))
        service, args = rest[at], rest[at + 1 :]
        if service not in compose.services:
            problems.append(f"no compose service {service}")
        if args and args[0] == "tillpulse":
            problems += _parse(args[1:])
        elif command == "run" and args and args[0] in cli.COMPONENTS:  # the image's entrypoint
            problems += _parse(args)
    elif command in ("up", "stop", "start", "restart", "logs", "ps", "build", "pull"):
        named = [arg for arg in rest if not arg.startswith("-")]
        problems += [f"no compose service {s}" for s in named if s not in compose.services]
    return problems


def _missing(arg: str) -> bool:
    """A relative path into the repository (``deploy/registry.toml``) that isn't there."""
    if arg.startswith(("-", "/")) or "/" not in arg or "://" in arg:
        return False
    top = arg.split("/", 1)[0]
    return top not in _NOT_REPOSITORY and (ROOT / top).exists() and not (ROOT / arg).exists()


def _project_version() -> str:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return str(pyproject["project"]["version"])
