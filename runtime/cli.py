"""The command-line convention every ``tillpulse`` component follows.

    parser = component_parser("gateway", __doc__)        # the global options, anywhere
    commands = add_commands(parser)
    run = add_command(commands, "gateway", "run", "MQTT -> ... -> InfluxDB", config=True)
    args = parser.parse_args(argv)
    return run_command("tillpulse gateway", lambda: _run(args), debug=args.debug)

Global options (`GLOBAL_OPTIONS`), accepted before and after the subcommand:
``-c/--config`` (default ``/etc/tillpulse/<component>.toml``, on the commands that
read one), ``--log-level`` (its choices), ``--log-json``, ``-q/--quiet``,
``-v/--verbose`` and ``--debug`` (a traceback instead of the one line, for a bug
report).

Exit codes, the same for every component (README.md, "Command line"):

    0    ok
    1    runtime failure: a server unreachable, a job that failed
    2    usage or config: a bad flag, value, file, directory or key
    4    not running (``status``: no fresh status)
    130  interrupted (Ctrl-C, SIGTERM before the work started)

An `OperatorError` (or a subclass) carries its exit code and a message that names
the problem (path, key or variable) and the fix; `run_command` prints it as one
line on stderr. Anything else escaping a command is a bug: one line saying so,
with where it was raised, exit 1; the traceback only with ``--debug``. An OSError of
the machine (a full disk, a read-only file system, a failing disk) is one line with
the fix, exit 2, as a directory it cannot write is.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable
from typing import Any, Final, NoReturn, TypeAlias

from runtime.logs import raised_at

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_NOT_RUNNING: Final = 4
EXIT_INTERRUPTED: Final = 130

# An OSError of the machine, not of our code: one line with the fix, exit 2.
MACHINE_ERRORS: Final = {
    errno.ENOSPC: "free space on that disk (df -h), or write elsewhere",
    errno.EDQUOT: "raise the user's disk quota or free space, or write elsewhere",
    errno.EROFS: "the file system is read-only: remount it read-write, or write elsewhere",
    errno.EIO: "the disk or device failed: check it (dmesg)",
}

# What add_subparsers returns (argparse documents the object, not the class name);
# subscripted for the type checker only.
Commands: TypeAlias = "argparse._SubParsersAction[Parser]"

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
GLOBAL_OPTIONS: Final = (
    "-c/--config",
    "--log-level",
    "--log-json",
    "-q/--quiet",
    "-v/--verbose",
    "--debug",
)


class OperatorError(Exception):
    """A mistake or a condition an operator fixes: the message names what and how."""

    exit_code: int = EXIT_USAGE

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class RuntimeFailure(OperatorError):
    """The work failed (a server unreachable, a job that could not finish): exit 1."""

    exit_code = EXIT_FAILED


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are one line (the problem and where to
    look) instead of the usage block and the problem, and which takes no abbreviated
    option (``--terminal 5`` silently meaning ``--terminals 5`` ran a full demo)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def default_config(component: str) -> str:
    return f"/etc/tillpulse/{component}.toml"


def _global_options(*, top: bool) -> Parser:
    """The global options as a parent parser. On the subcommands their defaults are
    SUPPRESS, so an option given before the subcommand is not reset by the
    subcommand's parser; the component parser holds the real defaults."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    options = Parser(add_help=False)
    group = options.add_argument_group("global options (before or after the command)")
    group.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        type=str.lower,
        default=default("info"),
        help="the least severe log lines shown (default info)",
    )
    group.add_argument(
        "--log-json", action="store_true", default=default(False), help="log lines as JSON"
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="warnings and errors only; no progress",
    )
    group.add_argument(
        "-v", "--verbose", action="store_true", default=default(False), help="debug log lines"
    )
    group.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="on an error, the traceback too (for a bug report)",
    )
    return options


def component_parser(component: str, description: str | None) -> Parser:
    """The parser of ``tillpulse <component>`` with the global options."""
    return Parser(
        prog=f"tillpulse {component}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_global_options(top=True)],
    )


def add_commands(parser: Parser) -> Commands:
    """The subcommands of ``parser``, one of which is required."""
    return parser.add_subparsers(dest="command", metavar="COMMAND", required=True)


def add_command(
    commands: Commands,
    component: str,
    name: str,
    help_text: str,
    *,
    config: bool = False,
) -> Parser:
    """A subcommand taking the global options too; with ``config``, ``-c/--config``
    defaulting to ``/etc/tillpulse/<component>.toml``."""
    command: Parser = commands.add_parser(
        name,
        help=help_text,
        description=help_text,
        parents=[_global_options(top=False)],
    )
    if config:
        command.add_argument(
            "-c",
            "--config",
            default=default_config(component),
            metavar="FILE",
            help=f"the TOML config file (default {default_config(component)})",
        )
    return command


def log_level(args: argparse.Namespace) -> str:
    """``--log-level``, overridden by ``-v`` (debug) and ``-q`` (warning)."""
    if getattr(args, "verbose", False):
        return "debug"
    if getattr(args, "quiet", False):
        return "warning"
    return str(getattr(args, "log_level", "info"))


def run_command(prog: str, work: Callable[[], int], *, debug: bool) -> int:
    """Run ``work``; an operator error becomes its one line and exit code, Ctrl-C 130,
    a bug one line naming where it was raised (its traceback with ``debug``)."""
    try:
        return work()
    except OperatorError as exc:
        if debug:
            raise
        sys.stderr.write(f"{prog}: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `... | head`: the reader is gone, nothing to say
        return EXIT_FAILED
    except Exception as exc:
        if debug:
            raise
        if isinstance(exc, OSError) and exc.errno in MACHINE_ERRORS:
            where = exc.filename or "a file or stdout"  # a write to an open file names none
            sys.stderr.write(f"{prog}: {exc.strerror} ({where}): {MACHINE_ERRORS[exc.errno]}\n")
            return EXIT_USAGE  # as a directory it cannot write: retrying will not help
        sys.stderr.write(
            f"{prog}: internal error: {type(exc).__name__}: {str(exc)[:300]} "
            f"(at {raised_at(exc)}); run again with --debug for the traceback and "
            "report it\n"
        )
        return EXIT_FAILED
