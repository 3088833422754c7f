"""`comfy-cli cancel`: cancel prompts by id, and say of each only what the server confirmed.

Deleting a pending prompt and interrupting a running one are requests, not results. A prompt
can start between our /queue read and the delete, and an interrupt only takes effect at the
prompt's next check: a prompt near its end still ends `success`, files saved. So after sending
them, `cancel` watches /queue and /history (waiting `CONFIRM` between looks) until each
prompt's end is known or `within` seconds have passed, and reports what it saw. `verdict`
decides, from one look, what can be said; it does no I/O.
"""

import time
from typing import NamedTuple, Optional

from comfy_cli import errors, report
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


def cancel(client, prompt_ids, within, deleted, interrupted, earlier=None, clock=time.monotonic, sleep=time.sleep):
    """Cancel `prompt_ids` (delete if pending, interrupt if running, by id) and watch for at
    most `within` seconds; return {prompt id: Verdict}. `deleted` and `interrupted` (sets)
    collect what was sent, also when a ServerError (raised as it comes) ends it part way;
    `earlier`: {prompt id: what an earlier `cancel` did}."""
    earlier = earlier or {}
    client.cancel(prompt_ids, deleted, interrupted)
    asked = {pid: "interrupt" if pid in interrupted else "delete" if pid in deleted else None for pid in prompt_ids}
    until = clock() + within
    said = {}
    attempt = 0
    while True:
        final = clock() >= until
        running, pending = client.queue(retry=False)
        queued = set(running) | set(pending)
        for pid in asked:
            if pid not in said:
                entry = None if pid in queued else client.history(pid, retry=False)
                found = verdict(pid, asked[pid], pid in queued, entry, final, within, client.view_url,
                                earlier.get(pid))
                if found is not None:
                    said[pid] = found
        if len(said) == len(asked):
            return said
        attempt += 1
        sleep(max(0.0, min(CONFIRM.delay(attempt), until - clock())))
