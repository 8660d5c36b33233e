"""Serial framing: encode_frame and the streaming FrameDecoder.

The decoder is checked against `reference_decode`, the frame contract applied
to a whole stream at once (split on 0x00, judge every chunk), so the streaming
machinery (buffering, overflow, resync) must agree with it for every chunking.
On top of that, the properties the contract promises are asserted directly.

What CRC-16/GENIBUS can and cannot promise, and how the tests stay exact:

* Errors of 1 to 3 bits in payload + CRC are always caught. Flips of COBS data
  bytes that leave them non-zero keep the COBS structure and become exactly
  such errors, so they get exact per-frame counts
  (`test_data_byte_flips_are_each_counted_as_one_bad_crc`).
* Zero bytes appended to payload + CRC, or removed from its end, are always
  caught (the final XOR's job): a trailing delimiter turned into 0x01, or a
  lost final COBS byte, gets the frame rejected, never delivered a byte longer
  or shorter (`test_zero_bytes_*`).
* Any other corrupted chunk passes the CRC with probability about 2**-16. The
  property tests discard (with `assume`) the rare example where that happens:
  it is CRC-16 working as specified, not a decoder fault. Nothing else that
  was not sent may ever come out.
"""

from __future__ import annotations

import binascii
import itertools
from collections.abc import Sequence

import msgspec
import pytest
from cobs import cobs
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from wire.errors import FrameError, MessageDecodeError, WireError
from wire.framing import (
    MAX_ENCODED_LEN,
    MAX_FRAME_LEN,
    MAX_PAYLOAD,
    FrameDecoder,
    FrameStats,
    encode_frame,
)
from wire.messages import LinkAck, decode_as, encode
from wire.topics import Stream

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

PAYLOADS = st.binary(min_size=1, max_size=600)
NON_ZERO_BYTES = st.binary(max_size=64).map(lambda b: b.replace(b"\x00", b"\x01"))


# --- helpers -----------------------------------------------------------------


def reference_decode(stream: bytes) -> tuple[list[bytes], FrameStats, int]:
    """The frame contract applied to a whole stream: (payloads, stats, bytes left buffered)."""
    stats = FrameStats()
    parts = stream.split(b"\x00")
    if len(parts) == 1:  # never synchronised: all of it is a fragment
        stats.bytes_discarded = len(stream)
        return [], stats, 0
    first, *chunks, last = parts
    stats.bytes_discarded += len(first)
    out: list[bytes] = []
    for chunk in chunks:
        if not chunk:
            continue
        payload = _judge(chunk, stats)
        if payload is None:
            stats.bytes_discarded += len(chunk)
        else:
            out.append(payload)
            stats.frames_ok += 1
    buffered = len(last)
    if buffered > MAX_ENCODED_LEN:
        stats.frames_oversize += 1
        stats.bytes_discarded += buffered
        buffered = 0
    return out, stats, buffered


def _judge(chunk: bytes, stats: FrameStats) -> bytes | None:
    if len(chunk) > MAX_ENCODED_LEN:
        stats.frames_oversize += 1
        return None
    try:
        body: bytes = cobs.decode(chunk)
    except cobs.DecodeError:
        stats.frames_bad_cobs += 1
        return None
    if len(body) < 3:
        stats.frames_too_short += 1
        return None
    payload, crc = body[:-2], body[-2:]
    if len(payload) > MAX_PAYLOAD:
        stats.frames_oversize += 1
        return None
    if crc16(payload) != crc:
        stats.frames_bad_crc += 1
        return None
    return payload


def feed_in_pieces(decoder: FrameDecoder, stream: bytes, cuts: Sequence[int]) -> list[bytes]:
    """Feed ``stream`` split at ``cuts``; check the buffer bound after every feed."""
    out: list[bytes] = []
    bounds = [0, *sorted(cuts), len(stream)]
    for start, end in itertools.pairwise(bounds):
        out += decoder.feed(stream[start:end])
        assert decoder.buffered <= MAX_ENCODED_LEN
    return out


def crc16(payload: bytes) -> bytes:
    """CRC-16/GENIBUS of ``payload``, big-endian: the 2 bytes a frame carries after it."""
    return (binascii.crc_hqx(payload, 0xFFFF) ^ 0xFFFF).to_bytes(2, "big")


