"""MQTT packets out of a byte stream, one read at a time, with the mqtt5 codec.

`PacketReader.feed` takes whatever one ``recv`` returned and gives back every
packet it completed, in order; a packet cut by the end of the read waits for
the next one (a large one is gathered in chunks and joined once, not copied
at every read). Every MQTT connection of ours that is not paho's reads with
it: the gateway's subscriber link and the simulated fleet's publishers. One
call per read, not paho's three ``recv`` calls per packet, is most of what
they save.

``mqtt5.read`` raises IndexError ("Not enough bytes") for a packet that is not
all there yet, and ValueError for one it refuses; mqtt5 0.8.0 also panics
(``PanicException``, a BaseException, not an Exception) on a topic that is
not UTF-8. The packet's own framing (fixed header and remaining length) says
which it is: a packet that is all there and still refused is skipped by its
length and handed back as a `RefusedPublish` (a PUBLISH: the gateway's ingest
acknowledges it, counts it and keeps it in the dead letters, so it can
neither stall the link nor come back forever) and only broken framing, a
refused packet of another type, or a packet announced larger than
``max_packet_bytes`` (held, it would grow until memory runs out) raises
`MqttProtocolError`: the stream can't be followed past it, and the connection
must be dropped.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import mqtt5

PUBLISH: Final = 3  # the control packet type in the fixed header's high nibble
MAX_HEADER_BYTES: Final = 5  # type byte + a remaining length of at most 4 bytes
MAX_PACKET_BYTES: Final = 268_435_460  # 1 + a 4-byte remaining length of at most 268,435,455


class MqttProtocolError(Exception):
    """The peer sent what is not MQTT v5: nothing after this point can be read."""


class RefusedPublish(NamedTuple):
    """A complete PUBLISH the codec refused: what is needed to ack and keep it."""

    packet_id: int | None  # None at QoS 0
    qos: int
    duplicate: bool
    topic: str  # as far as it could be read (invalid UTF-8 replaced), for the dead letter
    packet: bytes  # the whole packet, as it came
    error: str


Incoming = mqtt5.Packet | RefusedPublish


class PacketReader:
    def __init__(self, max_packet_bytes: int = MAX_PACKET_BYTES) -> None:
        self._max_packet_bytes = max_packet_bytes
        self._held: list[bytes] = []  # the start of an incomplete packet, in chunks
        self._held_bytes = 0
        self._needed = 0  # bytes the held packet needs (0: its header is incomplete)

    def feed(self, data: bytes) -> list[Incoming]:
        """The packets ``data`` completes (raises `MqttProtocolError` on a broken stream)."""
        if self._held:
            self._held.append(data)
            self._held_bytes += len(data)
            if self._held_bytes < self._needed:
                return []
            data = b"".join(self._held)
            self._held = []
        packets: list[Incoming] = []
        view = memoryview(data)
        end = len(data)
        offset = 0
        read = mqtt5.read
        while offset < end:
            try:
                packet, size = read(view[offset:])
            except BaseException as exc:  # a codec panic is no Exception
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                length = frame_length(view, offset)
                if length is None or offset + length > end:
                    break  # not all there yet
                packets.append(_refused(view[offset : offset + length], exc))
                offset += length
            else:
                packets.append(packet)
                offset += size
        self._hold(data, offset)
        return packets

    def _hold(self, data: bytes, offset: int) -> None:
        rest = data[offset:]
        self._held_bytes = len(rest)
        self._held = [rest] if rest else []
        self._needed = (frame_length(memoryview(rest), 0) or 0) if rest else 0
        if self._needed > self._max_packet_bytes:
            raise MqttProtocolError(
                f"a packet of {self._needed} bytes announced, more than the"
                f" {self._max_packet_bytes} this connection takes"
            )


def frame_length(view: memoryview, offset: int) -> int | None:
    """The length of the packet at ``offset`` by its fixed header; None when the header
    itself is not all there. Raises `MqttProtocolError` when it is not MQTT framing."""
    header = _fixed_header(view, offset)
    return None if header is None else header[0] + header[1]


def _fixed_header(view: memoryview, offset: int) -> tuple[int, int] | None:
    """(header bytes, remaining length) of the packet at ``offset``, or None if cut."""
    remaining = shift = 0
    for index in range(offset + 1, min(offset + MAX_HEADER_BYTES, len(view))):
        byte = view[index]
        remaining |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return index + 1 - offset, remaining
        shift += 7
    if len(view) - offset >= MAX_HEADER_BYTES:
        raise MqttProtocolError("remaining length longer than 4 bytes")
    return None


def _refused(packet: memoryview, exc: BaseException) -> RefusedPublish:
    """A complete packet the codec refused: a PUBLISH to ack and keep, else the end."""
    error = f"{type(exc).__name__}: {exc}"
    first = packet[0]
    if first >> 4 != PUBLISH:
        raise MqttProtocolError(
            f"the broker sent a packet of type {first >> 4} mqtt5 refused: {error}"
        )
    qos = (first >> 1) & 0x03
    start = len(packet) - _remaining(packet)
    topic_end = start + 2 + int.from_bytes(packet[start : start + 2])
    topic_bytes = bytes(packet[start + 2 : topic_end])
    packet_id = None
    if qos:
        if topic_end + 2 > len(packet):
            raise MqttProtocolError(f"a QoS {qos} PUBLISH too short for its packet id: {error}")
        packet_id = int.from_bytes(packet[topic_end : topic_end + 2])
    try:
        topic = topic_bytes.decode("utf-8")
    except UnicodeDecodeError as undecodable:  # what the codec panics on
        topic = topic_bytes.decode("utf-8", "replace")
        error = f"topic is not UTF-8: {undecodable}"
    return RefusedPublish(packet_id, qos, bool(first & 0x08), topic, bytes(packet), error)


def _remaining(packet: memoryview) -> int:
    header = _fixed_header(packet, 0)
    return 0 if header is None else header[1]
