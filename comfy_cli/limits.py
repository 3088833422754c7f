"""The limits of a run, decided once (from the options) and asked by everyone who needs them.

The supervisor ends prompts at `timeout` and `deadline`, the dispatcher stops handing out
work at the `deadline` and moves work off a server silent for `failover_after`, a download
stops at the deadline it is given (`Download.until`), the listener gives each try to open
the socket `connect_try()`, and after a second Ctrl-C the process is gone `hurry_grace` later
(`gone_by`). None of them has a number of its own.
"""

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Limits:
    deadline: Optional[float] = None  # seconds from the start for the whole run
    timeout: Optional[float] = None  # seconds of silence (counted from receive times) per run
    connect_timeout: float = 10.0  # the longest the run waits for its first websocket
    failover_after: float = 20.0  # a server silent this long loses its prompts that had not started
    hurry_grace: float = 2.0  # after a second Ctrl-C, the longest the process may take to leave

    def gone_by(self, asked_at):
        """A second signal at `asked_at` asked to stop at once: the time by which the process
        must have left, whether or not the loop got to its last draw (signals.watchdog enforces it)."""
        return asked_at + self.hurry_grace

    def deadline_at(self, started):
        """The monotonic time of the deadline, or None."""
        return None if self.deadline is None else started + self.deadline

    def past_deadline(self, started, when):
        return self.deadline is not None and when - started >= self.deadline

    def connect_try(self):
        """How long one try to open the socket may take: half the connect time, so a try
        that hangs still leaves room for another before the run falls back to polling."""
        return self.connect_timeout / 2
