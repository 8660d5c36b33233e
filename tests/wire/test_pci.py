import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.pci import TOKEN_PREFIX, card_token, contains_pan, luhn_valid

# Test card numbers published by the card schemes (all Luhn-valid).
TEST_PANS = [
    "4111111111111111",  # Visa 16
    "4222222222222",  # Visa 13
    "5555555555554444",  # Mastercard
    "378282246310005",  # Amex 15
    "6011111111111117",  # Discover
    "3530111333300000",  # JCB
    "6759649826438453",  # Maestro 16
    "4111111111111111110",  # 19 digits, Luhn-valid
]


@pytest.mark.parametrize("pan", TEST_PANS)
def test_known_pans_are_luhn_valid_and_detected(pan: str) -> None:
    assert luhn_valid(pan)
    assert contains_pan(pan)
    assert contains_pan(f"note: card {pan} declined")


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "x4111111111111111y",
        "0004111111111111111",
        "qty 2 4111 1111 1111 1111",
        "4111 1111 1111 1111 exp 12 27",
        "12345678901234567890",  # over 19 digits: could hide a PAN
    ],
)
def test_pans_written_with_separators_or_inside_longer_text_are_detected(text: str) -> None:
    assert contains_pan(text)


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # fails Luhn
        "411111111111",  # 12 digits: too short
        "411111******1111",  # masked, as PCI DSS allows on receipts
        "4111  1111 1111 1111",  # double space breaks the run
        "txn-2026-11-25-000123",
        "",
    ],
)
def test_non_pans_pass(text: str) -> None:
    assert not contains_pan(text)


def test_hostile_inputs_are_checked_in_bounded_time() -> None:
    assert contains_pan("1" * 1_000_000)
    assert contains_pan("1 " * 500_000)


@given(st.integers(min_value=10**12, max_value=10**19 - 1))
def test_luhn_check_digit_makes_any_number_detected(body: int) -> None:
    digits = str(body)[:18]
    for check in "0123456789":
        if luhn_valid(digits + check):
            assert contains_pan(digits + check)
            break
    else:
        pytest.fail("no Luhn check digit found")


@given(st.text(alphabet=st.characters(blacklist_categories=["Nd"]), max_size=200))
def test_text_without_digits_never_matches(text: str) -> None:
    assert not contains_pan(text)


def test_card_token_is_keyed_stable_and_not_pan_like() -> None:
    token = card_token("4111 1111 1111 1111", b"k1")
    assert token == card_token("4111111111111111", b"k1")
    assert token != card_token("4111111111111111", b"k2")
    assert token != card_token("5555555555554444", b"k1")
    assert token.startswith(TOKEN_PREFIX) and len(token) == len(TOKEN_PREFIX) + 22
    assert "4111" not in token
    assert not contains_pan(token)


def test_card_token_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="digits"):
        card_token("4111x", b"k")
    with pytest.raises(ValueError, match="key"):
        card_token("4111111111111111", b"")
