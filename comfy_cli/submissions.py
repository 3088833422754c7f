"""Submissions: the prompts still to send, the POSTs in flight, and the search for a POST
whose answer was lost. Pure: no clock, no I/O (the supervisor passes the time in).

Prompts go out in batch order, at most `window` POSTs in flight. A POST that surely never
left (refused) is sent again after `backoff.SUBMIT`. A POST whose answer was lost leaves the
prompt `submitting`: rounds look for it in /queue and /history (`backoff.PROBE` paces the
looks), and it is sent again only if it is still absent `SETTLE` seconds after the failure (a
gateway may forward a request late). Anything from the server about the prompt ends the
doubt. A prompt that is `submitting` is never declared lost.
"""

import enum
from collections import deque

from comfy_cli import backoff, report
from comfy_cli import events as ev
from comfy_cli import tracker as tr
from comfy_cli.commands import Added, Changed, Note, Submit
from comfy_cli.part import Part

SETTLE = 3.0  # a POST whose answer was lost must stay absent this long before it is sent again


class Next(enum.Enum):
    """What a prompt's submission does when its `due` comes."""

    RESEND = "resend"  # send the POST again (it surely never left)
    PROBE = "probe"  # look for it on the server (its answer was lost)


RESEND, PROBE = Next.RESEND, Next.PROBE
RESUMED = "resumed from the journal"


class _Job:
    """The timers of one prompt's submission (its state is the tracker's)."""

    __slots__ = ("posting", "action", "due", "tries", "failed_at", "lost_at", "lost_reason")

    def __init__(self):
        self.posting = False  # a Submit is with the worker
        self.action = None  # a Next, due at `due`, or None
        self.due = None
        self.tries = 0  # retries so far in this submission's trouble
        self.failed_at = None  # when the current trouble began (the retry budget counts from it)
        self.lost_at = None  # when the answer of the last POST was lost (the settle time counts from it)
        self.lost_reason = None