def unexplained(out: Sequence[bytes], sent: Sequence[bytes]) -> list[bytes]:
    """Returned payloads that were never sent: chunks that passed CRC-16 by chance
    (p ~ 2**-16 per damaged chunk)."""
    return [p for p in out if p not in sent]


def is_subsequence(needles: Sequence[bytes], haystack: Sequence[bytes]) -> bool:
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needles)


def cobs_code_positions(encoded: bytes) -> set[int]:
    """Indices of the COBS length-code bytes in an encoded body (the rest is data)."""
    positions, i = set(), 0
    while i < len(encoded):
        positions.add(i)
        i += encoded[i]
    return positions


@st.composite
def cuts_for(draw: st.DrawFn, stream: bytes) -> list[int]:
    return draw(st.lists(st.integers(0, len(stream)), max_size=24))


# --- encoding ----------------------------------------------------------------


def test_golden_frame() -> None:
    # payload 11 22 00 33, CRC-16/GENIBUS 0xF8BA, COBS, delimiters on both sides
    assert encode_frame(b"\x11\x22\x00\x33") == bytes.fromhex("00 03 11 22 04 33 F8 BA 00")


def test_crc_is_genibus() -> None:
    # The catalogue check value, as the frame carries it and as the tests compute it.
    body = cobs.decode(encode_frame(b"123456789")[1:-1])
    assert body == b"123456789" + bytes.fromhex("D6 4E")
    assert crc16(b"123456789") == bytes.fromhex("D6 4E")


def test_limits_are_consistent() -> None:
    assert cobs.max_encoded_length(MAX_PAYLOAD + 2) == MAX_ENCODED_LEN
    assert MAX_FRAME_LEN == MAX_ENCODED_LEN + 2
    worst = b"\x01" * MAX_PAYLOAD  # no zero byte anywhere: the most COBS overhead
    assert 0 not in crc16(worst)
    assert len(encode_frame(worst)) == MAX_FRAME_LEN


def _bit_residues_distinct(codeword_bits: int) -> bool:
    """True if CRC-16/CCITT tells apart every single-bit position of a codeword, i.e.
    catches every 2-bit error in it (x**i != x**j mod g for all i != j)."""
    seen: set[int] = set()
    residue = 1
    for _ in range(codeword_bits):
        if residue in seen:
            return False
        seen.add(residue)
        residue <<= 1
        if residue & 0x10000:
            residue ^= 0x11021
    return True


def test_max_payload_is_the_largest_with_every_2_bit_error_detected() -> None:
    assert _bit_residues_distinct((MAX_PAYLOAD + 2) * 8)
    assert not _bit_residues_distinct((MAX_PAYLOAD + 3) * 8)


def test_empty_payload_is_refused() -> None:
    with pytest.raises(FrameError, match="empty"):
        encode_frame(b"")


@pytest.mark.parametrize("size", [MAX_PAYLOAD + 1, 10 * MAX_PAYLOAD])
def test_oversize_payload_is_refused(size: int) -> None:
    with pytest.raises(FrameError, match=f"{size} bytes") as info:
        encode_frame(b"x" * size)
    assert isinstance(info.value, WireError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00",
        b"\xff",
        b"\x00" * MAX_PAYLOAD,
        b"\x01" * MAX_PAYLOAD,
        bytes(range(256)) * 3,
        *(b"\x07" * n for n in (252, 253, 254, 255, 508, 509)),
    ],
)
def test_round_trip_edge_payloads(payload: bytes) -> None:
    frame = encode_frame(payload)
    assert frame[0] == 0 and frame[-1] == 0 and 0 not in frame[1:-1]
    decoder = FrameDecoder()
    assert decoder.feed(frame) == [payload]
    assert decoder.stats == FrameStats(frames_ok=1)
    assert decoder.buffered == 0


# --- decoding: properties ----------------------------------------------------


