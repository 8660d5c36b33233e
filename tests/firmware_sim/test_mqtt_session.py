"""A device's MQTT v5 session without a socket: the bytes it writes, decoded with mqtt5,
and its answers to the bytes a broker sends (built with mqtt5 the way Mosquitto sends
them). The fleet's end-to-end behaviour against a real Mosquitto is in
test_mqtt_fleet.py."""

from __future__ import annotations

import mqtt5
import pytest

from firmware_sim.mqtt_session import (
    ClosedByBroker,
    ConnectRefused,
    Phase,
    PublisherSession,
    SessionTimeout,
)
from runtime.mqtt_packets import MqttProtocolError, PacketReader

QOS1 = mqtt5.QoS.AT_LEAST_ONCE
WILL = mqtt5.Will("tp/v1/dev/s1/d1/state", payload=b"gone", qos=QOS1, retain=True)
T0 = 1000.0


def session(window: int = 3, password: str | None = None) -> PublisherSession:
    return PublisherSession(
        "d1",
        window=window,
        keepalive_s=60,
        session_expiry_s=3600,
        connack_timeout_s=10.0,
        username=None if password is None else "d1",
        password=password,
    )


def sent(s: PublisherSession) -> list[mqtt5.Packet]:
    """Everything the session wrote since the last call, decoded (and taken out)."""
    packets = PacketReader().feed(bytes(s.out))
    s.out.clear()
    return packets


def published(s: PublisherSession) -> list[tuple[int, mqtt5.PublishPacket]]:
    """The PUBLISHes the session wrote since the last call, with their packet ids."""
    packets = sent(s)
    assert all(isinstance(p, mqtt5.PublishPacket) and p.packet_id for p in packets), packets
    return [(p.packet_id, p) for p in packets if isinstance(p, mqtt5.PublishPacket) and p.packet_id]


def connack(
    *,
    present: bool = False,
    receive_max: int = 65535,
    reason: mqtt5.ConnAckReasonCode = mqtt5.ConnAckReasonCode.SUCCESS,
) -> bytes:
    return mqtt5.ConnAckPacket(
        session_present=present, receive_max=receive_max, reason_code=reason
    ).write()


def puback(
    packet_id: int, reason: mqtt5.PubAckReasonCode = mqtt5.PubAckReasonCode.SUCCESS
) -> bytes:
    return mqtt5.PubAckPacket(packet_id, reason_code=reason).write()


def online(window: int = 3) -> PublisherSession:
    s = session(window)
    s.connect(WILL, T0)
    s.receive(connack())
    sent(s)
    return s


def queue(s: PublisherSession, *topics: str) -> None:
    s.queue.extend((topic, topic.encode(), False) for topic in topics)


# -- the splitter ------------------------------------------------------------------------


# -- the session -------------------------------------------------------------------------


def test_connect_carries_the_identity_the_session_and_the_retained_will() -> None:
    s = session(password="pw")
    s.connect(WILL, T0)
    (packet,) = sent(s)
    assert isinstance(packet, mqtt5.ConnectPacket)
    assert (packet.client_id, packet.username, packet.password) == ("d1", "d1", b"pw")
    assert (packet.clean_start, packet.keep_alive, packet.session_expiry_interval) == (
        False,
        60,
        3600,
    )
    assert packet.will is not None
    assert (packet.will.topic, packet.will.payload, packet.will.retain) == (
        WILL.topic,
        b"gone",
        True,
    )
    assert packet.will.qos == QOS1


def test_nothing_is_published_before_the_connack_then_only_a_window_full() -> None:
    s = session(window=3)
    s.connect(WILL, T0)
    sent(s)
    queue(s, "a", "b", "c", "d", "e")
    assert s.pump() == 0 and s.out == b""
    assert s.receive(connack()) == (0, 0)
    assert s.phase is Phase.ONLINE
    assert s.pump() == 3
    publishes = published(s)
    assert [(p.topic, p.qos, p.retain) for _, p in publishes] == [
        ("a", QOS1, False),
        ("b", QOS1, False),
        ("c", QOS1, False),
    ]
    assert s.pump() == 0  # the window is full until a PUBACK
    ids = [packet_id for packet_id, _ in publishes]
    assert len(set(ids)) == 3
    assert s.receive(puback(ids[0])) == (1, 0)
    assert s.pump() == 1
    assert [p.topic for _, p in published(s)] == ["d"]


def test_the_brokers_receive_maximum_narrows_the_window() -> None:
    s = session(window=20)
    s.connect(WILL, T0)
    s.receive(connack(receive_max=2))
    queue(s, "a", "b", "c")
    assert s.pump() == 2 and s.window == 2


