"""`comfy-cli cancel`: cancel prompts by id, and say of each only what the server confirmed.

Deleting a pending prompt and interrupting a running one are requests, not results. A prompt
can start between our /queue read and the delete, and an interrupt only takes effect at the
prompt's next check: a prompt near its end still ends `success`, files saved. So after sending
them, `cancel` watches /queue and /history (waiting `CONFIRM` between looks) until each
prompt's end is known or `within` seconds have passed, and reports what it saw.

The decisions are pure: `Watch` is told what each call answered and the time, and answers
what to do next (a cancel pass, a look at /queue, a /history entry) or when to wake;
`verdict` decides, from one look, what can be said of a prompt. `cancel` is the thin loop
that does the I/O and waits only as long as the watch asks. As in a run, a cancel pass that
deleted prompts is followed by one for those (they may have started between the read and
the delete), `backoff.CANCEL`'s wait later.
"""

import time
from typing import NamedTuple, Optional

from comfy_cli import backoff, errors, report
from comfy_cli import tracker as tr
from comfy_cli.backoff import Backoff
from comfy_cli.poller import history_events
from comfy_cli.workflow import Workflow

CONFIRM = Backoff(first=0.05, cap=0.5)  # between looks at /queue and /history

CANCELLED = "cancelled"  # removed from the queue, or interrupted: the server says so
ENDED = "ended"  # it ended on its own, before the command or before the interrupt took effect
UNCONFIRMED = "unconfirmed"  # asked, but the server has not shown the result in time
UNKNOWN = "unknown"  # in neither the queue nor the history

EXIT = {CANCELLED: errors.OK, ENDED: errors.FAILED, UNCONFIRMED: errors.TIMEOUT, UNKNOWN: errors.UNREACHABLE}


class Verdict(NamedTuple):
    kind: str  # one of the four above; the exit code follows from it
    text: str
    files: tuple = ()  # the outputs' /view URLs, for a prompt that ended on its own


def verdict(pid, asked, queued, entry, final, within, view_url, earlier=None):
    """What can be said of prompt `pid`, or None while waiting may tell more. `asked`: what was
    sent for it ("delete", "interrupt" or None); `queued`: it is in /queue now; `entry`: its
    /history entry or None; `final`: the time is up; `view_url(item)`: an output's URL;
    `earlier`: what an earlier `cancel` did to it, as the local record says (or None)."""
    if entry is not None:
        status, files = _end(pid, entry, view_url)
        if asked == "interrupt" and status == tr.INTERRUPTED:
            return Verdict(CANCELLED, "interrupted on the server")
        if asked is None:
            return Verdict(ENDED, f"nothing to cancel: it had already ended ({status})", files)
        return Verdict(ENDED, f"not cancelled: it ended before the {asked} took effect ({status})", files)
    if asked == "delete" and not queued:
        return Verdict(CANCELLED, "removed from the queue")
    if asked is None and not queued and earlier:
        return Verdict(CANCELLED, f"already cancelled ({earlier} by an earlier cancel)")
    if asked is None and not queued:
        return Verdict(UNKNOWN, "not known to the server (never submitted there, deleted, or the server restarted)")
    if not final:
        return None  # still queued, or out of the queue with its history entry not written yet (#11540)
    where = "it is still in the server's queue" if queued else "the server has not said how it ended"
    return Verdict(UNCONFIRMED, f"{asked} sent, not confirmed within {within:g} s ({where})")


def _end(pid, entry, view_url):
    """(status, output URLs) of a finished prompt, from its /history entry (as a run reads it)."""
    prompt = tr.Prompt(pid, Workflow(pid, pid, {}), None)
    for event in history_events(pid, entry, 0.0):
        prompt.handle(event)
    status = prompt.status if prompt.ended else "ended"
    return status, tuple(view_url(item) for _, item in report.output_files(prompt))


# ---- what the watch asks for ------------------------------------------------------------
class Pass(NamedTuple):
    """One cancel pass (Client.cancel): delete those that wait, interrupt those that run."""

    prompt_ids: tuple


class Look(NamedTuple):
    """Read /queue."""


