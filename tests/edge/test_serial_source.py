"""A serial source never dies on a frame and never keeps a card number: the real agent
(on a thread) reading a simulated terminal over a pty, publishing to a real Mosquitto."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.outbox import Outbox
from edge.serial_source import SerialSource
from runtime.deadletters import DeadLetters
from testkit.servers import MosquittoServer, wait_until
from tests.edge.test_agent import (
    SITE,
    AgentThread,
    Rig,
    Terminal,
    status,
    wait_acked,
    wait_for_seqs,
)
from wire.framing import encode_frame
from wire.topics import Stream, device_topic

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


def test_a_status_ack_never_releases_the_payment_with_the_same_seq(tmp_path: Path) -> None:
    """Each stream of a device counts on its own, so the agent's ack names the stream.

    Payments 1 and 2 are damaged on the line (the agent never sees them); statuses
    1 and 2 arrive and are acknowledged. With an ack of (device, seq) alone, those acks
    released the terminal's payments 1 and 2, which were then never sent again: lost.
    """
    terminal = Terminal(f"{SITE}-pos1", retransmit_s=0.3)
    outbox = Outbox(tmp_path / "outbox.db")
    source = SerialSource(
        terminal.port,
        115200,
        site=SITE,
        outbox=outbox,
        deadletters=DeadLetters(tmp_path / "deadletters"),
    )
    stop = threading.Event()
    reader = threading.Thread(target=source.run, args=(stop,), name="serial-source", daemon=True)
    reader.start()
    stored: dict[tuple[str, int | None], int] = {}
    try:
        wait_until(lambda: source.stats.open, 10, message="the port was not opened")
        terminal.corrupt_next(2)
        terminal.payments(1, 2)  # damaged: never seen by the agent, so never acked
        terminal.send(status(terminal.device, 1), status(terminal.device, 2))

        def everything_stored() -> bool:
            for row in outbox.lease(100):
                stored[row.topic, row.seq] = stored.get((row.topic, row.seq), 0) + 1
            return len(stored) == 4 and terminal.unacked == 0

        wait_until(
            everything_stored,
            10,
            message=lambda: f"stored {sorted(stored)}; {terminal.unacked} payments held",
        )
    finally:
        stop.set()
        reader.join(timeout=10)
        terminal.close()
        outbox.close()
    payments, statuses = (device_topic(SITE, terminal.device, s) for s in ("payment", "status"))
    assert stored == {(payments, 1): 1, (payments, 2): 1, (statuses, 1): 1, (statuses, 2): 1}
    assert terminal.link.retransmits >= 2  # the payments came on their re-sends
    assert terminal.link.bad_replies == 0 and source.stats.stored == 4
