"""Stopping: the run's limits, giving up, and cancelling on the server. Pure: no clock, no I/O.

`timeout` counts silence from when events were *received* (their `at`), so a busy main
thread never makes a prompt time out; `deadline` counts from the start (both from the one
`Limits`). When one passes, or a signal arrives, the open prompts end and ours on the server
are cancelled, after any POST still in flight has answered (else a prompt could land after
the cancel), waiting at most `CANCEL_WAIT` for those POSTs and again for each pass of the
cancel. A pass (`Cancel`, one for the worker) reads /queue, deletes ours that wait and
interrupts ours that run; a prompt it deleted may have started between the read and the
delete, so while a pass deleted something, another follows for those, `backoff.CANCEL`'s wait
later, as often as it allows. A crashed worker (a bug) breaks the run off the same way, and
nothing waits for the answer it lost.
"""

from comfy_cli import backoff
from comfy_cli import events as ev
from comfy_cli import tracker as tr
from comfy_cli.commands import Cancel, Changed, Note
from comfy_cli.part import Part, earliest

CANCEL_WAIT = 10.0  # the longest we wait for POSTs in flight and for the cancel itself


class Stopping(Part):
    def __init__(self, board, policy, now):
        super().__init__(board, policy, now)
        self.last_heard = now  # the timeout's clock: when the server last told us anything
        self.stop = None  # (status, reason) once the run is giving up
        self.fatal = None  # a message, when the run broke off
        self.signal_code = None
        self.cancel_ids = None  # ids of the next pass, or None
        self.cancel_at = None  # when the next pass goes (None: the first, once no POST is in flight)
        self.cancel_until = None  # the most we wait for POSTs in flight, then for a pass's answer
        self.cancelling = None  # the ids of the Cancel with the worker, or None
        self.passes = 0
        self.asked = ()  # every id cancelled, and what the passes did to them:
        self.deleted, self.interrupted, self.cancel_problem = set(), set(), None

    # ---- asked and told by the other parts ------------------------------------------------
    def stopping(self):
        return self.stop is not None

    def usable(self):
        return self.stop is None and self.fatal is None

    def unconfirmed(self):
        """The ids being cancelled, whose cancel the server has not confirmed (yet)."""
        return (self.cancel_ids or ()) + (self.cancelling or ())

    def busy(self):
        """A cancel is due or with the worker: the run waits for it."""
        return self.cancel_ids is not None or self.cancelling is not None

    def holds(self, pid):
        """Is the prompt in a cancel that has not said yet what it did? Every prompt of the
        cancel is, until its last pass answered (a later pass is only for some of them)."""
        return self.busy() and pid in self.asked

    def not_to_cancel(self, pid):
        """The server never had this one after all (it refused it late)."""
        if self.cancel_ids is not None:
            self.cancel_ids = tuple(i for i in self.cancel_ids if i != pid) or None
        self.asked = tuple(i for i in self.asked if i != pid)

    def heard(self, at):
        if at > self.last_heard:
            self.last_heard = at

    def never_reached(self, problem, now):
        """The only server could not be reached before anything was sent: every prompt ends."""
        self.fatal = problem
        self.stop = (tr.ERROR, problem)
        self.p.subs.stop()
        for prompt in self.board.prompts.values():
            sent = "" if prompt.on_server else "not submitted: "  # (`wait`'s were, earlier)
            prompt.give_up(tr.ERROR, now, f"{sent}{problem}")
        self.p.after.close_all()

    # ---- events ---------------------------------------------------------------------------
    def signal(self, e, now, out):
        if self.signal_code is not None:
            return
        self.signal_code = e.code
        p = self.policy
        if p.detach_on_signal:
            what = "stopped submitting" if p.submit_only else "stopped waiting"
            self.give_up(tr.DETACHED, f"{what}: left running on the server", now, out, cancel=False)
        elif p.no_cancel:
            self.give_up(tr.DETACHED, "left running on the server (--no-cancel)", now, out, cancel=False)
        else:
            word = "" if e.code == 130 else " (terminated)"
            self.give_up(tr.CANCELLED, f"cancelled by you{word}", now, out)

    def listener_stopped(self, e, now, out):
        if e.error:
            self.break_off(f"the websocket listener stopped: {e.error}", now, out)

    def worker_crashed(self, e, now, out):
        self.break_off(f"internal error in a worker: {e.error}", now, out)
        # The crashed job never answers, and which one it was is not known: wait for none of
        # them (a POST, a download, a withdrawal), so the run can end.
        self.p.subs.forget_posts()
        self.p.conn.forget_withdrawal()
        self.p.after.drop_downloads()
        self.p.after.settle_all(out, ended_only=True)

    def cancel_done(self, e, now, out):
        """One pass answered: another for those it deleted, or say what became of each."""
        if self.cancelling is None:
            return  # (a late answer: its pass was given up already)
        ids, self.cancelling, self.cancel_until = self.cancelling, None, None
        self.deleted.update(e.deleted)
        self.interrupted.update(e.interrupted)
        if e.problem:
            self.cancel_problem = e.problem
            out.append(Note(f"could not cancel on the server: {e.problem}; prompt ids: {' '.join(ids)}"))
        elif e.deleted and backoff.CANCEL.allows(self.passes):
            self.cancel_ids = tuple(pid for pid in ids if pid in e.deleted)
            self.cancel_at = now + backoff.CANCEL.delay(self.passes)
            self._maybe_cancel(now, out)
            return
        for pid in self.asked:
            prompt = self.board.prompts[pid]
            if pid in self.interrupted:  # (also one deleted that had started after all)
                prompt.explain(": interrupted on the server")
            elif pid in self.deleted:
                prompt.explain(": removed from the queue")
            elif not self.cancel_problem:
                prompt.explain(": it had already left the server's queue")
        self.p.after.settle_all(out)

    # ---- giving up ------------------------------------------------------------------------
    def _check_limits(self, now, out):
        lim = self.policy.limits
        reason = None
        if lim.past_deadline(self.started, now):
            reason = f"deadline of {lim.deadline:g} s passed"
        elif lim.timeout is not None and self.board.open_prompts and now - self.last_heard >= lim.timeout:
            reason = f"nothing new from the server for {lim.timeout:g} s"
        if reason is None:
            return
        silent = self.p.conn.silent_since()
        if silent is not None:
            self.give_up(tr.ERROR, f"server not answering since {silent[1]}; {reason}", now, out, cancel=False)
        else:
            self.give_up(tr.TIMEOUT, reason, now, out, cancel=not self.policy.no_cancel)

    def break_off(self, message, now, out):
        if self.fatal is None:
            self.fatal = message
        self.give_up(tr.ERROR, message, now, out)

    def give_up(self, status, reason, now, out, cancel=True):
        """End every open prompt for a reason of ours; cancel those the server may have."""
        if self.stop is not None:
            return
        self.stop = (status, reason)
        p = self.policy
        cancel = cancel and not p.no_cancel
        ids = []
        for prompt in list(self.board.open_prompts):
            if not prompt.on_server:
                if status in (tr.CANCELLED, tr.DETACHED):
                    prompt.give_up(tr.CANCELLED, now, "cancelled by you before it was sent")
                else:
                    prompt.give_up(status, now, f"not submitted: {reason}")
            else:
                prompt.give_up(status, now, reason)
                if cancel:
                    ids.append(prompt.prompt_id)
                elif status == tr.TIMEOUT and p.no_cancel:
                    prompt.explain("; left running on the server" + ("" if p.detach_on_signal else " (--no-cancel)"))
            out.append(Changed(prompt))
        self.p.subs.stop()
        self.p.after.forget_lookups()  # ended, waiting for /history: report what we have
        if status in (tr.CANCELLED, tr.DETACHED):
            self.p.after.drop_downloads()  # the user wants out: do not wait for files
        if ids:
            self.cancel_ids = self.asked = tuple(ids)
            self.cancel_until = now + CANCEL_WAIT
            self._maybe_cancel(now, out)
        self.p.after.settle_all(out)

    def _maybe_cancel(self, now, out):
        """Send the next pass when due: the first once no POST is in flight (one could land
        after it otherwise), the others at their time."""
        if self.cancel_ids is None:
            return
        if self.cancel_at is None and self.p.subs.in_flight() and now < self.cancel_until:
            return
        if self.cancel_at is not None and now < self.cancel_at:
            return
        ids, self.cancel_ids, self.cancel_at = self.cancel_ids, None, None
        self.cancelling = ids
        self.cancel_until = now + CANCEL_WAIT
        self.passes += 1
        out.append(Cancel(ids))

    # ---- time -----------------------------------------------------------------------------
    def timers(self, now, out):
        """The limits (deadline, timeout), then a cancel that is due or has waited too long."""
        if self.stop is None:
            self._check_limits(now, out)
        if self.cancel_ids is not None:
            self._maybe_cancel(now, out)
        elif self.cancelling is not None and now >= self.cancel_until:
            self.cancel_done(ev.CancelDone(now, (), (), "no answer in time"), now, out)

    def next_wakeup(self):
        deadline = timeout = None
        if self.stop is None:
            lim = self.policy.limits
            deadline = lim.deadline_at(self.started)
            if lim.timeout is not None and self.board.open_prompts:
                timeout = self.last_heard + lim.timeout
        return earliest(deadline, timeout, self.cancel_until, self.cancel_at)
