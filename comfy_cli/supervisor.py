"""The supervisor: every decision and every timing rule of one server's run, and no I/O.

Theory of operation
-------------------
The runner feeds the supervisor everything that happens, each with the time it happened:
events from the websocket (through the listener), the results of HTTP calls (through the
runner's workers), signals, and plain wake-ups. `feed(item, now)` answers with commands
(commands.py): I/O to do (`Submit`, `ReadQueue`, `ReadHistory`, `Download`, `Compare`, `Cancel`,
`Reconnect`, `CheckServer`, `Withdraw`) and things to show (`Added`, `Changed`, `Output`,
`Report`, `Note`, `Mode`). `next_wakeup()` says when to call again if nothing arrives: the
earliest of its parts'. The supervisor never blocks, reads no clock, draws no random numbers
of its own and touches no socket, so every rule is tested with a fake clock
(tests/test_supervisor.py, tests/test_parts.py).

A prompt's life is the tracker's (tracker.py); the supervisor only adds when things are due.
It is made of parts, each holding the state of one concern and its timers, each pure:

- `Connection` (connection.py): the socket as the run sees it, whether HTTP answers, the
  server check and its rechecks, withdrawing prompts moved away (and its retries);
- `Submissions` (submissions.py): the queue to send, the window of POSTs in flight, resends,
  and the search for a POST whose answer was lost;
- `Rounds` (rounds.py): /queue + /history rounds: catch-up after a (re)connect, the quiet
  socket, polling while it is down, missing twice -> lost;
- `Aftercare` (aftercare.py): /history after the end, downloads and their retries, the
  comparison with --expect's files, the report (`settle`);
- `Stopping` (stopping.py): the limits (`timeout`, `deadline`), signals, giving up and
  cancelling on the server.

The supervisor routes each event to the part it concerns, feeds the server's messages to the
tracker's board (`apply`), and answers the dispatcher. The parts ask each other through
methods; none reads or writes another's attributes.
"""

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import NamedTuple, Optional

from comfy_cli import backoff
from comfy_cli import events as ev
from comfy_cli import tracker as tr
from comfy_cli.aftercare import Aftercare
from comfy_cli.commands import (IO_COMMANDS, Added, Cancel, Changed, CheckServer, Compare, Download,  # noqa: F401
                                Mode, Note, Output, ReadHistory, ReadQueue, Reconnect, Report, Submit, Withdraw)
from comfy_cli.connection import Connection
from comfy_cli.limits import Limits
from comfy_cli.part import earliest
from comfy_cli.rounds import CATCHUP_HOLD, STATUS_ROUND_GAP, Rounds  # noqa: F401
from comfy_cli.stopping import CANCEL_WAIT, Stopping  # noqa: F401
from comfy_cli.submissions import SETTLE, Submissions, rejection  # noqa: F401


@dataclass
class Policy:
    poll_interval: float = 1.0
    silence_check: float = 15.0
    limits: Limits = field(default_factory=Limits)
    no_cancel: bool = False
    download: bool = False  # --output-dir given
    expect: bool = False  # --expect: a success's saved outputs are compared before it is reported
    include_temp: bool = False
    window: int = 4  # POSTs in flight at once
    detach_on_signal: bool = False  # `wait`: a signal stops following, never cancels
    submit_only: bool = False  # `submit`: a prompt is done once the server has it
    alone: bool = True  # the run's only server: unreachable at the start ends the run
    recheck: backoff.Backoff = backoff.RECHECK  # with other servers: looking again at one not reached

    def round_retry(self):
        """The wait after a round that failed: the polling pace."""
        return backoff.Backoff(first=self.poll_interval, factor=1.0, cap=self.poll_interval)


class Outcome(NamedTuple):
    """What the runner's summary needs from a server's supervisor once the run is over."""

    fatal: Optional[str]  # why the run broke off, if it did
    signal_code: Optional[int]
    files_missing: bool  # asked-for files that were not saved
    saved: dict  # prompt id -> {output key: local path or None}
    not_withdrawn: list  # ids of moved prompts that may still be in its queue


