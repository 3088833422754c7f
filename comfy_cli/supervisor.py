"""The supervisor: every decision and every timing rule of a run, and no I/O.

Theory of operation
-------------------
The runner feeds the supervisor everything that happens, each with the time it happened:
events from the websocket (through the listener), the results of HTTP calls (through the
runner's workers), signals, and plain wake-ups. `feed(item, now)` answers with commands:
I/O to do (`Submit`, `ReadQueue`, `ReadHistory`, `Download`, `Cancel`, `Reconnect`) and
things to show (`Added`, `Changed`, `Output`, `Report`, `Note`, `Mode`). `next_wakeup()`
says when to call again if nothing arrives. The supervisor never blocks, reads no clock,
draws no random numbers of its own and touches no socket, so every rule below is tested
with a fake clock (tests/test_supervisor.py).

A prompt's life is the tracker's (tracker.py); the supervisor only adds when things are due.

Submitting: prompts go out in batch order, at most `window` POSTs in flight. A POST that
surely never left (refused) is sent again after `backoff.SUBMIT`. A POST whose answer was
lost leaves the prompt `submitting`: the supervisor looks for it in /queue and /history
(`backoff.PROBE`) and sends it again only if it is still absent `SETTLE` seconds after the
failure (a gateway may forward a request late). Anything from the server about the prompt
ends the doubt. A prompt that is `submitting` is never declared lost.

Rounds: a round is one GET /queue, then GET /history for each of our open prompts that is
not in the queue. Rounds run every `poll_interval` while the socket is down, once when the
first socket opens if some prompts were given already on the server (`wait`), once after
every reconnect (the server replays nothing; its prompt-less `executing` re-send needs to
know which prompt runs, so later socket events are held until /queue has answered, at most
`CATCHUP_HOLD`), when the socket has been quiet for `silence_check` seconds while prompts
are open (if the server moved on without telling the socket, the socket is replaced), and
when a `status` broadcast shows the queue shrank for no reason of ours (someone may have
deleted one of our prompts; if a POST was in flight then, once it is answered). A prompt counts as missing only in a round whose /queue read
was asked after the server accepted it; missing twice in a row, it is `lost`.

After the end: a prompt whose picture may be incomplete (a gap in the socket, or a success
with no outputs seen) has its /history read (`backoff.HISTORY`: the entry can lag the end,
ComfyUI #11540); its files are downloaded when asked, and a download the server failed is
tried again (`backoff.DOWNLOAD`, not past the deadline nor once the run is stopping). Then it
is reported, once.

Limits: `timeout` counts silence from when events were *received* (their `at`), so a busy
main thread never makes a prompt time out; `deadline` counts from the start. When one passes,
or a signal arrives, the open prompts end and ours on the server are cancelled, after any
POST still in flight has answered (else a prompt could land after the cancel). A crashed
worker (a bug) breaks the run off the same way, and nothing waits for the answer it lost.
"""

import time as _time
from collections import deque
from dataclasses import dataclass

from comfy_cli import backoff, report
from comfy_cli import events as ev
from comfy_cli import tracker as tr
from comfy_cli.commands import (IO_COMMANDS, Added, Cancel, Changed, CheckServer, Download,  # noqa: F401
                                Mode, Note, Output, ReadHistory, ReadQueue, Reconnect, Report, Submit, Withdraw)
from comfy_cli.limits import Limits
from comfy_cli.poller import history_events

SETTLE = 3.0  # a POST whose answer was lost must stay absent this long before it is sent again
CATCHUP_HOLD = 2.0  # the longest socket events are held after a reconnect, waiting for /queue
STATUS_ROUND_GAP = 2.0  # at most one status-triggered round per this many seconds
CANCEL_WAIT = 10.0  # the longest we wait for POSTs in flight and for the cancel itself
MISSES_FOR_LOST = 2



OPENING, UP, DOWN = "opening", "up", "down"
RESUMED = "resumed from the journal"
RESEND, PROBE = "resend", "probe"
QUIET, CATCHUP, POLL = "quiet", "catchup", "poll"


@dataclass
class Policy:
    poll_interval: float = 1.0
    silence_check: float = 15.0
    limits: Limits = Limits()
    no_cancel: bool = False
    download: bool = False  # --output-dir given
    include_temp: bool = False
    window: int = 4  # POSTs in flight at once
    detach_on_signal: bool = False  # `wait`: a signal stops following, never cancels
    submit_only: bool = False  # `submit`: a prompt is done once the server has it
    alone: bool = True  # the run's only server: unreachable at the start ends the run
    recheck: backoff.Backoff = backoff.RECHECK  # with other servers: looking again at one not reached

    def round_retry(self):
        """The wait after a round that failed: the polling pace."""
        return backoff.Backoff(first=self.poll_interval, factor=1.0, cap=self.poll_interval)


class _Job:
    """The supervisor's timers for one prompt (its state is the tracker's)."""

    __slots__ = ("posting", "action", "due", "tries", "failed_at", "lost_at", "lost_reason", "confirmed_gen", "misses")

    def __init__(self):
        self.posting = False  # a Submit is with the worker
        self.action = None  # RESEND or PROBE, due at `due`
        self.due = None
        self.tries = 0  # retries so far in this submission's trouble
        self.failed_at = None  # when the current trouble began (the retry budget counts from it)
        self.lost_at = None  # when the answer of the last POST was lost (the settle time counts from it)
        self.lost_reason = None
        self.confirmed_gen = None  # the last /queue read asked before the server had it
        self.misses = 0


