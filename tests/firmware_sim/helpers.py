"""Shared by the simulator tests: build a run and collect its events."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TypedDict, Unpack

import msgspec
import serial

from firmware_sim.event_engine import Emission, LinkChange, SimEvent, SimMessage
from firmware_sim.run_setup import SimSettings, Simulation, build_simulation
from firmware_sim.scenario_file import Scenario
from wire.framing import FrameDecoder, encode_frame
from wire.messages import (
    STREAM_FOR_MESSAGE,
    LinkAck,
    PaymentTransaction,
    SensorReading,
    TerminalStatus,
    decode,
    encode,
)
from wire.timestamps import NS_PER_HOUR, parse_iso

START_NS = parse_iso("2026-11-23T00:00:00Z")  # a Monday


class Shape(TypedDict, total=False):
    terminals: int
    sensors: int
    seed: int
    hours: float
    scenario: Scenario
    status_every_s: float


def scenario_from(tmp_path: Path, toml: str) -> Scenario:
    path = tmp_path / "scenario.toml"
    path.write_text(toml, encoding="utf-8")
    return msgspec.toml.decode(path.read_bytes(), type=Scenario)


def build(**shape: Unpack[Shape]) -> Simulation:
    """A fresh simulation, not run yet (defaults: 30 terminals, 6 sensors, a day)."""
    interval = shape.get("status_every_s", 300.0)
    settings = SimSettings(
        terminals=shape.get("terminals", 30),
        sensors=shape.get("sensors", 6),
        seed=shape.get("seed", 1),
        start_ns=START_NS,
        duration_ns=int(shape.get("hours", 24) * NS_PER_HOUR),
        scenario=shape.get("scenario", Scenario(name="quiet")),
        status_every_s=interval,
        sensor_every_s=interval,
    )
    return build_simulation(settings)


def simulate(**shape: Unpack[Shape]) -> tuple[Simulation, list[SimEvent]]:
    """A run's simulation (already spent) and all its events."""
    simulation = build(**shape)
    return simulation, list(simulation.engine.events())


def messages(events: list[SimEvent]) -> list[SimMessage]:
    return [e.message for e in events if isinstance(e, Emission)]


def link_changes(events: list[SimEvent]) -> list[LinkChange]:
    return [e for e in events if isinstance(e, LinkChange)]


class Agent:
    """The edge agent's side of one pty (pyserial): decode frames, acknowledge each message."""

    def __init__(self, port: str, *, ack: bool = True) -> None:
        self.port = serial.Serial(port, 115200, timeout=0)
        self.decoder = FrameDecoder()
        self.received: list[SimMessage] = []
        self.ack = ack

    def poll(self) -> int:
        try:
            data = self.port.read(65536)
        except serial.SerialException:  # the device hung up (its side of the pty closed)
            return len(self.received)
        for payload in self.decoder.feed(data):
            message = decode(payload)
            assert isinstance(message, PaymentTransaction | TerminalStatus | SensorReading)
            self.received.append(message)
            if self.ack:
                with contextlib.suppress(serial.SerialException):
                    self.port.write(ack_frame(message))
        return len(self.received)

    def close(self) -> None:
        self.port.close()


def ack_frame(message: SimMessage) -> bytes:
    """The framed LinkAck the agent sends once ``message`` is durable."""
    stream = STREAM_FOR_MESSAGE[type(message)]
    return encode_frame(encode(LinkAck(device=message.device, stream=stream, seq=message.seq)))


def identity(message: SimMessage) -> tuple[str, str, int]:
    """What tells a device's events apart: (device, stream, seq), one counter per stream."""
    return message.device, STREAM_FOR_MESSAGE[type(message)].value, message.seq