@SETTINGS
@given(payloads=st.lists(PAYLOADS, max_size=20), data=st.data())
def test_any_chunking_returns_exactly_the_payloads(
    payloads: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(map(encode_frame, payloads))
    decoder = FrameDecoder()
    assert feed_in_pieces(decoder, stream, data.draw(cuts_for(stream))) == payloads
    assert decoder.stats == FrameStats(frames_ok=len(payloads))
    assert decoder.buffered == 0


def test_byte_at_a_time() -> None:
    payloads = [b"a", b"\x00\x00", b"hello" * 100, b"\xff" * 300]
    stream = b"".join(map(encode_frame, payloads))
    decoder = FrameDecoder()
    assert feed_in_pieces(decoder, stream, range(len(stream))) == payloads


# How one frame is damaged. Each op works on the frame's body (the bytes between
# its own two delimiters), so a frame with no op keeps both of its delimiters.
OPS = st.sampled_from(["none", "none", "flip", "drop", "insert", "truncate"])


@st.composite
def damaged_stream(draw: st.DrawFn) -> tuple[bytes, list[bytes], list[bytes]]:
    """(stream, all payloads sent, payloads of the frames left untouched)."""
    payloads = draw(st.lists(PAYLOADS, min_size=1, max_size=12))
    pieces: list[bytes] = []
    intact: list[bytes] = []
    if draw(st.booleans()):
        pieces.append(draw(st.binary(max_size=40)))  # noise before anything
    for payload in payloads:
        body = encode_frame(payload)[1:-1]
        op = draw(OPS)
        if op == "none":
            intact.append(payload)
        elif op == "flip":
            i = draw(st.integers(0, len(body) - 1))
            bit = draw(st.integers(0, 7))
            body = body[:i] + bytes([body[i] ^ (1 << bit)]) + body[i + 1 :]
        elif op == "drop":
            i = draw(st.integers(0, len(body) - 1))
            j = draw(st.integers(i + 1, len(body)))
            body = body[:i] + body[j:]
        elif op == "insert":
            i = draw(st.integers(0, len(body)))
            body = body[:i] + draw(st.binary(min_size=1, max_size=20)) + body[i:]
        trailer = b"\x00"
        if op == "truncate":  # interrupted: cut inside the body, trailing delimiter lost
            body, trailer = body[: draw(st.integers(0, len(body) - 1))], b""
        pieces.append(b"\x00" + body + trailer)
        if draw(st.booleans()):
            pieces.append(draw(st.binary(max_size=40)))  # line noise between frames
    return b"".join(pieces), payloads, intact


@SETTINGS
@given(damaged=damaged_stream(), data=st.data())
def test_damage_never_loses_an_intact_frame_nor_invents_one(
    damaged: tuple[bytes, list[bytes], list[bytes]], data: st.DataObject
) -> None:
    stream, sent, intact = damaged
    expected, expected_stats, expected_buffered = reference_decode(stream)
    assume(not unexplained(expected, sent))  # CRC-16 passing a random chunk by chance

    decoder = FrameDecoder()
    out = feed_in_pieces(decoder, stream, data.draw(cuts_for(stream)))

    assert is_subsequence(intact, out)  # every untouched frame, in order
    assert is_subsequence(out, sent)  # nothing that was not sent, in order
    # Exact, whatever the damage: each non-empty chunk after the first delimiter is
    # either returned or counted once as bad (the unterminated tail is still pending).
    chunks = [c for c in stream.split(b"\x00")[1:-1] if c]
    stats = decoder.stats
    assert stats.frames_ok == len(out)
    assert stats.frames_ok + stats.frames_bad == len(chunks)
    # ...and every counter is exactly what the contract says for this stream.
    assert (out, stats, decoder.buffered) == (expected, expected_stats, expected_buffered)


@st.composite
def data_byte_flips(draw: st.DrawFn) -> tuple[bytes, list[bytes], int]:
    """(stream, intact payloads, number of damaged frames): the damage is 1 to 3 bit
    flips in COBS data bytes, none leaving a byte at 0x00."""
    payloads = draw(st.lists(PAYLOADS, min_size=1, max_size=12))
    pieces: list[bytes] = []
    intact: list[bytes] = []
    damaged = 0
    for payload in payloads:
        body = bytearray(encode_frame(payload)[1:-1])
        codes = cobs_code_positions(bytes(body))
        data_positions = [i for i in range(len(body)) if i not in codes]
        if len(data_positions) > 0 and draw(st.booleans()):
            flips = draw(
                st.lists(
                    st.tuples(st.sampled_from(data_positions), st.integers(0, 7)),
                    min_size=1,
                    max_size=3,
                    unique=True,
                )
            )
            for i, bit in flips:
                body[i] ^= 1 << bit
            assume(0 not in body)
            damaged += 1
        else:
            intact.append(payload)
        pieces.append(b"\x00" + bytes(body) + b"\x00")
    return b"".join(pieces), intact, damaged


@SETTINGS
@given(case=data_byte_flips(), data=st.data())
def test_data_byte_flips_are_each_counted_as_one_bad_crc(
    case: tuple[bytes, list[bytes], int], data: st.DataObject
) -> None:
    # Flipping COBS data bytes (never code bytes, never to 0x00) keeps the block
    # structure, so the decoded payload + CRC differs from the sent one in exactly
    # those 1-3 bits: CRC-16/CCITT catches that every time at these lengths.
    stream, intact, damaged = case
    decoder = FrameDecoder()
    assert feed_in_pieces(decoder, stream, data.draw(cuts_for(stream))) == intact
    assert decoder.stats.frames_ok == len(intact)
    assert decoder.stats.frames_bad_crc == damaged
    assert decoder.stats.frames_bad == damaged


LONG_RUN = st.builds(
    lambda n, b: bytes([b]) * n, st.integers(0, 3 * MAX_ENCODED_LEN), st.integers(1, 255)
)
ANY_CHUNK = st.one_of(
    st.binary(max_size=300),
    LONG_RUN,
    PAYLOADS.map(encode_frame),
    st.tuples(PAYLOADS.map(encode_frame), st.integers(0, 700)).map(lambda t: t[0][: t[1]]),
)


@SETTINGS
@given(chunks=st.lists(ANY_CHUNK, max_size=30))
def test_arbitrary_bytes_never_raise_and_stay_bounded(chunks: list[bytes]) -> None:
    decoder = FrameDecoder()
    out: list[bytes] = []
    for chunk in chunks:
        got = decoder.feed(chunk)
        assert decoder.buffered <= MAX_ENCODED_LEN
        assert all(isinstance(p, bytes) and 1 <= len(p) <= MAX_PAYLOAD for p in got)
        out += got
    expected, expected_stats, expected_buffered = reference_decode(b"".join(chunks))
    assert (out, decoder.stats, decoder.buffered) == (expected, expected_stats, expected_buffered)


@SETTINGS
@given(
    first=PAYLOADS,
    noise=NON_ZERO_BYTES,
    good=st.lists(PAYLOADS, min_size=1, max_size=3),
    data=st.data(),
)
def test_frame_interrupted_by_noise_does_not_take_the_next_one_down(
    first: bytes, noise: bytes, good: list[bytes], data: st.DataObject
) -> None:
    frame = encode_frame(first)
    # Cut after at least one body byte; the trailing delimiter is always lost.
    interrupted = frame[: data.draw(st.integers(2, len(frame) - 1), label="cut")]
    stream = interrupted + noise + b"".join(map(encode_frame, good))
    decoder = FrameDecoder()
    out = feed_in_pieces(decoder, stream, data.draw(cuts_for(stream)))
    assert out[-len(good) :] == good
    # What is left of the frame, plus the noise, is one chunk, closed by the next
    # frame's leading delimiter.
    stats = decoder.stats
    assert stats.frames_ok + stats.frames_bad == 1 + len(good)
    extra = out[: -len(good)]
    if interrupted + noise == frame[:-1]:
        assert extra == [first]  # only the trailing delimiter was lost
    if extra == [first]:
        # Only the trailing delimiter lost, noise that restores the cut bytes, or a
        # 0x01 after a full 254-byte COBS block (it decodes to nothing).
        event("interrupted frame still whole: recovered")
    else:
        assume(not extra)  # what is left passed CRC-16 by chance, p ~ 2**-16
        assert stats.frames_bad == 1


# --- decoding: specific cases ------------------------------------------------


def test_overflowing_run_is_one_oversize_frame_then_resyncs() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(b"before")) == [b"before"]
    run = b"\x00" + b"\x42" * (5 * MAX_ENCODED_LEN)
    for i in range(0, len(run), 1000):
        assert decoder.feed(run[i : i + 1000]) == []
        assert decoder.buffered <= MAX_ENCODED_LEN
    assert decoder.feed(encode_frame(b"after")) == [b"after"]
    assert decoder.stats == FrameStats(
        frames_ok=2, frames_oversize=1, bytes_discarded=5 * MAX_ENCODED_LEN
    )


