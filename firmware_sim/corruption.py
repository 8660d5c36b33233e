"""Damaged data on demand: corrupted frames and line noise for the serial link, a
mangled payload for MQTT. Each is built so the receiver is certain to reject it,
which lets a test compare the sender's count with the receiver's exactly."""

from __future__ import annotations

import binascii
import random
from typing import Final

from cobs import cobs

from wire.framing import DELIMITER, FrameDecoder

_CRC_INIT: Final = 0xFFFF
NOISE_BYTES: Final = (1, 24)


def corrupt_frame(payload: bytes, rng: random.Random) -> bytes:
    """A frame for ``payload`` with one payload bit flipped after the CRC was computed.

    The COBS layer is intact, so the receiver sees exactly one chunk, and a single
    bit error is always caught by CRC-16: it counts exactly one ``frames_bad_crc``.
    """
    body = bytearray(payload + binascii.crc_hqx(payload, _CRC_INIT).to_bytes(2, "big"))
    position = rng.randrange(len(payload))
    body[position] ^= 1 << rng.randrange(8)
    encoded: bytes = cobs.encode(bytes(body))
    return DELIMITER + encoded + DELIMITER


def noise_burst(rng: random.Random) -> bytes:
    """A burst of line noise, delimited so that it is exactly one rejected chunk.

    Noise bytes are never 0x00 (that would split it into several chunks); a burst
    that happens to be a valid frame (odds about 2**-16) is drawn again.
    """
    while True:
        noise = bytes(rng.randint(1, 255) for _ in range(rng.randint(*NOISE_BYTES)))
        burst = DELIMITER + noise + DELIMITER
        if not FrameDecoder().feed(DELIMITER + burst):
            return burst


def mangle_payload(payload: bytes, rng: random.Random) -> bytes:
    """``payload`` cut short: a JSON document without its end, which no decoder accepts."""
    return payload[: rng.randrange(1, len(payload))]
