"""Rounds: asking the server over HTTP where our prompts are. Pure: no clock, no I/O.

A round is one GET /queue, then GET /history for each of our open prompts that is not in
the queue. Rounds run every `poll_interval` while the socket is down; once when the first
socket opens if some prompts were given already on the server (`wait`); once after every
reconnect (the server replays nothing; its prompt-less `executing` re-send needs to know
which prompt runs, so later socket events are held until /queue has answered, at most
`CATCHUP_HOLD`); when the socket has been quiet for `silence_check` seconds while prompts
are open (if the server moved on without telling the socket, the socket is replaced); and
when a `status` broadcast shows the queue shrank for no reason of ours (someone may have
deleted one of our prompts; if a POST was in flight then, once it is answered). A prompt
counts as missing only in a round whose /queue read was asked after the server accepted it;
missing twice in a row, it is `lost`. A failed round is followed by another after the
policy's `round_retry()` wait.
"""

from comfy_cli import events as ev
from comfy_cli import tracker as tr
from comfy_cli.commands import Changed, Mode, ReadHistory, ReadQueue, Reconnect
from comfy_cli.part import Part, earliest
from comfy_cli.poller import history_events

CATCHUP_HOLD = 2.0  # the longest socket events are held after a reconnect, waiting for /queue
STATUS_ROUND_GAP = 2.0  # at most one status-triggered round per this many seconds
MISSES_FOR_LOST = 2
QUIET, CATCHUP, POLL = "quiet", "catchup", "poll"


class _Round:
    __slots__ = ("gen", "why", "started", "history", "changed", "missing")

    def __init__(self, gen, why, started):
        self.gen = gen
        self.why = set(why)
        self.started = started
        self.history = set()  # prompt ids whose /history read is outstanding
        self.changed = False
        self.missing = False


