"""A serial source never dies on a frame and never keeps a card number: the real agent
(on a thread) reading a simulated terminal over a pty, publishing to a real Mosquitto."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.servers import MosquittoServer, wait_until
from tests.edge.test_agent import (
    AgentThread,
    Rig,
    status,
    wait_acked,
    wait_for_seqs,
)
from wire.framing import encode_frame
from wire.topics import Stream

pytestmark = pytest.mark.integration

SPACED_PAN = "5555 5555 5555 4444"
NESTED = b'{"x":' + b"[" * 1500 + b"]" * 1500 + b',"schema":"payment/1"}'  # 3,027 bytes
NESTED_WITH_PAN = NESTED.replace(b'"x"', b'"x":"4111.1111.1111.1111","y"')


@pytest.fixture
def rig(tmp_path: Path, mosquitto: MosquittoServer) -> Iterator[Rig]:
    made = Rig(tmp_path, mosquitto)
    yield made
    made.close()


def test_hostile_frames_are_counted_the_port_goes_on_and_no_card_number_is_kept(
    rig: Rig,
) -> None:
    terminal = rig.terminal(retransmit_s=0.3)
    running = AgentThread(rig.configure(terminal.port))
    try:
        with rig.subscribe() as sub:
            terminal.payments(1, 3)
            wait_for_seqs(sub, terminal, Stream.PAYMENT, {1, 2, 3})
            wait_acked(terminal)  # nothing left for the terminal's thread to write
            for payload in (NESTED, NESTED_WITH_PAN):
                os.write(terminal.link.fileno(), encode_frame(payload))
            terminal.send(status(terminal.device, 4, firmware=SPACED_PAN))
            terminal.payments(5, 3)
            wait_for_seqs(sub, terminal, Stream.PAYMENT, {5, 6, 7})
            source = running.source
            wait_until(
                lambda: source.invalid == 1 and source.pci_refused == 2,
                10,
                message=lambda: f"not counted: {source}",
            )
    finally:
        running.close()
    assert source.errors == 0  # nothing unexpected: the limits caught it first
    for path in rig.state.rglob("*"):  # dead letters, the outbox and its WAL, the status file
        if path.is_file():
            data = path.read_bytes()
            assert b"4111.1111" not in data and SPACED_PAN.encode() not in data, path
    kept = b"".join(p.read_bytes() for p in (rig.state / "deadletters").rglob("*") if p.is_file())
    assert b"nest deeper than 32" in kept