class Submissions(Part):
    def __init__(self, board, policy, started):
        super().__init__(board, policy, started)
        self.jobs = {}
        self.queue = deque()  # prompt ids still to send, in batch order
        self.posting = 0  # Submits with the worker
        self.timed = set()  # prompt ids whose job has a `due`
        self.probing = set()  # prompt ids whose lost POST answer is being looked for

    # ---- asked by the other parts -------------------------------------------------------
    def add(self, pid, send, resumed_at=None):
        """A prompt of this server; `send`: it is `waiting`, to be sent in turn; `resumed_at`:
        an earlier run sent it (from --journal): look for it before sending it again."""
        job = self.jobs[pid] = _Job()
        if send:
            self.queue.append(pid)
        if resumed_at is not None:
            job.failed_at, job.lost_at, job.lost_reason = resumed_at, float("-inf"), RESUMED
            self._due(pid, PROBE, resumed_at)

    def in_flight(self):
        return self.posting

    def to_send(self):
        return len(self.queue)

    def is_posting(self, pid):
        return self.jobs[pid].posting

    def is_probing(self, pid):
        return self.jobs[pid].action is PROBE

    def any_probing(self):
        return bool(self.probing)

    def drop(self, pid):
        """The prompt was taken away: do not send it, nor try again."""
        if pid in self.queue:
            self.queue.remove(pid)
        self._due(pid, None, None)

    def forget_timer(self, pid):
        """The prompt ended: no resend, no probe."""
        self._due(pid, None, None)

    def stop(self):
        """The run is giving up: send nothing more."""
        for pid in list(self.timed):
            self._due(pid, None, None)
        self.queue.clear()

    def forget_posts(self):
        """A worker crashed: the POST it had never answers; wait for none."""
        for job in self.jobs.values():
            job.posting = False
        self.posting = 0

    def seen(self, prompt, out):
        """The server told something about the prompt: a lost answer's doubt is over."""
        job = self.jobs[prompt.prompt_id]
        if job.action is PROBE and prompt.status != tr.SUBMITTING:
            self.resolved(prompt, out)

    def look_again(self, at):
        """A round could not tell whether the lost ones arrived: look again at `at`."""
        for pid in self.probing:
            if self.jobs[pid].due is None:
                self._due(pid, PROBE, at)

    # ---- sending ------------------------------------------------------------------------
    def pump(self, now, out):
        if not self.p.conn.ready() or self.p.stop.stopping():
            return
        limits = self.policy.limits
        while self.queue and self.posting < self.policy.window:
            pid = self.queue.popleft()
            prompt = self.board.prompts[pid]
            if prompt.ended:
                continue
            if limits.past_deadline(self.started, now):
                prompt.give_up(tr.TIMEOUT, now, f"not submitted: the deadline of {limits.deadline:g} s passed")
                out.append(Added(prompt))
                self.p.after.ended(prompt, now, out)
                continue
            prompt.sending(now)
            out.append(Added(prompt))
            self._post(pid, out)

    def _post(self, pid, out):
        job = self.jobs[pid]
        job.posting = True
        self._due(pid, None, None)
        self.posting += 1
        out.append(Submit(pid))

    def _posted(self, job):
        if job.posting:
            job.posting = False
            self.posting -= 1

    def _due(self, pid, action, due):
        job = self.jobs[pid]
        job.action, job.due = action, due
        if due is None:
            self.timed.discard(pid)
        else:
            self.timed.add(pid)
        if action is PROBE:
            self.probing.add(pid)
        else:
            self.probing.discard(pid)

    # ---- answers ------------------------------------------------------------------------
    def accepted(self, e, now, out):
        job = self.jobs[e.prompt_id]
        self._posted(job)
        self.p.conn.answering(now, out)
        prompt = self.board.prompts[e.prompt_id]
        self.p.stop.heard(e.at)
        self.p.rounds.confirm(e.prompt_id)
        self._due(e.prompt_id, None, None)
        job.failed_at = None
        job.tries = 0
        if prompt.ended:
            self.p.after.settle(prompt, out)
            return
        prompt.accepted(e.number, e.node_errors)
        self.p.after.settle(prompt, out)  # (only `submit` is done with it here)
        self.p.rounds.accepted(prompt, now)
        if e.node_errors:
            out.append(Note(f"{prompt.workflow.name}: warning: the server dropped some outputs that failed "
                            "validation:"))
            for line in report.node_error_lines(prompt.workflow, e.node_errors):
                out.append(Note(line))
        out.append(Changed(prompt))

    def failed(self, e, now, out):
        job = self.jobs[e.prompt_id]
        self._posted(job)
        prompt = self.board.prompts[e.prompt_id]
        if prompt.status != tr.SUBMITTING:
            self._failed_late(e, prompt, job, out)
            return
        if e.kind == ev.REFUSED:
            self.p.conn.answering(now, out)
            prompt.reject(e.at, rejection(e.body or {}))
        elif e.kind == ev.LOCAL:
            prompt.reject(e.at, {"type": "invalid_workflow", "message": e.message, "details": "",
                                 "node_errors": {}})
        elif e.kind == ev.FATAL:
            prompt.give_up(tr.ERROR, e.at, f"could not submit: {e.message}")
        elif e.kind == ev.NOT_SENT:
            self.p.conn.not_answering(e.message, now, out)
            job.failed_at = job.failed_at if job.failed_at is not None else now
            job.tries += 1
            wait = backoff.SUBMIT.delay(job.tries)
            if backoff.SUBMIT.allows(job.tries, now - job.failed_at) \
                    and not self.policy.limits.past_deadline(self.started, now + wait):
                self._due(e.prompt_id, RESEND, now + wait)
                return
            prompt.give_up(tr.ERROR, e.at, f"could not submit: {e.message}")
        else:  # SENT: the answer was lost; the server may have it
            if job.failed_at is None:
                job.failed_at = now
            job.lost_at = now
            job.lost_reason = e.message
            job.tries = 1
            self._due(e.prompt_id, PROBE, now + backoff.PROBE.delay(job.tries))
            return
        out.append(Changed(prompt))
        self.p.after.ended(prompt, now, out)

    def _failed_late(self, e, prompt, job, out):
        """A POST failed for a prompt the socket already showed on the server (or that ended)."""
        if e.kind == ev.SENT and prompt.status not in (tr.WAITING, tr.CANCELLED, tr.TIMEOUT, tr.ERROR):
            job.lost_reason = e.message
            self.resolved(prompt, out)
        elif e.kind == ev.REFUSED and prompt.status in tr.SEEN_ON_SERVER:
            # A gateway's (or a broken server's) refusal of a prompt the server runs: what
            # the server does wins, but the user hears of the refusal.
            said = rejection(e.body or {})["message"]
            warning = f"POST /prompt was answered {said!r}, but the server has the prompt; followed it"
            prompt.warn("refused_but_ran", warning)
            out.append(Note(f"{prompt.workflow.name}: warning: {warning}"))
        elif e.kind == ev.REFUSED and prompt.status in (tr.CANCELLED, tr.TIMEOUT, tr.DETACHED):
            # Given up on while its POST was out (a signal, a limit): it never was on the server.
            prompt.reject(e.at, rejection(e.body or {}))
            self.p.stop.not_to_cancel(prompt.prompt_id)
            out.append(Changed(prompt))
        self.p.after.settle(prompt, out)

    def resolved(self, prompt, out):
        """A prompt whose POST answer was lost turned out to be on the server."""
        job = self.jobs[prompt.prompt_id]
        if job.lost_reason == RESUMED:
            out.append(Note(f"{prompt.workflow.name}: taken up from the journal: the server has it"))
        else:
            out.append(Note(f"{prompt.workflow.name}: the answer to POST /prompt was lost, but the server has the "
                            f"prompt ({job.lost_reason})"))
        self._due(prompt.prompt_id, None, None)
        job.failed_at = None
        job.tries = 0
        self.p.rounds.confirm(prompt.prompt_id)
        self.p.after.settle(prompt, out)  # (only `submit` is done with it here)

    def probe_missed(self, prompt, asked, now, out):
        """A round whose /queue read was asked at `asked` did not find a prompt whose POST
        answer was lost."""
        job = self.jobs[prompt.prompt_id]
        if asked - job.lost_at >= SETTLE:
            # Absent long after the failure: it never arrived, so send it again.
            if not self.p.stop.stopping():
                self._post(prompt.prompt_id, out)
            return
        job.tries += 1
        if not backoff.PROBE.allows(job.tries, now - job.failed_at):
            prompt.give_up(tr.ERROR, now, f"could not submit: {job.lost_reason}")
            self.p.after.ended(prompt, now, out)
            return
        self._due(prompt.prompt_id, PROBE, now + backoff.PROBE.delay(job.tries))

    # ---- time -----------------------------------------------------------------------------
    def timers(self, now, out):
        if not self.timed:
            return
        for pid in [pid for pid in self.timed if self.jobs[pid].due <= now]:
            if self.jobs[pid].action is RESEND:
                self._post(pid, out)
            else:  # PROBE: the next round answers it
                self._due(pid, PROBE, None)
                self.p.rounds.request(now)

    def next_wakeup(self):
        if not self.timed:
            return None
        return min(self.jobs[pid].due for pid in self.timed)


def rejection(body):
    """The prompt's error, from a 400 answer's body."""
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    return {
        "type": error.get("type") or "rejected",
        "message": error.get("message") or "rejected by the server",
        "details": error.get("details") or "",
        "node_errors": body.get("node_errors") if isinstance(body.get("node_errors"), dict) else {},
    }