def test_one_huge_feed_without_delimiter_is_never_buffered() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x00")
    assert decoder.feed(b"\x01" * 1_000_000) == []
    assert decoder.buffered == 0
    assert decoder.feed(b"\x01" * 10 + encode_frame(b"ok")) == [b"ok"]
    assert decoder.stats.frames_oversize == 1
    assert decoder.stats.bytes_discarded == 1_000_010


def test_largest_valid_frame_does_not_trip_the_bound() -> None:
    frame = encode_frame(b"\x01" * MAX_PAYLOAD)  # MAX_ENCODED_LEN bytes of body
    decoder = FrameDecoder()
    assert decoder.feed(frame[:-1]) == []
    assert decoder.buffered == MAX_ENCODED_LEN
    assert decoder.feed(frame[-1:]) == [b"\x01" * MAX_PAYLOAD]


def test_starts_unsynchronised_fragment_is_not_a_bad_frame() -> None:
    frame = encode_frame(b"payment event")
    fragment = frame[5:]  # the agent opened the port mid-frame
    decoder = FrameDecoder()
    assert decoder.feed(fragment + frame) == [b"payment event"]
    assert decoder.stats == FrameStats(frames_ok=1, bytes_discarded=len(fragment) - 1)


def test_idle_delimiters_are_not_errors() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"\x00" * 50 + encode_frame(b"x") + b"\x00" * 50) == [b"x"]
    assert decoder.stats == FrameStats(frames_ok=1)