class _Round:
    __slots__ = ("gen", "why", "started", "history", "changed", "missing")

    def __init__(self, gen, why, started):
        self.gen = gen
        self.why = set(why)
        self.started = started
        self.history = set()  # prompt ids whose /history read is outstanding
        self.changed = False
        self.missing = False


class _Fetch:
    """One output file being downloaded; `due` is set while it waits to be tried again."""

    __slots__ = ("node", "item", "tries", "due", "problem")

    def __init__(self, node, item):
        self.node, self.item = node, item
        self.tries = 0
        self.due = None
        self.problem = None


class _Lookup:
    __slots__ = ("attempt", "due", "asked")

    def __init__(self, due):
        self.attempt = 0
        self.due = due
        self.asked = False


class Supervisor:
    def __init__(self, prompts, policy, now, wall=0.0, socket_open=True, name=""):
        """`prompts`: tracker Prompts in batch order (`waiting` ones are submitted, others are
        followed as they are); `wall`: the wall-clock time at `now`, for messages only."""
        self.policy = policy
        self.name = name  # the server, for messages
        self.board = tr.Board()
        self.jobs = {}
        self.queue = deque()  # prompt ids still to submit
        for prompt in prompts:
            self.board.add(prompt)
            self.jobs[prompt.prompt_id] = _Job()
            if prompt.status == tr.WAITING:
                self.queue.append(prompt.prompt_id)
        self.started = now
        self.wall = wall  # (no clock is read here: the caller says what time it is)
        self.socket = OPENING if socket_open else DOWN
        self.last_frame = self.last_heard = now
        self.gen = 0
        self.round = None
        self.round_due = None if socket_open else now
        self.round_again = set()
        self.not_before = now  # no round starts before this (after a failed one)
        self.held = None  # server events held during a catch-up, or None
        self.held_until = None
        self.posting = 0
        self.timed = set()  # prompt ids whose job has a `due`
        self.probing = set()  # prompt ids whose lost POST answer is being looked for
        self.unsettled = len(self.board.prompts)
        self.lookups = {}  # prompt id -> _Lookup: /history reads after the end
        self.downloads = {}  # prompt id -> {key: _Fetch} still downloading
        self.refetch = set()  # (prompt id, key) of downloads waiting to be tried again
        self.saved = {}  # prompt id -> {output key: local path or None}
        self.last_status_round = float("-inf")
        self.last_shrink = None  # when the queue last shrank for no reason of ours
        self.ended_since_status = False
        self.unreachable_since = None  # (monotonic, wall clock text) while HTTP fails
        self.stop = None  # (status, reason) once the run is giving up
        self.cancel_ids = None  # ids to cancel once no POST is in flight
        self.cancel_until = None
        self.cancelling = False  # a Cancel is with the worker
        self.fatal = None  # a message, when the run broke off
        self.files_missing = False
        self.signal_code = None
        # Before anything is sent, when there is no socket to tell: is the server there at all?
        self.checking = False if socket_open else "no websocket"
        self.recheck_at = None
        self.rechecks = 0  # server checks that failed in a row
        self.failed_rounds = 0  # rounds that failed in a row
        self.to_delete = set()  # prompts moved elsewhere: delete them here when this server is back
        self.withdrawing = False  # a Withdraw is with the worker: the run waits for it
        self.reported = []  # prompts settled since the dispatcher last looked
        self.ran_twice = []  # moved prompts that ran here anyway

    # ---- the interface ------------------------------------------------------------------
    def start(self, now):
        """The first commands: nothing until the socket opened, unless it is known down."""
        out = []
        if self.checking:
            out.append(CheckServer())
        for prompt in self.board.prompts.values():
            if prompt.status != tr.WAITING:
                out.append(Added(prompt))
        self._timers(now, out)
        return out

    def feed(self, item, now):
        """One queue item (an event, a list of events from one socket read, or None for a
        wake-up) -> the commands it calls for."""
        out = []
        if item is not None:
            if type(item) is list:
                for event in item:
                    self._event(event, now, out)
            else:
                self._event(item, now, out)
        self._timers(now, out)
        return out

    def take(self, event, now):
        """One event without the timers: the runner shows each event's effect before the next
        (views read the prompts as they are, so a batch fed at once would skip states)."""
        out = []
        self._event(event, now, out)
        return out

    @property
    def done(self):
        return self.unsettled == 0 and self.cancel_ids is None and not self.cancelling and not self.withdrawing

    def next_wakeup(self):
        """The monotonic time of the next rule that may fire, or None."""
        times = []
        p = self.policy
        if self.socket == OPENING:
            times.append(self.started + p.limits.connect_timeout)
        if self.held is not None:
            times.append(self.held_until)
        if self.round is None and self.round_due is not None:
            times.append(max(self.round_due, self.not_before))
        if self.socket == UP and self.round is None:
            times.append(self.last_frame + p.silence_check)  # an early wake-up is harmless
        for pid in self.timed:
            times.append(self.jobs[pid].due)
        for lk in self.lookups.values():
            if not lk.asked:
                times.append(lk.due)
        for pid, key in self.refetch:
            times.append(self.downloads[pid][key].due)
        if self.stop is None:
            lim = p.limits
            if lim.deadline is not None:
                times.append(lim.deadline_at(self.started))
            if lim.timeout is not None and self.board.open_prompts:
                times.append(self.last_heard + lim.timeout)
        if self.cancel_until is not None:
            times.append(self.cancel_until)
        if self.recheck_at is not None:
            times.append(self.recheck_at)
        return min(times) if times else None

    # ---- for the dispatcher (several servers) -------------------------------------------
    def assign(self, prompt):
        """Take a `waiting` prompt to submit to this server (it goes out at the next feed)."""
        self.board.add(prompt)
        self.jobs[prompt.prompt_id] = _Job()
        self.queue.append(prompt.prompt_id)
        self.unsettled += 1

    def resume(self, prompt, now, saved=None):
        """A prompt an earlier run submitted here (from --journal), status `submitting`: look
        for it; follow it if the server has it, send it again, same id, if it never arrived.
        `saved`: its files that run saved already ({output key: path})."""
        pid = prompt.prompt_id
        if saved:
            self.saved[pid] = dict(saved)
        self.board.add(prompt)
        job = self.jobs[pid] = _Job()
        self.unsettled += 1
        job.failed_at, job.lost_at, job.lost_reason = now, float("-inf"), RESUMED
        self._due(pid, PROBE, now)

    @property
    def usable(self):
        """Can this server be given work now?"""
        return (not self.checking and self.unreachable_since is None and self.stop is None
                and self.fatal is None)

    def ours_waiting(self):
        """Our prompts here that have not started (the --per-server count)."""
        return sum(1 for p in self.board.open_prompts if p.status in tr.BEFORE_RUN)

    def load(self):
        """Outstanding work here: the server's queue as its last `status` said, our POSTs in
        flight and ours still to send."""
        return (self.board.queue_remaining or 0) + self.posting + len(self.queue)

    def silent_since(self):
        """(monotonic time, wall-clock text) since when the server has not answered, or None."""
        return self.unreachable_since

    def never_reached(self):
        """Not reached at the start (nothing sent here), and not answering now."""
        return bool(self.checking) and self.unreachable_since is not None

    def stop_rechecking(self):
        self.recheck_at = None

    def ours_open(self):
        """Our prompts here that have not ended (a copy)."""
        return list(self.board.open_prompts)

    def take_reported(self):
        """The prompts reported since the last call (the dispatcher decides on retries)."""
        reported, self.reported = self.reported, []
        return reported

    def take_ran_twice(self):
        """Ids of moved prompts found to have run here anyway, since the last call."""
        ran, self.ran_twice = self.ran_twice, []
        return ran

    def saved_files(self):
        """prompt id -> {output key: local path or None}."""
        return self.saved

    def not_withdrawn(self):
        """Ids of prompts moved away from here that were not deleted here (yet)."""
        return sorted(self.to_delete)

    def abandon(self, prompt, status, message, now):
        """The dispatcher takes a prompt away (this server stopped answering): end it here,
        and delete it from this server's queue if the server comes back."""
        pid = prompt.prompt_id
        out = []
        if prompt.on_server:
            self.to_delete.add(pid)
        if pid in self.queue:
            self.queue.remove(pid)
        self._due(pid, None, None)
        self.lookups.pop(pid, None)
        prompt.give_up(status, now, message)
        out.append(Changed(prompt))
        self._settle(prompt, out)
        return out

    def _withdrawn(self, e, now, out):
        self.withdrawing = False
        if e.problem:
            out.append(Note(f"{self.name}: could not delete the prompts moved away from it: {e.problem}"))
            return
        gone = len(e.deleted) + len(e.interrupted)
        if gone:
            out.append(Note(f"{self.name}: answering again; removed {gone} of our prompts that had been moved to "
                            "other servers"))
        for pid in e.ran:
            self.ran_twice.append(pid)

    # ---- events ---------------------------------------------------------------------------
    def _event(self, e, now, out):
        kind = type(e)
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, e, now, out)
        elif self.held is not None:
            self.held.append(e)
        else:
            self._server(e, out)

    def _server(self, e, out):
        """A message from the server (socket)."""
        self.last_frame = e.at
        if e.at > self.last_heard:
            self.last_heard = e.at
        if type(e) is ev.Status:
            self._status(e)
        self._apply(e, out)

    def _apply(self, e, out):
        """Feed one event (from the socket or a round) to the board and react; True if it
        changed a prompt."""
        prompt = self.board.feed(e)
        if prompt is None:
            return False
        if e.at > self.last_heard:
            self.last_heard = e.at
        job = self.jobs[prompt.prompt_id]
        if job.action == PROBE and prompt.status != tr.SUBMITTING:
            self._resolved(prompt, job, out)
        out.append(Changed(prompt))
        if type(e) is ev.Executed:
            self._collect(prompt, out)
        if prompt.ended:
            self._ended(prompt, e.at, out)
        elif prompt.server_done and prompt.prompt_id not in self.lookups:
            # The done marker came before any terminal event: ask /history for the outcome.
            self.lookups[prompt.prompt_id] = _Lookup(e.at)
        return True

    def _status(self, e):
        before = self.board.queue_remaining
        shrank = before is not None and e.queue_remaining is not None and e.queue_remaining < before
        if shrank and not self.ended_since_status:
            # The queue shrank and none of ours ended: perhaps one of ours was deleted. One whose
            # POST answer is not in yet is checked once it is (see _accepted).
            self.last_shrink = e.at
            if any(p.status == tr.SUBMITTED for p in self.board.open_prompts):
                self._request_round(max(e.at, self.last_status_round + STATUS_ROUND_GAP), POLL)
        if shrank:
            self.ended_since_status = False

    def _connected(self, e, now, out):
        before = self.socket
        self.socket = UP
        self.last_frame = e.at
        if before == OPENING:
            if self._followed():
                # Prompts given already on the server (`wait`): ask where they are (they may
                # have ended long ago) before trusting the socket, as after a reconnect.
                self.held = []
                self.held_until = now + CATCHUP_HOLD
                self._begin_round(now, {CATCHUP}, out)
            return  # the run's first socket: nothing else to catch up on
        self._mode(f"connection: websocket {'reconnected' if e.reconnect else 'connected'}; checking open prompts "
                   "over HTTP", False, out)
        if self._followed() or self.probing or self.to_delete:
            # Before any later frame: the re-sent `executing` must find the right prompt.
            self.held = []
            self.held_until = now + CATCHUP_HOLD
            self._begin_round(now, {CATCHUP}, out)

    def _disconnected(self, e, now, out):
        p = self.policy
        if self.socket == UP:
            self._mode(f"connection: websocket lost ({e.reason}); polling /queue and /history every "
                       f"{p.poll_interval:g} s while reconnecting", True, out)
            for prompt in self.board.open_prompts:
                prompt.gap()
            self.board.running_from_queue(())  # unknown until the next round says
        elif self.socket == OPENING:
            # Before anything is sent: if HTTP fails too, there is nothing to talk to.
            self.checking = e.reason
            self.socket = DOWN
            out.append(CheckServer())
            return
        else:
            return
        self.socket = DOWN
        self._release(out)
        self._request_round(now, POLL)

    def _server_checked(self, e, now, out):
        if e.problem is not None and not self.policy.alone:
            # Other servers can do the work: note it, and look again later.
            self._not_answering(e.problem, now, out)
            self.rechecks += 1
            self.recheck_at = now + self.policy.recheck.delay(self.rechecks)
            return
        reason, self.checking = self.checking, False
        if e.problem is not None:
            # Nothing was sent: the one error line says it all, and the summary lists them.
            self.fatal = e.problem
            self.stop = (tr.ERROR, e.problem)
            self.queue.clear()
            for prompt in self.board.prompts.values():
                sent = "" if prompt.on_server else "not submitted: "  # (`wait`'s were, earlier)
                prompt.give_up(tr.ERROR, now, f"{sent}{e.problem}")
                prompt.settle()
            self.unsettled = 0
            return
        self._answering(now, out)
        p = self.policy
        if reason != "no websocket":
            self._mode(f"connection: websocket unavailable ({reason}); polling /queue and /history every "
                       f"{p.poll_interval:g} s until it opens", True, out)
        self._request_round(now, POLL)

    def _listener_stopped(self, e, now, out):
        if e.error:
            self._break_off(f"the websocket listener stopped: {e.error}", now, out)

    def _worker_crashed(self, e, now, out):
        self._break_off(f"internal error in a worker: {e.error}", now, out)
        # The crashed job never answers, and which one it was is not known: wait for none of
        # them (a POST, a download, a withdrawal), so the run can end.
        for job in self.jobs.values():
            job.posting = False
        self.posting = 0
        self.withdrawing = False
        self._drop_downloads()
        for prompt in list(self.board.prompts.values()):
            if prompt.ended:
                self._settle(prompt, out)

    def _signal(self, e, now, out):
        if self.signal_code is not None:
            return
        self.signal_code = e.code
        if self.policy.detach_on_signal:
            what = "stopped submitting" if self.policy.submit_only else "stopped waiting"
            self._give_up(tr.DETACHED, f"{what}: left running on the server", now, out, cancel=False)
        elif self.policy.no_cancel:
            self._give_up(tr.DETACHED, "left running on the server (--no-cancel)", now, out, cancel=False)
        else:
            word = "" if e.code == 130 else " (terminated)"
            self._give_up(tr.CANCELLED, f"cancelled by you{word}", now, out)

    # ---- submitting -----------------------------------------------------------------------
    def _pump(self, now, out):
        p = self.policy
        if self.socket == OPENING or self.checking or self.stop is not None:
            return
        while self.queue and self.posting < p.window:
            pid = self.queue.popleft()
            prompt = self.board.prompts[pid]
            if prompt.ended:
                continue
            if self._past_deadline(now):
                prompt.give_up(tr.TIMEOUT, now, f"not submitted: the deadline of {p.limits.deadline:g} s passed")
                out.append(Added(prompt))
                self._ended(prompt, now, out)
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

    def _due(self, pid, action, due):
        job = self.jobs[pid]
        job.action, job.due = action, due
        if due is None:
            self.timed.discard(pid)
        else:
            self.timed.add(pid)
        if action == PROBE:
            self.probing.add(pid)
        else:
            self.probing.discard(pid)

    def _accepted(self, e, now, out):
        job = self.jobs[e.prompt_id]
        self._posted(job)
        self._answering(now, out)
        prompt = self.board.prompts[e.prompt_id]
        if e.at > self.last_heard:
            self.last_heard = e.at
        job.confirmed_gen = self.gen
        self._due(e.prompt_id, None, None)
        job.failed_at = None
        job.tries = 0
        if prompt.ended:
            self._settle(prompt, out)
            return
        prompt.accepted(e.number, e.node_errors)
        self._settle(prompt, out)  # (only `submit` is done with it here)
        if self.last_shrink is not None and prompt.submitted_at is not None and self.last_shrink >= prompt.submitted_at:
            self._request_round(max(now, self.last_status_round + STATUS_ROUND_GAP), POLL)
        if e.node_errors:
            out.append(Note(f"{prompt.workflow.name}: warning: the server dropped some outputs that failed "
                            "validation:"))
            for line in report.node_error_lines(prompt.workflow, e.node_errors):
                out.append(Note(line))
        out.append(Changed(prompt))

    def _submit_failed(self, e, now, out):
        job = self.jobs[e.prompt_id]
        self._posted(job)
        prompt = self.board.prompts[e.prompt_id]
        if prompt.status != tr.SUBMITTING:
            # The socket already showed that the server has it (or it ended meanwhile).
            if e.kind == ev.SENT and prompt.status not in (tr.WAITING, tr.CANCELLED, tr.TIMEOUT, tr.ERROR):
                job.lost_reason = e.message
                self._resolved(prompt, job, out)
            elif e.kind == ev.REFUSED and prompt.status in tr.SEEN_ON_SERVER:
                # A gateway's (or a broken server's) refusal of a prompt the server runs: what
                # the server does wins, but the user hears of the refusal.
                said = rejection(e.body or {})["message"]
                warning = f"POST /prompt was answered {said!r}, but the server has the prompt; followed it"
                prompt.warnings.append({"type": "refused_but_ran", "message": warning})
                out.append(Note(f"{prompt.workflow.name}: warning: {warning}"))
            elif e.kind == ev.REFUSED and prompt.status in (tr.CANCELLED, tr.TIMEOUT, tr.DETACHED):
                # Given up on while its POST was out (a signal, a limit): it never was on the server.
                prompt.refused_late(e.at, rejection(e.body or {}))
                if self.cancel_ids is not None:  # nothing of it to cancel
                    self.cancel_ids = tuple(i for i in self.cancel_ids if i != prompt.prompt_id) or None
                out.append(Changed(prompt))
            self._settle(prompt, out)
            return
        if e.kind == ev.REFUSED:
            self._answering(now, out)
            prompt.reject(e.at, rejection(e.body or {}))
        elif e.kind == ev.LOCAL:
            prompt.reject(e.at, {"type": "invalid_workflow", "message": e.message, "details": "",
                                 "node_errors": {}})
        elif e.kind == ev.FATAL:
            prompt.give_up(tr.ERROR, e.at, f"could not submit: {e.message}")
        elif e.kind == ev.NOT_SENT:
            self._not_answering(e.message, now, out)
            job.failed_at = job.failed_at if job.failed_at is not None else now
            job.tries += 1
            wait = backoff.SUBMIT.delay(job.tries)
            if backoff.SUBMIT.allows(job.tries, now - job.failed_at) and not self._past_deadline(now + wait):
                self._due(e.prompt_id, RESEND, now + wait)
                return
            prompt.give_up(tr.ERROR, e.at, f"could not submit: {e.message}")
        else:  # SENT: the answer was lost; the server may have it
            if job.failed_at is None:
                job.failed_at = now
            job.lost_at = now
            job.tries = 0
            job.lost_reason = e.message
            job.tries += 1
            self._due(e.prompt_id, PROBE, now + backoff.PROBE.delay(job.tries))
            return
        out.append(Changed(prompt))
        self._ended(prompt, now, out)

    def _posted(self, job):
        if job.posting:
            job.posting = False
            self.posting -= 1

    def _resolved(self, prompt, job, out):
        """A prompt whose POST answer was lost turned out to be on the server."""
        if job.lost_reason == RESUMED:
            out.append(Note(f"{prompt.workflow.name}: taken up from the journal: the server has it"))
        else:
            out.append(Note(f"{prompt.workflow.name}: the answer to POST /prompt was lost, but the server has the "
                            f"prompt ({job.lost_reason})"))
        self._due(prompt.prompt_id, None, None)
        job.failed_at = None
        job.tries = 0
        job.confirmed_gen = self.gen
        self._settle(prompt, out)  # (only `submit` is done with it here)

    def _probe_missed(self, prompt, job, asked, now, out):
        """A round whose /queue read was asked at `asked` did not find a prompt whose POST
        answer was lost."""
        if asked - job.lost_at >= SETTLE:
            # Absent long after the failure: it never arrived, so send it again.
            if self.stop is None:
                self._post(prompt.prompt_id, out)
            return
        job.tries += 1
        if not backoff.PROBE.allows(job.tries, now - job.failed_at):
            prompt.give_up(tr.ERROR, now, f"could not submit: {job.lost_reason}")
            self._ended(prompt, now, out)
            return
        self._due(prompt.prompt_id, PROBE, now + backoff.PROBE.delay(job.tries))

    # ---- rounds -------------------------------------------------------------------------
    def _followed(self):
        """Open prompts the server has (a round can learn something about them)."""
        for prompt in self.board.open_prompts:
            if prompt.status in (tr.SUBMITTED, tr.RUNNING):
                return True
        return False

    def _request_round(self, at, why=POLL):
        self.round_again.add(why)
        if self.round is None and (self.round_due is None or at < self.round_due):
            self.round_due = at

    def _begin_round(self, now, why, out):
        if self.round is not None:
            self.round_again |= set(why)
            return
        self.round_due = None
        self.round_again = set()
        self.gen += 1
        self.round = _Round(self.gen, why, now)
        self.last_status_round = now
        self.ended_since_status = False
        out.append(ReadQueue(self.gen))

    def _queue_read(self, e, now, out):
        r = self.round
        if r is None or e.gen != r.gen:
            return
        self._answering(now, out)
        self.board.running_from_queue(e.running)
        running, pending = set(e.running), set(e.pending)
        for prompt in list(self.board.open_prompts):
            pid = prompt.prompt_id
            job = self.jobs[pid]
            if prompt.status == tr.WAITING:
                continue
            if prompt.status == tr.SUBMITTING and (job.posting or job.action != PROBE):
                continue  # a POST in flight, or waiting to be sent again: nothing to learn yet
            if prompt.status != tr.SUBMITTING and job.confirmed_gen is not None and job.confirmed_gen >= r.gen:
                continue  # accepted after this /queue read was asked
            if pid in running or pid in pending:
                job.misses = 0
                r.changed = self._apply(ev.Queued(e.at, pid, pid in running), out) or r.changed
            else:
                r.history.add(pid)
        for pid in sorted(r.history):
            out.append(ReadHistory(r.gen, pid))
        self._release(out)
        if not r.history:
            self._end_round(now, out)

    def _history_read(self, e, now, out):
        if e.gen is None:
            self._lookup_answer(e.prompt_id, e.entry, None, now, out)
            return
        r = self.round
        if r is None or e.gen != r.gen or e.prompt_id not in r.history:
            return
        r.history.discard(e.prompt_id)
        self._answering(now, out)
        prompt = self.board.prompts[e.prompt_id]
        job = self.jobs[e.prompt_id]
        if e.entry is not None:
            job.misses = 0
            if prompt.status == tr.SUBMITTING:
                prompt.accepted(None)
                self._resolved(prompt, job, out)
                out.append(Changed(prompt))
            for event in history_events(e.prompt_id, e.entry, e.at):
                r.changed = self._apply(event, out) or r.changed
            if prompt.ended:
                self.lookups.pop(e.prompt_id, None)
                prompt.history_read()
                self._settle(prompt, out)
        elif not prompt.ended:
            if prompt.status == tr.SUBMITTING and job.action == PROBE:
                self._probe_missed(prompt, job, r.started, now, out)
            elif prompt.status in (tr.SUBMITTED, tr.RUNNING):
                job.misses += 1
                if job.misses >= MISSES_FOR_LOST:
                    self._apply(ev.Vanished(e.at, e.prompt_id), out)
                else:
                    r.missing = True
        if not r.history:
            self._end_round(now, out)

    def _read_failed(self, e, now, out):
        self._not_answering(e.message, now, out)
        if e.gen is None:
            self._lookup_answer(e.prompt_id, None, e.message, now, out)
            return
        r = self.round
        if r is None or e.gen != r.gen:
            return
        if e.prompt_id is None:  # /queue failed: this round learns nothing
            r.history.clear()
            self._release(out)
        else:
            r.history.discard(e.prompt_id)
        if not r.history:
            self.failed_rounds += 1
            self.not_before = now + self.policy.round_retry().delay(self.failed_rounds)
            self._end_round(now, out, failed=True)

    def _end_round(self, now, out, failed=False):
        r = self.round
        self.round = None
        if not failed:
            self.failed_rounds = 0
        if QUIET in r.why and r.changed and self.socket == UP:
            self._mode("connection: the websocket went quiet while the server moved on; reconnecting", False, out)
            out.append(Reconnect())
        if self.socket == DOWN:
            self._request_round(r.started + self.policy.poll_interval)
        if r.missing or failed and self._followed():
            self._request_round(now + self.policy.poll_interval)  # confirm before calling it lost
        for pid in self.probing:
            if self.jobs[pid].due is None:  # this round could not tell: look again
                self._due(pid, PROBE, now + self.policy.poll_interval)
        if self.round_again and self.round_due is None:
            self.round_due = now

    def _release(self, out):
        """Hand the events held during a catch-up to the board, in order."""
        held, self.held = self.held, None
        self.held_until = None
        if held:
            for e in held:
                self._server(e, out)

    # ---- after the end --------------------------------------------------------------------
    def _ended(self, prompt, at, out):
        """Once per prompt, at its end: read /history if the picture may be incomplete."""
        self.ended_since_status = True
        self._due(prompt.prompt_id, None, None)
        if prompt.wants_history:
            if prompt.prompt_id not in self.lookups:
                self.lookups[prompt.prompt_id] = _Lookup(at)
            return
        self._settle(prompt, out)

    def _lookup_answer(self, pid, entry, problem, now, out):
        lk = self.lookups.get(pid)
        if lk is None:
            return
        lk.asked = False
        prompt = self.board.prompts[pid]
        if entry is not None:
            self._answering(now, out)
            del self.lookups[pid]
            prompt.history_read()
            for event in history_events(pid, entry, now):
                self._apply(event, out)
            self._settle(prompt, out)
            return
        lk.attempt += 1
        if backoff.HISTORY.allows(lk.attempt):
            lk.due = now + backoff.HISTORY.delay(lk.attempt)
            return
        del self.lookups[pid]
        if problem:
            out.append(Note(f"{prompt.workflow.name}: cannot read /history: {problem}"))
        self._settle(prompt, out)  # what the socket told us is all we have
        # (if it had not ended after all, the socket or a round will tell)

    def _collect(self, prompt, out):
        """Output files as soon as they are named: download them, or show where they are."""
        done = self.saved.setdefault(prompt.prompt_id, {})
        for node, item in report.output_files(prompt, self.policy.include_temp):
            key = report.output_key(node, item)
            if key in done:
                continue
            done[key] = None
            if self.policy.download:
                self.downloads.setdefault(prompt.prompt_id, {})[key] = _Fetch(node, item)
                out.append(Download(prompt.prompt_id, key, item, self._until()))
            else:
                out.append(Output(prompt, node, item, None))

    def _downloaded(self, e, now, out):
        waiting = self.downloads.get(e.prompt_id, {})
        fetch = waiting.get(e.key)
        if fetch is None or fetch.due is not None:
            return
        if e.retry and self.stop is None:
            wait = backoff.DOWNLOAD.delay(fetch.tries + 1)
            if backoff.DOWNLOAD.allows(fetch.tries + 1) and not self._past_deadline(now + wait):
                fetch.tries += 1
                fetch.due = now + wait
                fetch.problem = e.problem
                self.refetch.add((e.prompt_id, e.key))
                return
        self._fetched(e.prompt_id, e.key, e.path, e.problem, out)

    def _drop_downloads(self):
        """Wait for no file any more (those not saved count as missing)."""
        if self.downloads:
            self.downloads.clear()
            self.refetch.clear()
            self.files_missing = True

    def _fetched(self, pid, key, path, problem, out):
        """A download's last word: saved at `path`, or not (`problem`)."""
        waiting = self.downloads[pid]
        fetch = waiting.pop(key)
        if not waiting:
            del self.downloads[pid]  # (only open downloads stay: a long batch does not pile up)
        node, item = fetch.node, fetch.item
        prompt = self.board.prompts[pid]
        self.saved.setdefault(pid, {})[key] = path
        if problem:
            out.append(Note(f"{prompt.workflow.name}: {problem}"))
        if path is None:
            self.files_missing = True
            prompt.warnings.append({"type": "download", "message": f"not saved: {item.get('filename')!r}"})
        out.append(Output(prompt, node, item, path))
        self._settle(prompt, out)

    def _settle(self, prompt, out):
        """Report the prompt once its end is final and nothing more is coming for it."""
        pid = prompt.prompt_id
        if prompt.settled or pid in self.lookups or self.downloads.get(pid):
            return
        if not prompt.ended and not (self.policy.submit_only and prompt.status in (tr.SUBMITTED, tr.RUNNING)):
            return
        if self.cancel_ids is not None and pid in self.cancel_ids or self.cancelling and pid in self.cancelling:
            return
        if self.jobs[pid].posting:
            return  # a POST is still out: it may yet need cancelling
        prompt.settle()
        self.unsettled -= 1
        self.reported.append(prompt)
        out.append(Report(prompt))

    # ---- limits, giving up, cancelling ----------------------------------------------------
    def _until(self):
        return self.policy.limits.deadline_at(self.started)

    def _past_deadline(self, when):
        return self.policy.limits.past_deadline(self.started, when)

    def _check_limits(self, now, out):
        p = self.policy
        lim = p.limits
        reason = None
        if self._past_deadline(now):
            reason = f"deadline of {lim.deadline:g} s passed"
        elif lim.timeout is not None and self.board.open_prompts and now - self.last_heard >= lim.timeout:
            reason = f"nothing new from the server for {lim.timeout:g} s"
        if reason is None:
            return
        if self.unreachable_since is not None:
            self._give_up(tr.ERROR, f"server not answering since {self.unreachable_since[1]}; {reason}", now, out,
                          cancel=False)
        else:
            self._give_up(tr.TIMEOUT, reason, now, out, cancel=not p.no_cancel)

    def _break_off(self, message, now, out):
        if self.fatal is None:
            self.fatal = message
        self._give_up(tr.ERROR, message, now, out)

    def _give_up(self, status, reason, now, out, cancel=True):
        """End every open prompt for a reason of ours; cancel those the server may have."""
        if self.stop is not None:
            return
        self.stop = (status, reason)
        cancel = cancel and not self.policy.no_cancel
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
                elif status == tr.TIMEOUT and self.policy.no_cancel:
                    why = "" if self.policy.detach_on_signal else " (--no-cancel)"
                    prompt.error["message"] += f"; left running on the server{why}"
            out.append(Changed(prompt))
        for pid in list(self.timed):
            self._due(pid, None, None)
        self.queue.clear()
        for pid in list(self.lookups):  # ended, waiting for /history: report what we have
            del self.lookups[pid]
        if status in (tr.CANCELLED, tr.DETACHED):
            self._drop_downloads()  # the user wants out: do not wait for files
        if ids:
            self.cancel_ids = tuple(ids)
            self.cancel_until = now + CANCEL_WAIT
            self._maybe_cancel(now, out)
        for prompt in self.board.prompts.values():
            self._settle(prompt, out)

    def _maybe_cancel(self, now, out):
        """Send the Cancel once no POST is in flight (one could land after it otherwise)."""
        if self.cancel_ids is None or (self.posting and now < self.cancel_until):
            return
        ids, self.cancel_ids = self.cancel_ids, None
        self.cancelling = ids
        self.cancel_until = now + CANCEL_WAIT
        out.append(Cancel(ids))

    def _cancel_done(self, e, now, out):
        ids = self.cancelling or ()
        self.cancelling = False
        self.cancel_until = None
        deleted, interrupted = set(e.deleted), set(e.interrupted)
        if e.problem:
            out.append(Note(f"could not cancel on the server: {e.problem}; prompt ids: {' '.join(ids)}"))
        for pid in ids:
            prompt = self.board.prompts[pid]
            if prompt.error is None:
                continue
            if pid in deleted:
                prompt.error["message"] += ": removed from the queue"
            elif pid in interrupted:
                prompt.error["message"] += ": interrupted on the server"
            elif not e.problem:
                prompt.error["message"] += ": it had already left the server's queue"
        for prompt in self.board.prompts.values():
            self._settle(prompt, out)

    # ---- reachability ---------------------------------------------------------------------
    def _not_answering(self, message, now, out):
        if self.unreachable_since is None:
            since = _time.strftime("%H:%M:%S", _time.localtime(self.wall + (now - self.started)))
            self.unreachable_since = (now, since)
            out.append(Note(f"connection: server not answering since {since} ({message}); retrying"))

    def _answering(self, now, out):
        if self.to_delete and not self.checking:
            # Back after its prompts were moved: before anything else, make sure they do not
            # run here a second time.
            out.append(Withdraw(tuple(sorted(self.to_delete))))
            self.to_delete = set()
            self.withdrawing = True
        if self.unreachable_since is not None:
            out.append(Note(f"connection: server answering again after {now - self.unreachable_since[0]:.0f} s"))
            self.unreachable_since = None

    def _mode(self, text, polling, out):
        out.append(Mode(text, polling))

    # ---- timers -------------------------------------------------------------------------
    def _timers(self, now, out):
        p = self.policy
        if self.recheck_at is not None and now >= self.recheck_at:
            self.recheck_at = None
            out.append(CheckServer())
        if self.socket == OPENING and now >= self.started + p.limits.connect_timeout:
            self._disconnected(ev.Disconnected(now, f"no answer within {p.limits.connect_timeout:g} s"), now, out)
        if self.held is not None and now >= self.held_until:
            self._release(out)
        for pid in [pid for pid in self.timed if self.jobs[pid].due <= now]:
            job = self.jobs[pid]
            if job.action == RESEND:
                self._post(pid, out)
            else:  # PROBE: the next round answers it
                self._due(pid, PROBE, None)
                self._request_round(now, POLL)
        if self.round is None and self.round_due is not None and now >= max(self.round_due, self.not_before):
            if self._followed() or self.probing or self.to_delete:
                self._begin_round(now, self.round_again or {POLL}, out)
            else:
                self.round_due = None
                self.round_again = set()
                if self.socket == DOWN:
                    self._request_round(now + p.poll_interval)
        if self.socket == UP and self.round is None and now - self.last_frame >= p.silence_check:
            self.last_frame = now  # checked or not, the silence clock starts again
            if self._followed():
                self._begin_round(now, {QUIET}, out)
        for pid, lk in self.lookups.items():
            if not lk.asked and lk.due <= now:
                lk.asked = True
                out.append(ReadHistory(None, pid))
        if self.stop is None:
            self._check_limits(now, out)
        for pid, key in list(self.refetch):
            fetch = self.downloads[pid][key]
            if self.stop is not None:  # the run is giving up: no more tries
                self.refetch.discard((pid, key))
                self._fetched(pid, key, None, fetch.problem, out)
            elif fetch.due <= now:
                self.refetch.discard((pid, key))
                fetch.due = None
                out.append(Download(pid, key, fetch.item, self._until()))
        if self.cancel_ids is not None:
            self._maybe_cancel(now, out)
        elif self.cancelling and now >= self.cancel_until:
            self._cancel_done(ev.CancelDone(now, (), (), "no answer in time"), now, out)
        self._pump(now, out)


_HANDLERS = {
    ev.Connected: Supervisor._connected,
    ev.Disconnected: Supervisor._disconnected,
    ev.ListenerStopped: Supervisor._listener_stopped,
    ev.Signal: Supervisor._signal,
    ev.ServerChecked: Supervisor._server_checked,
    ev.Withdrawn: Supervisor._withdrawn,
    ev.WorkerCrashed: Supervisor._worker_crashed,
    ev.Accepted: Supervisor._accepted,
    ev.SubmitFailed: Supervisor._submit_failed,
    ev.QueueRead: Supervisor._queue_read,
    ev.HistoryRead: Supervisor._history_read,
    ev.ReadFailed: Supervisor._read_failed,
    ev.Downloaded: Supervisor._downloaded,
    ev.CancelDone: Supervisor._cancel_done,
}


def rejection(body):
    """The prompt's error, from a 400 answer's body."""
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    return {
        "type": error.get("type") or "rejected",
        "message": error.get("message") or "rejected by the server",
        "details": error.get("details") or "",
        "node_errors": body.get("node_errors") if isinstance(body.get("node_errors"), dict) else {},
    }
