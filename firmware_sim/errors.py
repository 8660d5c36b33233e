"""The simulator's error hierarchy."""


class SimError(Exception):
    """Base class of every error the simulator raises on purpose."""


class ScenarioError(SimError):
    """A scenario file that cannot be read or is invalid; the text names file and key."""


class LinkError(SimError):
    """The serial link to the edge agent cannot be opened or has failed."""


class OutputError(SimError):
    """A file the run was asked to write (events, labels, ports) cannot be written;
    the text names the option, the path and what to do."""
