"""No card number reaches InfluxDB, the spool, the dead letters (disk and topic) or the
logs: hostile messages carrying one in every field and spelling, through the real
gateway, Mosquitto and influxd, among ordinary payments that must all be stored."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import load_gateway_config
from runtime.logs import JsonFormatter, KeyValueFormatter
from testkit.factories import next_status, payment
from testkit.mqtt_collector import publish_all
from testkit.servers import InfluxDB1Server, MosquittoServer, wait_until
from tests.gateway.test_ingest import DeadLetterTopic
from tests.gateway.test_service import DB, landed, payments, running_gateway, write_config
from tests.wire.pan_spellings import json_escaped, pans, spelled
from wire.messages import encode
from wire.pci import contains_pan, payload_contains_pan
from wire.topics import DEVICE_PREFIX

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ORDINARY = 300
FIELDS = ("txn_id", "acquirer", "device", "seq", "unknown key", "unknown value", "firmware")
PLACEHOLDER = "@@placeholder@@"


@st.composite
def hostile_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    """A payment (or, for ``firmware``, a status) carrying a card number somewhere."""
    pan = draw(pans())
    text = draw(spelled(pan))
    field = draw(st.sampled_from(FIELDS))
    site, device = "store-h", "pos-h"
    if field == "device":  # in the topic too: a spelling that is a valid id
        device = draw(st.sampled_from(".-_")).join(pan[i : i + 4] for i in range(0, len(pan), 4))
        text = device
    stream = "status" if field == "firmware" else "payment"
    doc = json.loads(encode(next_status() if field == "firmware" else payment()))
    doc.update(site=site, device=device)
    if field == "seq":
        doc["seq"] = int(pan)
    elif field == "unknown key":
        doc[PLACEHOLDER] = 1
    elif field in ("txn_id", "acquirer", "firmware"):
        doc[field] = PLACEHOLDER
    elif field == "unknown value":
        doc["note"] = PLACEHOLDER
    raw = json.dumps(doc, ensure_ascii=False)
    spelling = json_escaped(text) if draw(st.booleans()) else json.dumps(text)[1:-1]
    return f"{DEVICE_PREFIX}/{site}/{device}/{stream}", raw.replace(PLACEHOLDER, spelling).encode()


@pytest.fixture
def formatted_log_lines() -> Iterator[list[str]]:
    """Every log record of the test as both formatters write it."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.extend(f.format(record) for f in (KeyValueFormatter(), JsonFormatter()))

    root = logging.getLogger()
    handler, level = Collect(logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield lines
    root.removeHandler(handler)
    root.setLevel(level)


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(hostile=st.lists(hostile_messages(), min_size=150, max_size=150))
def test_no_card_number_reaches_influxdb_spool_dead_letters_or_logs(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto: MosquittoServer,
    influxdb: InfluxDB1Server,
    formatted_log_lines: list[str],
    hostile: list[tuple[str, bytes]],
) -> None:
    assert all(payload_contains_pan(payload) for _, payload in hostile)
    influxdb.query(f'DROP DATABASE "{DB}"')
    influxdb.create_database(DB)
    tmp_path = tmp_path_factory.mktemp("gateway")
    config = write_config(tmp_path, mosquitto, influxdb)
    dead_letter_topic = DeadLetterTopic(mosquitto)
    try:
        with running_gateway(config) as gateway:
            ordinary = payments(ORDINARY)
            mixed = [m for pair in zip(ordinary, hostile, strict=False) for m in pair]
            publish_all(mosquitto.host, mosquitto.port, mixed + ordinary[len(hostile) :])
            assert landed(influxdb, ORDINARY) == (ORDINARY, ORDINARY)
            total = ORDINARY + len(hostile)
            wait_until(lambda: gateway.ingest.stats.acked >= total, 30, message="all acked")
            rejected = gateway.pipeline.stats().rejected
    finally:
        dead_letter_topic.close()
    assert rejected["pan_detected"] == len(hostile), rejected

    loaded = load_gateway_config(config)
    stored = [
        value
        for (measurement,) in influxdb.series_values("SHOW MEASUREMENTS", DB)
        for row in influxdb.series_values(f'SELECT * FROM "{measurement}"', DB)
        for value in row
    ]
    places = {
        "InfluxDB": [str(value) for value in stored],
        "spool": spooled_lines(loaded.spool_dir),
        "dead letters on disk": [
            p.read_text("utf-8", "replace") for p in loaded.deadletters_dir.glob("*")
        ],
        "dead-letter topic": [
            *(p.decode("utf-8", "replace") for p in dead_letter_topic.payloads),
            *(json.dumps(props) for props in dead_letter_topic.received),
        ],
        "logs": formatted_log_lines,
    }
    for place, texts in places.items():
        leaked = [text[:200] for text in texts if contains_pan(text)]
        assert not leaked, f"a card number reached the {place}: {leaked[:3]}"
    assert len(places["spool"]) >= ORDINARY and places["logs"]  # they were looked at


# A spooled line between the binary record headers (gateway/spool.py): measurement and
# tags, fields, and the 19-digit point time; ASCII, as every accepted line here is.
SPOOLED_LINE = re.compile(rb"[a-z0-9_]+,[\x20-\x7e]+? [0-9]{19}")


def spooled_lines(spool_dir: Path) -> list[str]:
    return [
        line.decode("ascii")
        for segment in spool_dir.glob("*.seg")
        for line in SPOOLED_LINE.findall(segment.read_bytes())
    ]