class Rounds(Part):
    def __init__(self, board, policy, now, socket_open):
        super().__init__(board, policy, now)
        self.gen = 0
        self.round = None  # the round under way
        self.due = None if socket_open else now  # when the next round should start
        self.again = set()  # why it should
        self.not_before = now  # no round starts before this (after a failed one)
        self.failed = 0  # rounds that failed in a row
        self.last_frame = now  # the silence clock: the socket's last frame
        self.held = None  # server events held during a catch-up, or None
        self.held_until = None
        self.last_status_round = float("-inf")
        self.last_shrink = None  # when the queue last shrank for no reason of ours
        self.ended_since_status = False
        self.misses = {}  # prompt id -> rounds in a row that did not find it
        self.confirmed = {}  # prompt id -> the last /queue read asked before the server had it

    # ---- told by the other parts --------------------------------------------------------
    def opened(self, at):
        """The socket (re)opened: the quiet-socket clock starts."""
        self.last_frame = at

    def frame(self, e):
        """A message from the server's socket: held while a catch-up round is out (True: the
        round's answer goes first, see `release`), else the quiet-socket clock starts again."""
        if self.held is not None:
            self.held.append(e)
            return True
        self.last_frame = e.at
        return False

    def confirm(self, pid):
        """The server has the prompt: rounds asked before now cannot miss it."""
        self.confirmed[pid] = self.gen

    def prompt_ended(self):
        self.ended_since_status = True

    def accepted(self, prompt, now):
        """A POST was answered: if the queue shrank since it left, check on ours."""
        if self.last_shrink is not None and prompt.submitted_at is not None and self.last_shrink >= prompt.submitted_at:
            self.request(max(now, self.last_status_round + STATUS_ROUND_GAP))

    def followed(self):
        """Open prompts the server has (a round can learn something about them)."""
        for prompt in self.board.open_prompts:
            if prompt.status in (tr.SUBMITTED, tr.RUNNING):
                return True
        return False

    def request(self, at, why=POLL):
        self.again.add(why)
        if self.round is None and (self.due is None or at < self.due):
            self.due = at

    def catch_up(self, now, out):
        """A socket opened: hold its events until /queue says what runs."""
        self.held = []
        self.held_until = now + CATCHUP_HOLD
        self._begin(now, {CATCHUP}, out)

    def status(self, e):
        before = self.board.queue_remaining
        shrank = before is not None and e.queue_remaining is not None and e.queue_remaining < before
        if shrank and not self.ended_since_status:
            # The queue shrank and none of ours ended: perhaps one of ours was deleted. One whose
            # POST answer is not in yet is checked once it is (see accepted).
            self.last_shrink = e.at
            if any(p.status == tr.SUBMITTED for p in self.board.open_prompts):
                self.request(max(e.at, self.last_status_round + STATUS_ROUND_GAP))
        if shrank:
            self.ended_since_status = False

    def release(self, out):
        """Hand the events held during a catch-up to the supervisor, in order."""
        held, self.held = self.held, None
        self.held_until = None
        if held:
            for e in held:
                self.last_frame = e.at
                self.p.sup.server(e, out)

    # ---- a round ------------------------------------------------------------------------
    def _begin(self, now, why, out):
        if self.round is not None:
            self.again |= set(why)
            return
        self.due = None
        self.again = set()
        self.gen += 1
        self.round = _Round(self.gen, why, now)
        self.last_status_round = now
        self.ended_since_status = False
        out.append(ReadQueue(self.gen))

    def queue_read(self, e, now, out):
        r = self.round
        if r is None or e.gen != r.gen:
            return
        self.p.conn.answering(now, out)
        self.board.running_from_queue(e.running)
        running, pending = set(e.running), set(e.pending)
        subs, apply = self.p.subs, self.p.sup.apply
        for prompt in list(self.board.open_prompts):
            pid = prompt.prompt_id
            if prompt.status == tr.WAITING:
                continue
            if prompt.status == tr.SUBMITTING and (subs.is_posting(pid) or not subs.is_probing(pid)):
                continue  # a POST in flight, or waiting to be sent again: nothing to learn yet
            if prompt.status != tr.SUBMITTING and self.confirmed.get(pid, -1) >= r.gen:
                continue  # accepted after this /queue read was asked
            if pid in running or pid in pending:
                self.misses.pop(pid, None)
                r.changed = apply(ev.Queued(e.at, pid, pid in running), out) or r.changed
            else:
                r.history.add(pid)
        for pid in sorted(r.history):
            out.append(ReadHistory(r.gen, pid))
        self.release(out)
        if not r.history:
            self._end(now, out)

    def history_read(self, e, now, out):
        if e.gen is None:
            self.p.after.lookup_answer(e.prompt_id, e.entry, None, now, out)
            return
        r = self.round
        if r is None or e.gen != r.gen or e.prompt_id not in r.history:
            return
        r.history.discard(e.prompt_id)
        self.p.conn.answering(now, out)
        prompt = self.board.prompts[e.prompt_id]
        if e.entry is not None:
            self._found(prompt, e, r, out)
        elif not prompt.ended:
            if prompt.status == tr.SUBMITTING and self.p.subs.is_probing(e.prompt_id):
                self.p.subs.probe_missed(prompt, r.started, now, out)
            elif prompt.status in (tr.SUBMITTED, tr.RUNNING):
                self.misses[e.prompt_id] = self.misses.get(e.prompt_id, 0) + 1
                if self.misses[e.prompt_id] >= MISSES_FOR_LOST:
                    self.p.sup.apply(ev.Vanished(e.at, e.prompt_id), out)
                else:
                    r.missing = True
        if not r.history:
            self._end(now, out)

    def _found(self, prompt, e, r, out):
        """The prompt's /history entry: replay it."""
        self.misses.pop(e.prompt_id, None)
        if prompt.status == tr.SUBMITTING:
            prompt.accepted(None)
            self.p.subs.resolved(prompt, out)
            out.append(Changed(prompt))
        for event in history_events(e.prompt_id, e.entry, e.at):
            r.changed = self.p.sup.apply(event, out) or r.changed
        if prompt.ended:
            self.p.after.history_replayed(prompt, out)

    def read_failed(self, e, now, out):
        self.p.conn.not_answering(e.message, now, out)
        if e.gen is None:
            self.p.after.lookup_answer(e.prompt_id, None, e.message, now, out)
            return
        r = self.round
        if r is None or e.gen != r.gen:
            return
        if e.prompt_id is None:  # /queue failed: this round learns nothing
            r.history.clear()
            self.release(out)
        else:
            r.history.discard(e.prompt_id)
        if not r.history:
            self.failed += 1
            self.not_before = now + self.policy.round_retry().delay(self.failed)
            self._end(now, out, failed=True)

    def _end(self, now, out, failed=False):
        r = self.round
        self.round = None
        if not failed:
            self.failed = 0
        conn = self.p.conn
        poll = self.policy.poll_interval
        if QUIET in r.why and r.changed and conn.is_up():
            out.append(Mode("connection: the websocket went quiet while the server moved on; reconnecting", False))
            out.append(Reconnect())
        if conn.is_down():
            self.request(r.started + poll)
        if r.missing or failed and self.followed():
            self.request(now + poll)  # confirm before calling it lost
        self.p.subs.look_again(now + poll)  # the lost answers this round could not tell about
        if self.again and self.due is None:
            self.due = now

    # ---- time -----------------------------------------------------------------------------
    def timers(self, now, out):
        """Held messages whose wait is over first (a catch-up that took too long), then a round
        that is due, then the quiet-socket check."""
        if self.held is not None and now >= self.held_until:
            self.release(out)
        if self.round is None and self.due is not None and now >= max(self.due, self.not_before):
            if self.followed() or self.p.subs.any_probing() or self.p.conn.wants_round():
                self._begin(now, self.again or {POLL}, out)
            else:
                self.due = None
                self.again = set()
                if self.p.conn.is_down():
                    self.request(now + self.policy.poll_interval)
        if self.p.conn.is_up() and self.round is None and now - self.last_frame >= self.policy.silence_check:
            self.last_frame = now  # checked or not, the silence clock starts again
            if self.followed():
                self._begin(now, {QUIET}, out)

    def next_wakeup(self):
        held = self.held_until if self.held is not None else None
        due = quiet = None
        if self.round is None:
            if self.due is not None:
                due = max(self.due, self.not_before)
            if self.p.conn.is_up():
                quiet = self.last_frame + self.policy.silence_check  # an early wake-up is harmless
        return earliest(held, due, quiet)
