"""The fleet's card population: fake Luhn-valid PANs that never leave the terminal.

A card is an index into the population; its PAN is derived from the fleet
seed and the index, and everything past the terminal sees only
``wire.pci.card_token(pan, key)``. Cardholders shop with a skewed frequency
(a few cards are used a lot), modelled with a Pareto draw over the indices.
"""

from __future__ import annotations

import hashlib
import random
from typing import Final

from wire import pci

BINS: Final = ("411111", "453201", "476173", "510510", "520082", "545454", "222300")
PAN_LENGTH: Final = 16


def luhn_check_digit(partial: str) -> str:
    """The digit that makes ``partial + digit`` pass the Luhn check."""
    for digit in "0123456789":
        if pci.luhn_valid(partial + digit):
            return digit
    raise AssertionError("unreachable: one of ten digits always completes a Luhn number")


def make_pan(seed: str) -> str:
    """A Luhn-valid 16-digit test PAN derived from ``seed`` (same seed, same PAN)."""
    digest = hashlib.sha256(seed.encode()).digest()
    bin_prefix = BINS[digest[0] % len(BINS)]
    body = str(int.from_bytes(digest[1:12], "big")).zfill(PAN_LENGTH)
    partial = bin_prefix + body[: PAN_LENGTH - len(bin_prefix) - 1]
    return partial + luhn_check_digit(partial)


class CardPopulation:
    """``size`` cards of one fleet; tokens are computed once per card and kept."""

    def __init__(self, fleet_seed: int, size: int, key: bytes) -> None:
        self._seed = fleet_seed
        self._size = size
        self._key = key
        self._tokens: dict[int, str] = {}

    @property
    def size(self) -> int:
        return self._size

    def pan(self, index: int) -> str:
        return make_pan(f"{self._seed}:card:{index}")

    def token(self, index: int) -> str:
        token = self._tokens.get(index)
        if token is None:
            token = self._tokens[index] = pci.card_token(self.pan(index), self._key)
        return token

    def draw(self, rng: random.Random) -> str:
        """The token of a card presented at a till (skewed towards frequent shoppers)."""
        index = int(rng.paretovariate(1.2) * 7) % self._size
        return self.token(index)

    def stranger(self, label: str) -> str:
        """A card from outside the population (stolen or enumerated numbers), by label."""
        return pci.card_token(make_pan(f"{self._seed}:stranger:{label}"), self._key)
