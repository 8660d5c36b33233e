"""The broker tool's error hierarchy: every one is an operator's problem, told in one line."""


class BrokerError(Exception):
    """Base class of every error the broker tool raises on purpose; its text names the
    problem and the fix."""


class RegistryError(BrokerError):
    """The registry file is unreadable or invalid; the text names the file, entry and key."""


class ProvisionError(BrokerError):
    """The broker's files could not be written, or the broker could not be reloaded."""
