# SPDX-License-Identifier: BSD-3-Clause
"""Exponential backoff with jitter for the pool's reconnection attempts."""

from __future__ import annotations

import random

__all__ = ["Backoff", "jitter"]


def jitter(value: float, low: float, high: float) -> float:
    """``value`` changed by a random fraction between ``low`` and ``high`` (-0.1 to 0.1: ±10 %)."""
    return value * (1.0 + low + (high - low) * random.random())  # noqa: S311 (not cryptographic)


class Backoff:
    """The delays between failed attempts: 1 s (±10 %), then doubling, up to a give-up time.

    The delays are the same as psycopg_pool's, so that the two pools behave alike against a
    server that went away. A delay never exceeds the time since the first failure plus the
    first delay, which bounds how late the pool notices that the server is back.
    """

    #: The first delay, in seconds.
    INITIAL_DELAY = 1.0
    #: The random fraction added to the first delay, so that many clients do not reconnect at once.
    DELAY_JITTER = 0.1
    #: The factor between one delay and the next.
    DELAY_BACKOFF = 2.0

    def __init__(self, give_up_after: float, now: float) -> None:
        self.started = now
        self.give_up_at = now + give_up_after
        self.delay = 0.0

    def next_delay(self, now: float) -> float:
        """The seconds to wait before the next attempt after a failure at ``now``."""
        if self.delay == 0.0:
            self.delay = jitter(self.INITIAL_DELAY, -self.DELAY_JITTER, self.DELAY_JITTER)
        else:
            self.delay *= self.DELAY_BACKOFF
        # The last attempt is made at the give-up time, not after it.
        return max(0.0, min(self.delay, self.give_up_at - now))

    def expired(self, now: float) -> bool:
        """Whether attempts have failed for the whole give-up time."""
        return now >= self.give_up_at