def test_each_rejection_reason_is_counted() -> None:
    empty_with_valid_crc = cobs.encode(crc16(b""))
    too_big = b"\x00" * (MAX_PAYLOAD + 1)
    too_big_with_valid_crc = cobs.encode(too_big + crc16(too_big))
    assert len(too_big_with_valid_crc) <= MAX_ENCODED_LEN  # so it gets decoded
    bad_crc = bytearray(encode_frame(b"abc")[1:-1])
    bad_crc[-1] ^= 0x10
    chunks = {
        "bad_cobs": b"\x05\x01",
        "too_short_1": b"\x01",
        "too_short_2": empty_with_valid_crc,
        "oversize_decoded": too_big_with_valid_crc,
        "oversize_chunk": b"\x01" * (MAX_ENCODED_LEN + 1),
        "bad_crc": bytes(bad_crc),
    }
    stream = b"\x00" + b"\x00".join(chunks.values()) + b"\x00"
    decoder = FrameDecoder()
    assert decoder.feed(stream) == []
    assert decoder.stats == FrameStats(
        frames_bad_cobs=1,
        frames_too_short=2,
        frames_oversize=2,
        frames_bad_crc=1,
        bytes_discarded=sum(map(len, chunks.values())),
    )
    assert decoder.stats.frames_bad == 6


def test_zero_bytes_appended_trailing_delimiter_flipped_to_01() -> None:
    # One bit flip turns the trailing delimiter into 0x01; the next frame's leading
    # delimiter closes the chunk. COBS decodes that to payload + CRC + 00, which
    # CRC-16/CCITT-FALSE (no final XOR) would accept as the payload plus the CRC's
    # high byte. The final XOR of CRC-16/GENIBUS gets it rejected.
    payload = b'{"seq":1}'
    frame = encode_frame(payload)
    damaged = frame[:-1] + b"\x01"
    assert cobs.decode(damaged[1:]) == payload + crc16(payload) + b"\x00"  # only the CRC
    decoder = FrameDecoder()
    assert decoder.feed(damaged + encode_frame(b"next")) == [b"next"]
    assert decoder.stats == FrameStats(
        frames_ok=1, frames_bad_crc=1, bytes_discarded=len(damaged) - 1
    )
    # After a full 254-byte COBS block (code 0xFF, no 0x00 after it) a 0x01 is an
    # empty last block: COBS decodes it to nothing, so the frame arrives as sent.
    full = next(p for p in (bytes([b]) * 252 for b in range(1, 256)) if 0 not in crc16(p))
    frame = encode_frame(full)
    assert frame[1] == 0xFF and len(frame) == 1 + 1 + 254 + 1
    decoder = FrameDecoder()
    assert decoder.feed(frame[:-1] + b"\x01" + encode_frame(b"next")) == [full, b"next"]
    assert decoder.stats == FrameStats(frames_ok=2)


