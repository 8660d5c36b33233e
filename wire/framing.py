"""Serial framing between a device and its edge agent.

One frame on the wire::

    0x00 | COBS( payload | CRC-16 big-endian ) | 0x00

* ``payload``: 1 to `MAX_PAYLOAD` (4093) bytes, opaque to this layer (an encoded
  `wire.messages` message).
* CRC: CRC-16/GENIBUS (poly 0x1021, init 0xFFFF, not reflected, final XOR
  0xFFFF; check value 0xD64E for ``b"123456789"``) over the payload, appended
  big-endian. That is CRC-16/CCITT-FALSE with its result inverted, computed
  as `binascii.crc_hqx(payload, 0xFFFF) ^ 0xFFFF`. The decoder recomputes it
  over the payload and compares it with the 2 bytes received.
* COBS (Consistent Overhead Byte Stuffing, via the ``cobs`` package) removes
  every 0x00 from payload + CRC, at a cost of 1 byte per 254 (at most 17 bytes
  for the largest frame), so 0x00 can only ever be a frame delimiter.
* A 0x00 delimiter before *and* after the body.

Why a leading delimiter: without it, anything the line carries between two
frames (noise, a glitch, a device rebooting, an agent opening the port in the
middle of a frame) is glued to the front of the *next* frame and takes that
good frame down with it. With it, the noise is closed off as a chunk of its
own, rejected and counted, and the next frame arrives intact. It also lets the
decoder start unsynchronised: whatever it sees before its first 0x00 is a
fragment and is discarded without being counted as a bad frame, and no frame
is lost because every frame starts with a 0x00. The price is one byte per
frame (about 1% of a 100-byte event; nothing at 115200 baud). Back-to-back
frames therefore show ``00 00`` between them: an empty chunk, which the
decoder treats as idle line, never as an error. A sender that omits the
leading delimiter still interoperates, but loses these benefits, and the
first frame a fresh decoder hears from it is taken for a fragment.

Why 4093 bytes: CRC-16/CCITT's generator is (x + 1) times a primitive
polynomial of degree 15, so it detects every error of 1, 2 or 3 bits (and any
odd number of bits, and any burst of up to 16 bits) as long as payload + CRC
is at most 32767 bits. 4093 + 2 bytes is the largest frame inside that bound;
from a 4094-byte payload on, two flipped bits 32767 bits apart go undetected.
This depends on the generator alone: the initial value and the final XOR
cancel out between a sent and a received frame of the same length. The
guarantee is about bits of payload + CRC: a line error that hits a COBS code
byte scrambles the decoded block structure and is caught with probability
1 - 2**-16 (by COBS itself or by the CRC), not with certainty.

The final XOR makes trailing zero bytes count: appending 0x00 bytes to payload
+ CRC, or removing them from its end, always breaks the CRC (without it, as in
plain CCITT-FALSE, it never does). So a trailing delimiter flipped to 0x01, or
a lost final COBS byte, can no longer deliver a payload a byte longer or
shorter: the frame is rejected (or, for a 0x01 right after a full 254-byte
COBS block, which decodes to nothing, delivered exactly as sent).

`FrameDecoder` is a streaming decoder for one serial port. It never raises on
input; every non-empty chunk between two delimiters is either returned as a
payload or counted in exactly one `FrameStats` counter, checked in this
order: too long to be a frame (``frames_oversize``), not valid COBS
(``frames_bad_cobs``), decoded body under 3 bytes (``frames_too_short``),
payload over `MAX_PAYLOAD` (``frames_oversize``), CRC mismatch
(``frames_bad_crc``). A run of more than `MAX_ENCODED_LEN` bytes with no
delimiter is counted once as ``frames_oversize`` and dropped, with everything
after it up to the next delimiter, so the decoder's buffer never holds more
than `MAX_ENCODED_LEN` bytes. The hot path splits on the delimiter with
`bytes.split` and does COBS and CRC in C: there is no per-byte Python loop.
A decoder is not thread-safe; use one per port.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Final

import msgspec
from cobs import cobs

from wire.errors import FrameError

__all__ = [
    "DELIMITER",
    "MAX_ENCODED_LEN",
    "MAX_FRAME_LEN",
    "MAX_PAYLOAD",
    "FrameDecoder",
    "FrameStats",
    "encode_frame",
]

DELIMITER: Final = b"\x00"
"""The frame delimiter: the only byte COBS never emits."""

MAX_PAYLOAD: Final = 4093
"""Largest payload in one frame, in bytes (see the module docstring for why)."""

_CRC_LEN: Final = 2
_CRC_INIT: Final = 0xFFFF
_CRC_XOROUT: Final = 0xFFFF
_MIN_BODY: Final = 1 + _CRC_LEN  # a non-empty payload and its CRC
_MAX_BODY: Final = MAX_PAYLOAD + _CRC_LEN

MAX_ENCODED_LEN: Final = _MAX_BODY + (_MAX_BODY + 253) // 254  # 4112
"""Largest COBS-encoded body (the bytes between two delimiters) of a valid frame."""

MAX_FRAME_LEN: Final = MAX_ENCODED_LEN + 2 * len(DELIMITER)  # 4114
"""Largest frame on the wire, both delimiters included."""

# Typed views of the untyped ``cobs`` package (C extension when available).
_cobs_encode: Callable[[bytes], bytes] = cobs.encode
_cobs_decode: Callable[[bytes], bytes] = cobs.decode
_CobsDecodeError: type[Exception] = cobs.DecodeError


def encode_frame(payload: bytes) -> bytes:
    """Return the wire frame for ``payload``: ``00 | COBS(payload | CRC-16 BE) | 00``.

    Raises `FrameError` if ``payload`` is empty or longer than `MAX_PAYLOAD`.
    """
    size = len(payload)
    if size == 0:
        raise FrameError("cannot frame an empty payload: a frame carries 1 or more bytes")
    if size > MAX_PAYLOAD:
        raise FrameError(
            f"payload of {size} bytes is over the {MAX_PAYLOAD}-byte frame limit"
            " (wire.framing.MAX_PAYLOAD)"
        )
    crc = binascii.crc_hqx(payload, _CRC_INIT) ^ _CRC_XOROUT
    body = bytes(payload) + crc.to_bytes(_CRC_LEN, "big")
    return b"".join((DELIMITER, _cobs_encode(body), DELIMITER))


class FrameStats(msgspec.Struct, kw_only=True):
    """What a `FrameDecoder` has seen. Every non-empty chunk between two delimiters
    lands in exactly one ``frames_*`` counter; empty chunks (idle line) in none."""

    frames_ok: int = 0
    """Frames whose payload was returned."""
    frames_bad_cobs: int = 0
    """Chunks that are not valid COBS (a length code runs past the chunk's end)."""
    frames_bad_crc: int = 0
    """Chunks that decode but whose CRC-16 does not match."""
    frames_too_short: int = 0
    """Chunks that decode to fewer than 3 bytes: no room for a payload and a CRC."""
    frames_oversize: int = 0
    """Chunks longer than any valid frame, including each run of more than
    `MAX_ENCODED_LEN` bytes without a delimiter (counted once per run)."""
    bytes_discarded: int = 0
    """Bytes, delimiters excluded, that were not part of a returned frame: rejected
    chunks, overflowing runs, and the fragment before the first delimiter."""

    @property
    def frames_bad(self) -> int:
        """All rejected chunks, whatever the reason."""
        return (
            self.frames_bad_cobs
            + self.frames_bad_crc
            + self.frames_too_short
            + self.frames_oversize
        )


class FrameDecoder:
    """Streaming decoder for one serial link: bytes in, intact payloads out.

    `feed` accepts any chunking of the byte stream and never raises. The decoder
    starts unsynchronised: bytes before the first delimiter are a fragment of a
    frame sent before it started listening and are discarded (counted in
    ``bytes_discarded`` only). Not thread-safe: one decoder per port.
    """

    __slots__ = ("_buf", "_hunting", "_stats")

    def __init__(self) -> None:
        self._buf = bytearray()  # the chunk in progress: bytes since the last delimiter
        self._hunting = True  # discarding until the next delimiter (start, or after overflow)
        self._stats = FrameStats()

    @property
    def stats(self) -> FrameStats:
        """A snapshot of the counters (later feeds do not change it)."""
        return msgspec.structs.replace(self._stats)

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame; never more than `MAX_ENCODED_LEN`."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Consume ``data`` and return the payloads of the frames it completes, in order."""
        out: list[bytes] = []
        if not data:
            return out
        parts = bytes(data).split(DELIMITER)
        tail = parts.pop()  # bytes after the last delimiter: the start of the next chunk
        stats = self._stats
        if parts:
            # parts[0] ends the chunk in progress; the rest are whole chunks.
            buf = self._buf
            if self._hunting:
                stats.bytes_discarded += len(parts[0])
                parts[0] = b""
                self._hunting = False
            elif buf:
                if len(buf) + len(parts[0]) > MAX_ENCODED_LEN:
                    stats.frames_oversize += 1
                    stats.bytes_discarded += len(buf) + len(parts[0])
                    parts[0] = b""
                else:
                    parts[0] = b"".join((buf, parts[0]))
                buf.clear()
            self._decode_chunks(parts, out, stats)
        self._keep(tail, stats)
        return out

    def _keep(self, tail: bytes, stats: FrameStats) -> None:
        """Buffer ``tail`` (undelimited bytes), or drop it if it overflows the bound."""
        if not tail:
            return
        if self._hunting:
            stats.bytes_discarded += len(tail)
        elif len(self._buf) + len(tail) > MAX_ENCODED_LEN:
            # Count the whole delimiter-less run once; drop the rest of it as it comes.
            stats.frames_oversize += 1
            stats.bytes_discarded += len(self._buf) + len(tail)
            self._buf.clear()
            self._hunting = True
        else:
            self._buf += tail

    @staticmethod
    def _decode_chunks(chunks: list[bytes], out: list[bytes], stats: FrameStats) -> None:
        """Decode delimited chunks into ``out``; count each rejected one in ``stats``."""
        decode = _cobs_decode
        crc = binascii.crc_hqx
        append = out.append
        returned_before = len(out)
        discarded = bad_cobs = too_short = oversize = bad_crc = 0
        for chunk in chunks:
            if not chunk:
                continue  # two delimiters in a row: idle line
            if len(chunk) > MAX_ENCODED_LEN:
                oversize += 1
                discarded += len(chunk)
                continue
            try:
                body = decode(chunk)
            except _CobsDecodeError:
                bad_cobs += 1
                discarded += len(chunk)
                continue
            size = len(body)
            if size < _MIN_BODY:
                too_short += 1
                discarded += len(chunk)
            elif size > _MAX_BODY:
                oversize += 1
                discarded += len(chunk)
            else:
                payload = body[:-_CRC_LEN]
                if crc(payload, _CRC_INIT) ^ _CRC_XOROUT != (body[-2] << 8 | body[-1]):
                    bad_crc += 1
                    discarded += len(chunk)
                else:
                    append(payload)
        stats.frames_ok += len(out) - returned_before
        stats.frames_bad_cobs += bad_cobs
        stats.frames_bad_crc += bad_crc
        stats.frames_too_short += too_short
        stats.frames_oversize += oversize
        stats.bytes_discarded += discarded