class Supervisor:
    def __init__(self, prompts, policy, now, wall=0.0, socket_open=True, name=""):
        """`prompts`: tracker Prompts in batch order (`waiting` ones are submitted, others are
        followed as they are); `wall`: the wall-clock time at `now`, for messages only."""
        self.policy = policy
        self.name = name  # the server, for messages
        self.board = tr.Board()
        subs = Submissions(self.board, policy, now)
        for prompt in prompts:
            self.board.add(prompt)
            subs.add(prompt.prompt_id, send=prompt.status == tr.WAITING)
        self.subs = subs
        self.conn = Connection(self.board, policy, now, wall, socket_open, name)
        self.rounds = Rounds(self.board, policy, now, socket_open)
        self.after = Aftercare(self.board, policy, now, len(self.board.prompts))
        self.stop = Stopping(self.board, policy, now)
        parts = SimpleNamespace(sup=self, conn=self.conn, subs=subs, rounds=self.rounds, after=self.after,
                                stop=self.stop)
        for part in (self.conn, subs, self.rounds, self.after, self.stop):
            part.link(parts)
        self._handlers = {
            ev.Connected: self.conn.connected, ev.Disconnected: self.conn.disconnected,
            ev.ServerChecked: self.conn.server_checked, ev.Withdrawn: self.conn.withdrawn,
            ev.ListenerStopped: self.stop.listener_stopped, ev.Signal: self.stop.signal,
            ev.WorkerCrashed: self.stop.worker_crashed, ev.CancelDone: self.stop.cancel_done,
            ev.Accepted: subs.accepted, ev.SubmitFailed: subs.failed,
            ev.QueueRead: self.rounds.queue_read, ev.HistoryRead: self.rounds.history_read,
            ev.ReadFailed: self.rounds.read_failed, ev.Downloaded: self.after.downloaded,
            ev.Compared: self.after.compared,
        }

    # ---- the interface ------------------------------------------------------------------
    def start(self, now):
        """The first commands: nothing until the socket opened, unless it is known down."""
        out = []
        if not self.conn.usable():
            out.append(CheckServer())
        for prompt in self.board.prompts.values():
            if prompt.status != tr.WAITING:
                out.append(Added(prompt))
        self._timers(now, out)
        return out

    def feed(self, item, now):
        """One queue item (an event, a list of events from one socket read, or None for a
        wake-up) -> the commands it calls for."""
        if item is None:
            out = []
        elif type(item) is list:
            out = [c for event in item for c in self.take(event, now)]
        else:
            out = self.take(item, now)
        self._timers(now, out)
        return out

    def take(self, event, now):
        """One event without the timers: the runner shows each event's effect before the next
        (views read the prompts as they are, so a batch fed at once would skip states).
        Events of our own (results of I/O, signals) go to the part they concern; the server's
        messages are held during a catch-up round, else taken at once."""
        out = []
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event, now, out)
        elif not self.rounds.frame(event):
            self.server(event, out)
        return out

    @property
    def done(self):
        return self.after.all_settled() and not self.stop.busy() and not self.conn.busy()

    def next_wakeup(self):
        """The monotonic time of the next rule that may fire, or None."""
        return earliest(self.conn.next_wakeup(), self.rounds.next_wakeup(), self.subs.next_wakeup(),
                        self.after.next_wakeup(), self.stop.next_wakeup())

    def prompt(self, pid):
        return self.board.prompts[pid]

    def outcome(self):
        stop, after = self.stop, self.after
        return Outcome(stop.fatal, stop.signal_code, after.files_missing, after.saved, self.conn.not_withdrawn())

    def saved(self, pid):
        """One prompt's files: {output key: local path or None}, or None if it has none here."""
        return self.after.saved.get(pid)

    # ---- for the dispatcher (several servers) -------------------------------------------
    def assign(self, prompt):
        """Take a `waiting` prompt to submit to this server (it goes out at the next feed)."""
        self.board.add(prompt)
        self.subs.add(prompt.prompt_id, send=True)
        self.after.add()

    def resume(self, prompt, now, saved=None):
        """A prompt an earlier run submitted here (from --journal), status `submitting`: look
        for it; follow it if the server has it, send it again, same id, if it never arrived.
        `saved`: its files that run saved already ({output key: path})."""
        self.board.add(prompt)
        self.subs.add(prompt.prompt_id, send=False, resumed_at=now)
        self.after.add({prompt.prompt_id: dict(saved)} if saved else None)

    @property
    def usable(self):
        """Can this server be given work now?"""
        return self.conn.usable() and self.stop.usable()

    def load(self):
        """Outstanding work here: the server's queue as its last `status` said, our POSTs in
        flight and ours still to send."""
        return (self.board.queue_remaining or 0) + self.subs.in_flight() + self.subs.to_send()

    def silent_since(self):
        """(monotonic time, wall-clock text) since when the server has not answered, or None."""
        return self.conn.silent_since()

    def reached(self):
        """Heard from at least once (its socket opened, or HTTP answered): until then nothing
        is sent to it."""
        return self.conn.reached()

    def unreachable(self, problem, now):
        """No server of the run was ever reached: end everything here unsent, check no more."""
        self.conn.stop_rechecking()
        self.stop.never_reached(problem, now)

    def ours_open(self):
        """Our prompts here that have not ended (a copy)."""
        return list(self.board.open_prompts)

    def take_reported(self):
        """The prompts reported since the last call (the dispatcher decides on retries)."""
        return self.after.take_reported()

    def take_ran_twice(self):
        """Ids of moved prompts found to have run here anyway, since the last call."""
        return self.conn.take_ran_twice()

    def may_still_run(self):
        """Ids of ours the server may still run: open there, or cancelled with no answer yet."""
        ids = [p.prompt_id for p in self.board.open_prompts if p.on_server]
        return ids + [i for i in self.stop.unconfirmed() if i not in ids]

    def abandon(self, prompt, status, message, now):
        """The dispatcher takes a prompt away (this server stopped answering): end it here,
        and delete it from this server's queue if the server comes back."""
        pid = prompt.prompt_id
        out = []
        if prompt.on_server:
            self.conn.to_withdraw(pid)
        self.subs.drop(pid)
        self.after.forget(pid)
        prompt.give_up(status, now, message)
        out.append(Changed(prompt))
        self.after.settle(prompt, out)
        return out

    # ---- events ---------------------------------------------------------------------------
    def server(self, e, out):
        """A message from the server (socket), not held (`Rounds.frame`)."""
        self.stop.heard(e.at)
        if type(e) is ev.Status:
            self.rounds.status(e)
        prompt = self.board.feed(e)
        if prompt is not None:
            self._changed(prompt, e, out)

    def apply(self, e, out):
        """Feed one event from a round or a /history read (not the socket: `server`) to the
        board and react; True if it changed a prompt."""
        prompt = self.board.feed(e)
        if prompt is None:
            return False
        self.stop.heard(e.at)
        self._changed(prompt, e, out)
        return True

    def _changed(self, prompt, e, out):
        """`e` changed `prompt`."""
        self.subs.seen(prompt, out)
        out.append(Changed(prompt))
        if type(e) is ev.Executed:
            self.after.collect(prompt, out)
        if prompt.ended:
            self.after.ended(prompt, e.at, out)
        elif prompt.server_done:
            # The done marker came before any terminal event: ask /history for the outcome.
            self.after.look_up(prompt.prompt_id, e.at)

    # ---- time -------------------------------------------------------------------------------
    def _timers(self, now, out):
        """Every part's rules that may be due, in an order that matters: a resend or probe
        before the round that answers it, the limits before the downloads they stop, and the
        window refilled last, once all else is known."""
        self.conn.timers(now, out)
        self.subs.timers(now, out)
        self.rounds.timers(now, out)
        self.stop.timers(now, out)
        self.after.timers(now, out)
        self.subs.pump(now, out)
