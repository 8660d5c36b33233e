"""The gateway's error hierarchy."""

from __future__ import annotations

from runtime.cli import OperatorError


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose."""


class StartError(GatewayError, OperatorError):
    """The gateway cannot start as configured (a listen address in use, a state
    directory another gateway holds): the text names the key and the fix (exit 2)."""


class SpoolError(GatewayError):
    """The spool directory cannot be used; the text names the file and the cause."""


class SpoolLockedError(SpoolError):
    """Another process has the spool directory open (one owner per directory)."""


class SpoolCorruptError(SpoolError):
    """A record that is not a torn tail failed its check: the text names file and offset.

    Only the end of the newest segment can be torn by a crash; a bad record
    anywhere else is damage that needs a person, so the spool refuses to guess.
    """


class SpoolFullError(SpoolError):
    """Nothing was appended: the spool is at ``max_bytes``, or the disk is full or
    failing (ENOSPC, EDQUOT, EIO). It goes away by itself once there is room.

    The caller applies back-pressure: it does not acknowledge the MQTT
    messages behind the append, so the broker keeps them in the session.
    """