class Entry(NamedTuple):
    """Read this prompt's /history entry."""

    prompt_id: str


class Wake(NamedTuple):
    """Nothing to do before this time."""

    at: float


class Watch:
    """`cancel`'s decisions (no clock, no I/O). `step(now)` answers what to do next, or None
    once `said` has a Verdict for every prompt; the caller does it and tells the answer
    (`passed`, `looked`, `found`) with the time."""

    def __init__(self, prompt_ids, within, now, view_url, earlier=None):
        self.ids = tuple(dict.fromkeys(prompt_ids))
        self.within, self.view_url, self.earlier = within, view_url, earlier or {}
        self.deleted, self.interrupted = set(), set()
        self.passes = 0
        self.todo, self.pass_at = self.ids, now  # the next cancel pass and its time, or None
        self.asked = None  # {prompt id: "delete", "interrupt" or None} once the passes are over
        self.until = None  # the end of the watch
        self.wake = None  # the next look
        self.looks = 0
        self.final = False  # the look under way is the last
        self.unread = []  # ids out of the queue whose /history this look still reads
        self.said = {}

    def step(self, now):
        if self.todo is not None:
            if now < self.pass_at:
                return Wake(self.pass_at)
            ids, self.todo = self.todo, None
            self.passes += 1
            return Pass(ids)
        if self.unread:
            return Entry(self.unread[0])
        if len(self.said) == len(self.ids):
            return None
        if now < self.wake:
            return Wake(self.wake)
        self.final = now >= self.until
        return Look()

    def passed(self, deleted, interrupted, now):
        """A pass did this (also what a pass cut short did, before its error is raised)."""
        self.deleted.update(deleted)
        self.interrupted.update(interrupted)
        if deleted and backoff.CANCEL.allows(self.passes):
            self.todo = tuple(pid for pid in self.ids if pid in deleted)
            self.pass_at = now + backoff.CANCEL.delay(self.passes)
            return
        self.asked = {pid: "interrupt" if pid in self.interrupted else "delete" if pid in self.deleted else None
                      for pid in self.ids}
        self.until = now + self.within
        self.wake = now

    def looked(self, running, pending, now):
        queued = set(running) | set(pending)
        for pid in self.ids:
            if pid in self.said:
                continue
            if pid in queued:
                self._judge(pid, True, None)
            else:
                self.unread.append(pid)
        self._looked(now)

    def found(self, pid, entry, now):
        """Its /history entry (None: not there)."""
        self.unread.remove(pid)
        self._judge(pid, False, entry)
        self._looked(now)

    def _judge(self, pid, queued, entry):
        found = verdict(pid, self.asked[pid], queued, entry, self.final, self.within, self.view_url,
                        self.earlier.get(pid))
        if found is not None:
            self.said[pid] = found

    def _looked(self, now):
        if not self.unread:
            self.looks += 1
            self.wake = min(now + CONFIRM.delay(self.looks), self.until)


def cancel(client, prompt_ids, within, deleted, interrupted, earlier=None, clock=time.monotonic, sleep=time.sleep):
    """Cancel `prompt_ids` (delete if pending, interrupt if running, by id) and watch for at
    most `within` seconds; return {prompt id: Verdict}. `deleted` and `interrupted` (sets)
    collect what was sent, also when a ServerError (raised as it comes) ends it part way;
    `earlier`: {prompt id: what an earlier `cancel` did}. Its only wait is the watch's."""
    watch = Watch(prompt_ids, within, clock(), client.view_url, earlier)
    while True:
        now = clock()
        do = watch.step(now)
        if do is None:
            return watch.said
        if type(do) is Wake:
            sleep(do.at - now)
        elif type(do) is Pass:
            gone, stopped = set(), set()
            try:
                client.cancel(do.prompt_ids, gone, stopped)
            finally:
                deleted.update(gone)
                interrupted.update(stopped)
            watch.passed(gone, stopped, clock())
        elif type(do) is Look:
            running, pending = client.queue(retry=False)
            watch.looked(running, pending, clock())
        else:
            watch.found(do.prompt_id, client.history(do.prompt_id, retry=False), clock())
