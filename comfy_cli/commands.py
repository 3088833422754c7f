"""What the pure core (supervisor, dispatcher) answers with: commands for the runner.

I/O commands become jobs on a server's workers (jobs.py); view commands go to the view. Each
is a plain value: whatever a job needs to obey it (its deadline, too) travels with it.
"""

from typing import NamedTuple, Optional


# ---- I/O: what the runner must do -----------------------------------------------------
class Submit(NamedTuple):
    prompt_id: str


class ReadQueue(NamedTuple):
    gen: int


class ReadHistory(NamedTuple):
    gen: Optional[int]  # the round, or None for a read after the end
    prompt_id: str


class Download(NamedTuple):
    prompt_id: str
    key: tuple
    item: dict
    until: Optional[float] = None  # a monotonic time: the download stops there (the deadline)


class Compare(NamedTuple):
    """Check a prompt's saved outputs against the expected files (--expect)."""

    prompt_id: str


class Cancel(NamedTuple):
    prompt_ids: tuple


class Reconnect(NamedTuple):
    pass


class CheckServer(NamedTuple):
    pass


class Withdraw(NamedTuple):
    """Delete (or interrupt) prompts that were moved to another server while this one was not
    answering, and say which of them ran here anyway."""

    prompt_ids: tuple


# ---- the view: what to show (the runner hands them to it) -----------------------------
class Added(NamedTuple):
    prompt: object


class Changed(NamedTuple):
    prompt: object


class Output(NamedTuple):
    prompt: object
    node: str
    item: dict
    path: Optional[str]


class Report(NamedTuple):
    prompt: object


class Note(NamedTuple):
    text: str


class Mode(NamedTuple):
    text: str
    polling: bool


IO_COMMANDS = (Submit, ReadQueue, ReadHistory, Download, Compare, Cancel, Reconnect, CheckServer, Withdraw)
