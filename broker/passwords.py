"""Mosquitto password files, without mosquitto_passwd (it is not on an ops laptop).

Mosquitto 2.0 stores one ``username:hash`` line per account, the hash being
``$7$<iterations>$<base64 salt>$<base64 hash>``: PBKDF2-HMAC-SHA512 over the password,
64 bytes, with a 12-byte random salt and 101 iterations, which is what
``mosquitto_passwd`` writes (tests/broker checks both against the real broker).
A `PasswordFile` keeps every line it does not change as it was, in order: the
service accounts written by the broker container's entrypoint are not ours.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Final

ITERATIONS: Final = 101  # mosquitto_passwd's default for $7$
SALT_BYTES: Final = 12
PASSWORD_BYTES: Final = 24  # of randomness in a new password: 32 URL-safe characters


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The password file's hash of ``password`` (a new random salt unless given)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return f"$7${ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


class PasswordFile:
    """A password file's lines; ``set`` and ``remove`` change one account's line."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()

    def __contains__(self, username: object) -> bool:
        return any(_username(line) == username for line in self._lines)

    def set(self, username: str, password: str) -> None:
        """Give ``username`` this password: its line replaced, or a new line at the end."""
        line = f"{username}:{hash_password(password)}"
        self._lines = [line if _username(old) == username else old for old in self._lines]
        if line not in self._lines:
            self._lines.append(line)

    def remove(self, username: str) -> bool:
        """Remove ``username``'s line; whether it had one."""
        kept = [line for line in self._lines if _username(line) != username]
        removed = len(kept) != len(self._lines)
        self._lines = kept
        return removed

    def text(self) -> str:
        return "".join(f"{line}\n" for line in self._lines)


def _username(line: str) -> str | None:
    name, sep, _ = line.partition(":")
    return name if sep and not line.startswith("#") else None
