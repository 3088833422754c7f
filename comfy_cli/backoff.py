"""One value that holds a whole retry policy, used by every place that tries again.

A `Backoff` answers two questions, and nothing else: how long to wait before try number
`attempt` (1 is the first retry), and whether another try is still allowed. It reads no
clock and draws no random numbers itself: the caller passes the elapsed time and a number
in [0, 1) for the jitter, so the supervisor's rules stay testable with a fake clock.
"""

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Backoff:
    first: float  # the wait before the first retry, in seconds
    factor: float = 2.0  # each wait is this many times the one before...
    cap: float = 10.0  # ...up to this
    jitter: float = 0.0  # +- this share of the wait, so many clients do not retry in lockstep
    tries: Optional[int] = None  # at most this many retries
    budget: Optional[float] = None  # no retry starts later than this many seconds after the first failure

    def delay(self, attempt, rand=0.5):
        """The wait before retry number `attempt` (1-based); `rand` in [0, 1) places the jitter."""
        base = min(self.cap, self.first * self.factor ** max(0, attempt - 1))
        return base * (1.0 + self.jitter * (2.0 * rand - 1.0))

    def allows(self, attempt, elapsed=0.0, rand=0.5):
        """May retry number `attempt` happen, `elapsed` seconds after the first failure?"""
        if self.tries is not None and attempt > self.tries:
            return False
        if self.budget is not None and elapsed + self.delay(attempt, rand) > self.budget:
            return False
        return True

    def waits(self):
        """Every wait in order (for a policy with a limit on tries), without jitter."""
        if self.tries is None:
            raise ValueError("an endless backoff has no list of waits")
        return [self.delay(n) for n in range(1, self.tries + 1)]


# The policies of a run, in one place.
SUBMIT = Backoff(first=0.5, cap=10.0, budget=45.0)  # a POST that surely never left
PROBE = Backoff(first=0.25, cap=2.0, budget=45.0)  # looking for a POST whose answer was lost
HISTORY = Backoff(first=0.05, cap=1.5, tries=6)  # the /history entry can lag the end (#11540)
GET = Backoff(first=0.25, cap=2.0, tries=4)  # an idempotent GET outside the run loop (`status`)
DOWNLOAD = Backoff(first=0.5, cap=2.0, tries=2)  # a /view download that failed
RECHECK = Backoff(first=5.0, factor=1.0, cap=5.0)  # a server not reached at the start, when others work
CANCEL = Backoff(first=0.0, factor=1.0, cap=0.0, tries=1)  # a pass for those a cancel pass deleted: at once
WITHDRAW = Backoff(first=1.0, cap=30.0)  # deleting prompts moved away from a server that is back
RECONNECT = Backoff(first=0.5, cap=10.0, jitter=0.25)  # the websocket, for as long as the run lasts


def retries(n, wait=0.0):
    """--retry N: at most `n` new attempts, each `wait` seconds after the one before failed."""
    return Backoff(first=wait, factor=1.0, cap=wait, tries=n)
