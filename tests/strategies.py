"""Hypothesis strategies for valid wire messages, shared by the test packages."""

from __future__ import annotations

from hypothesis import strategies as st

from wire import messages as m
from wire.pci import card_token, contains_pan

ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
nanos = st.integers(min_value=0, max_value=m.MAX_NANOS)


def _not_a_card_number(n: int) -> bool:
    """A valid message never carries an integer that spells a card number: the
    decoder refuses those (tests/wire/test_messages.py checks that)."""
    return not contains_pan(str(n))


seqs = st.integers(min_value=0, max_value=2**63 - 1).filter(_not_a_card_number)
pct = st.floats(min_value=0.0, max_value=100.0)
celsius = st.floats(min_value=-80.0, max_value=200.0)
tokens = st.integers(min_value=10**15, max_value=10**16 - 1).map(
    lambda n: card_token(str(n), b"test-key")
)

payments = st.builds(
    m.PaymentTransaction,
    site=ids,
    device=ids,
    ts=nanos,
    seq=seqs,
    txn_id=st.from_regex(r"\A[A-Za-z_.:-][A-Za-z0-9_.:-]{0,11}\Z"),
    card_token=tokens,
    amount_minor=st.integers(min_value=0, max_value=10**10),
    currency=st.sampled_from(["EUR", "USD", "GBP", "JPY"]),
    method=st.sampled_from(m.PaymentMethod),
    acquirer=ids,
    mcc=st.from_regex(r"\A[0-9]{4}\Z"),
    response_code=st.sampled_from(["00", "05", "51", "54", "55", "91", "96", "Z3"]),
    approved=st.booleans(),
    auth_latency_ms=st.floats(min_value=0.0, max_value=600_000.0),
    offline=st.booleans(),
)
statuses = st.builds(
    m.TerminalStatus,
    site=ids,
    device=ids,
    ts=nanos,
    seq=seqs,
    battery_pct=pct,
    charging=st.booleans(),
    paper_pct=pct,
    signal_dbm=st.integers(min_value=-150, max_value=0),
    temperature_c=celsius,
    tamper=st.booleans(),
    firmware=st.from_regex(r"\A[A-Za-z0-9_.+-]{1,32}\Z"),
    offline_queue=st.integers(min_value=0, max_value=2**31 - 1),
    uptime_s=st.integers(min_value=0, max_value=2**40 - 1).filter(_not_a_card_number),
)
sensors = st.builds(
    m.SensorReading,
    site=ids,
    device=ids,
    ts=nanos,
    seq=seqs,
    temperature_c=celsius,
    humidity_pct=pct,
    door_open=st.booleans(),
    mains_power=st.booleans(),
)
healths = st.builds(
    m.HostHealth,
    site=ids,
    device=ids,
    ts=nanos,
    seq=seqs,
    cpu_temp_c=st.none() | celsius,
    load1=st.floats(min_value=0.0, max_value=10_000.0),
    mem_used_pct=pct,
    disk_used_pct=pct,
    clock_synced=st.booleans(),
    outbox_depth=st.integers(min_value=0, max_value=2**31 - 1),
    outbox_dropped=st.integers(min_value=0, max_value=2**31 - 1),
)
states = st.builds(
    m.DeviceState,
    site=ids,
    device=ids,
    ts=nanos,
    online=st.booleans(),
    reason=st.sampled_from(m.StateReason),
)
alerts = st.builds(
    m.Alert,
    alert_id=st.from_regex(r"\A[A-Za-z_.:-][A-Za-z0-9_.:-]{0,20}\Z"),
    ts=nanos,
    type=ids,
    severity=st.sampled_from(m.Severity),
    status=st.sampled_from(m.AlertStatus),
    site=st.none() | ids,
    device=st.none() | ids,
    score=st.floats(min_value=0.0, max_value=1.0),
    detector=ids,
    summary=st.text(max_size=200).filter(lambda s: not any(c.isdigit() for c in s)),
)
device_messages = payments | statuses | sensors | healths | states
any_messages = device_messages | alerts
