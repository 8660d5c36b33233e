"""The simulator's error hierarchy: operator errors (`runtime.cli`), so the command
line prints each as one line with its exit code."""

from runtime.cli import EXIT_FAILED, OperatorError


class SimError(OperatorError):
    """Base class of every error the simulator raises on purpose (exit 2 unless a
    subclass says otherwise)."""


class ScenarioError(SimError):
    """A scenario file that cannot be read or is invalid, or does not fit the run; the
    text names file and key."""


class LinkError(SimError):
    """The serial link to the edge agent cannot be opened or has failed."""

    exit_code = EXIT_FAILED


class OutputError(SimError):
    """A file the run was asked to write (events, labels, ports) cannot be written;
    the text names the option, the path and what to do."""