def test_puback_reason_codes_no_matching_subscribers_is_a_success() -> None:
    s = online(window=5)
    queue(s, "a", "b", "c", "d")
    s.pump()
    ids = [packet_id for packet_id, _ in published(s)]
    codes = mqtt5.PubAckReasonCode
    chunk = (
        puback(ids[0])
        + puback(ids[1], codes.NO_MATCHING_SUBSCRIBERS)
        + puback(ids[2], codes.NOT_AUTHORIZED)
        + puback(ids[3], codes.QUOTA_EXCEEDED)
        + puback(ids[0])  # already acknowledged: changes nothing
    )
    assert s.receive(chunk) == (2, 2)
    assert s.idle


def test_a_lost_connection_keeps_what_is_in_flight_and_sends_it_again_first() -> None:
    s = online(window=2)
    queue(s, "a", "b", "c")
    s.pump()
    first = {packet_id: p.topic for packet_id, p in published(s)}
    s.out += b"unsent bytes"
    s.lost()
    assert s.out == b"" and s.phase is Phase.OFFLINE and s.inflight == 2
    s.connect(WILL, T0 + 5)
    assert isinstance(sent(s)[0], mqtt5.ConnectPacket)
    s.receive(connack(present=True))
    again = published(s)
    assert {packet_id: p.topic for packet_id, p in again} == first
    assert all(p.duplicate for _, p in again)
    assert s.pump() == 0  # "c" waits for room
    s.receive(puback(next(iter(first))))
    assert s.pump() == 1


def test_without_the_session_at_the_broker_in_flight_messages_go_again_as_new() -> None:
    s = online(window=2)
    queue(s, "a")
    s.pump()
    sent(s)
    s.lost()
    s.connect(WILL, T0 + 5)
    sent(s)
    s.receive(connack(present=False))
    ((_, again),) = published(s)
    assert not again.duplicate


def test_packet_ids_wrap_and_skip_those_in_flight() -> None:
    s = online(window=2)
    queue(s, "held")
    s.pump()
    ((held, _),) = published(s)
    ids = []
    for _ in range(65_540):
        queue(s, "x")
        s.pump()
        ((packet_id, _),) = published(s)
        ids.append(packet_id)
        s.receive(puback(packet_id))
    assert held not in ids
    assert ids[ids.index(65_535) + 1] == 2  # wrapped, past the one still in flight


def test_a_refused_connack_names_its_reason() -> None:
    s = session()
    s.connect(WILL, T0)
    with pytest.raises(ConnectRefused) as refused:
        s.receive(connack(reason=mqtt5.ConnAckReasonCode.BAD_USER_NAME_OR_PASSWORD))
    assert refused.value.reason.name == "BAD_USER_NAME_OR_PASSWORD"


def test_what_a_publisher_never_receives_ends_the_connection() -> None:
    s = online()
    reason = mqtt5.DisconnectReasonCode.SESSION_TAKEN_OVER
    with pytest.raises(ClosedByBroker, match="SESSION_TAKEN_OVER"):
        s.receive(mqtt5.DisconnectPacket(reason_code=reason).write())
    with pytest.raises(MqttProtocolError, match="unexpected PublishPacket"):
        online().receive(mqtt5.PublishPacket("t", b"p").write())
    with pytest.raises(MqttProtocolError, match="CONNACK outside"):
        online().receive(connack())


def test_a_quiet_connection_pings_and_a_silent_broker_times_out() -> None:
    s = online()
    s.check_timers(T0 + 59)
    assert s.out == b""
    s.check_timers(T0 + 60)
    assert [type(p) for p in sent(s)] == [mqtt5.PingReqPacket]
    s.check_timers(T0 + 100)
    assert s.out == b""  # one ping at a time
    s.receive(mqtt5.PingRespPacket().write())
    s.sent(T0 + 100)
    s.check_timers(T0 + 159)
    assert s.out == b""
    s.check_timers(T0 + 160)
    sent(s)
    with pytest.raises(SessionTimeout, match="no PINGRESP in 60s"):
        s.check_timers(T0 + 220)


def test_no_connack_in_time_is_a_timeout() -> None:
    s = session()
    s.connect(WILL, T0)
    s.check_timers(T0 + 9.9)
    with pytest.raises(SessionTimeout, match="no CONNACK in 10s"):
        s.check_timers(T0 + 10)


def test_disconnect_is_the_last_packet() -> None:
    s = online()
    s.disconnect()
    assert [type(p) for p in sent(s)] == [mqtt5.DisconnectPacket]
    assert s.phase is Phase.OFFLINE
    queue(s, "late")
    assert s.pump() == 0
