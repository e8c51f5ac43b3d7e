"""Exponential backoff with full jitter (deterministic with an injected ``random.Random``)."""

from __future__ import annotations

import random


class Backoff:
    """Delay before reconnect attempt ``n``: uniform in ``[0, min(maximum, initial * 2**n)]``.

    Full jitter spreads a crowd of clients that lost the same server, so they
    do not all come back at the same instant.
    """

    def __init__(
        self, initial: float = 0.1, maximum: float = 10.0, rng: random.Random | None = None
    ) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("need 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng if rng is not None else random.Random()

    def cap(self) -> float:
        """The upper bound of the next delay."""
        return min(self.maximum, self.initial * 2.0 ** min(self.attempt, 64))

    def next_delay(self) -> float:
        delay = self._rng.uniform(0, self.cap())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