def test_zero_bytes_removed_last_cobs_byte_lost() -> None:
    # A CRC ending in 0x00 (1 frame in 256) is COBS-encoded with a final 0x01 code
    # byte. Lose that byte, or flip it to 0x00, and COBS decodes to payload + CRC
    # without its final 0x00, which CRC-16/CCITT-FALSE would accept as the payload one
    # byte short. CRC-16/GENIBUS rejects it.
    payload = next(p for p in (b'{"seq":%d}' % n for n in itertools.count()) if crc16(p)[-1] == 0)
    frame = encode_frame(payload)
    assert frame[-2:] == b"\x01\x00"
    body = payload + crc16(payload)
    for damaged in (frame[:-2] + frame[-1:], frame[:-2] + b"\x00\x00"):
        assert cobs.decode(damaged[1:-1].rstrip(b"\x00")) == body[:-1]  # only the CRC
        decoder = FrameDecoder()
        assert decoder.feed(damaged + encode_frame(b"next")) == [b"next"]
        assert decoder.stats == FrameStats(
            frames_ok=1, frames_bad_crc=1, bytes_discarded=len(frame) - 3
        )


@SETTINGS
@given(payload=PAYLOADS, zeros=st.integers(1, 64))
def test_zero_bytes_appended_or_removed_are_always_caught(payload: bytes, zeros: int) -> None:
    # Any valid payload + CRC with zero bytes appended fails the CRC, whatever the
    # split into payload and CRC. Read backwards, this is also every valid body that
    # ends in zero bytes and has them removed.
    body = payload + crc16(payload) + b"\x00" * zeros
    chunk = b"\x00" + cobs.encode(body) + b"\x00"
    decoder = FrameDecoder()
    assert decoder.feed(chunk) == []
    assert decoder.stats == FrameStats(frames_bad_crc=1, bytes_discarded=len(chunk) - 2)


def test_empty_feed() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"") == []
    assert decoder.stats == FrameStats()


def test_stats_is_a_snapshot_and_encodes() -> None:
    decoder = FrameDecoder()
    before = decoder.stats
    decoder.feed(encode_frame(b"x"))
    assert before.frames_ok == 0
    assert decoder.stats.frames_ok == 1
    assert msgspec.json.decode(msgspec.json.encode(decoder.stats), type=FrameStats) == (
        decoder.stats
    )


# -- the serial link's acknowledgement (wire.messages.LinkAck) -------------------------------


@pytest.mark.parametrize("stream", ["payment", "status", "sensor"])
def test_a_link_ack_names_the_stream_and_round_trips_framed(stream: str) -> None:
    ack = LinkAck(device="s0001-pos1", stream=Stream(stream), seq=7)
    [payload] = FrameDecoder().feed(encode_frame(encode(ack)))
    assert msgspec.json.decode(payload) == {
        "schema": "ack/2",
        "device": "s0001-pos1",
        "stream": stream,
        "seq": 7,
    }
    assert decode_as(payload, LinkAck) == ack
    # one counter per (device, stream): the same seq on another stream is another ack
    other = Stream.STATUS if ack.stream is Stream.PAYMENT else Stream.PAYMENT
    assert ack != LinkAck(device="s0001-pos1", stream=other, seq=7)


@pytest.mark.parametrize(
    ("doc", "named"),
    [
        ({"schema": "ack/1", "device": "d", "seq": 1}, "$.schema"),  # no stream: refused
        ({"schema": "ack/2", "device": "d", "seq": 1}, "`stream`"),
        ({"schema": "ack/2", "device": "d", "stream": "teleport", "seq": 1}, "$.stream"),
        ({"schema": "ack/2", "device": "d", "stream": "health", "seq": 1}, "$.stream"),
        ({"schema": "ack/2", "device": "d", "stream": "state", "seq": 1}, "$.stream"),
        ({"schema": "ack/2", "device": "d", "stream": "payment", "seq": -1}, "$.seq"),
        ({"schema": "ack/2", "device": "d", "stream": "payment", "seq": 1, "x": 1}, "x"),
    ],
)
def test_a_link_ack_is_decoded_strictly(doc: dict[str, object], named: str) -> None:
    with pytest.raises(MessageDecodeError) as info:
        decode_as(msgspec.json.encode(doc), LinkAck)
    assert named in str(info.value)


def test_a_link_ack_for_a_stream_not_sent_over_serial_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="serial stream"):
        LinkAck(device="d", stream=Stream.HEALTH, seq=1)
