"""A bounded memory of recently rejected messages, so that a rejection sticks.

A message the broker redelivers (its MQTT dup flag set: the gateway got it
before but the PUBACK never reached the broker, e.g. across a reconnect) that
was rejected the first time is recognised here by a digest of its topic and
payload: the ingest acknowledges it without processing, keeping or
re-publishing it again. Only digests are kept (never payload bytes, which may
be hostile), at most ``capacity`` of them, the oldest forgotten first; a
forgotten one is just rejected once more.
"""

from __future__ import annotations

import hashlib
from typing import Final

DEFAULT_CAPACITY: Final = 4096  # ~100 bytes each; far more than one in-flight window


class RejectionMemory:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._digests: dict[bytes, None] = {}  # insertion-ordered: oldest first

    def remember(self, topic: str, payload: bytes) -> None:
        digest = _digest(topic, payload)
        self._digests.pop(digest, None)
        self._digests[digest] = None
        if len(self._digests) > self._capacity:
            del self._digests[next(iter(self._digests))]

    def holds(self, topic: str, payload: bytes) -> bool:
        return _digest(topic, payload) in self._digests


def _digest(topic: str, payload: bytes) -> bytes:
    digest = hashlib.blake2b(topic.encode("utf-8", "surrogatepass"), digest_size=16)
    digest.update(b"\x00")  # topics never hold NUL: no topic/payload split is ambiguous
    digest.update(payload)
    return digest.digest()
