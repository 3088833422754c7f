"""Connection: the socket's state as the run sees it, whether the server answers HTTP, and
taking back prompts moved away while it did not. Pure: no clock, no I/O.

Nothing is sent before the first socket opened: it says the server is there. If it does not
open within the limits' `connect_timeout` (or fails at once), a `CheckServer` asks over HTTP:
the only server not answering ends the run; with other servers it is noted and checked again
(`policy.recheck`, a Backoff), and the dispatcher gives the work to the others. Any answer
ends a "not answering" spell. A server that answers again after its prompts were moved away
(failover) first has them deleted (`Withdraw`, one pass like a cancel's, and one more for
those deleted, which may have started meanwhile: `backoff.CANCEL`); a withdrawal that fails
is tried again (`backoff.WITHDRAW`) until it succeeds or the run ends, and those never
removed are listed at the end (`not_withdrawn`).

The websocket's own timers (connect tries, ping and pong, reconnect waits) are the
listener's; this part only hears what became of them (`Connected`, `Disconnected`).
"""

import enum
import time as _time

from comfy_cli import backoff
from comfy_cli import events as ev
from comfy_cli.commands import CheckServer, Mode, Note, Withdraw
from comfy_cli.part import Part, earliest

NO_SOCKET = "no websocket"  # why a server is checked when the run has no socket at all


class Socket(enum.Enum):
    OPENING = "opening"
    UP = "up"
    DOWN = "down"


class Connection(Part):
    def __init__(self, board, policy, now, wall, socket_open, name):
        super().__init__(board, policy, now)
        self.wall = wall  # the wall-clock time at `now`, for messages only
        self.name = name
        self.socket = Socket.OPENING if socket_open else Socket.DOWN
        # Before anything is sent, when there is no socket to tell: is the server there at all?
        self.checking = None if socket_open else NO_SOCKET  # why a CheckServer is out, or None
        self.unreachable_since = None  # (monotonic, wall clock text) while HTTP fails
        self.recheck_at = None
        self.rechecks = 0  # server checks that failed in a row
        self.to_delete = set()  # prompts moved elsewhere: delete them here when this server is back
        self.withdrawing = None  # the ids of the Withdraw with the worker, or None
        self.withdraw_at = None  # when a failed withdrawal is tried again
        self.withdraw_tries = 0
        self.follow_up = None  # ids the last pass deleted: another pass makes sure none had started
        self.follow_at = None
        self.following = False  # the Withdraw with the worker is such a pass
        self.passes = 0  # passes of this withdrawal that worked
        self.ran_twice = []  # moved prompts that ran here anyway

    # ---- asked by the other parts -----------------------------------------------------------
    def is_up(self):
        return self.socket is Socket.UP

    def is_down(self):
        return self.socket is Socket.DOWN

    def ready(self):
        """May prompts be sent? (The server was heard of, one way or the other.)"""
        return self.socket is not Socket.OPENING and self.checking is None

    def usable(self):
        return self.checking is None and self.unreachable_since is None

    def silent_since(self):
        """(monotonic time, wall-clock text) since when the server has not answered, or None."""
        return self.unreachable_since

    def reached(self):
        """Heard from at least once: its socket opened, or HTTP answered the check."""
        return self.ready()

    def stop_rechecking(self):
        self.recheck_at = None

    def wants_round(self):
        """Prompts to withdraw: a round tells when the server answers again."""
        return bool(self.to_delete)

    def busy(self):
        """A Withdraw is with the worker or due at once: the run waits for it."""
        return self.withdrawing is not None or self.follow_up is not None

    def forget_withdrawal(self):
        """A worker crashed: the Withdraw it may have had never answers."""
        if self.withdrawing is not None:
            self.to_delete.update(self.withdrawing)
            self.withdrawing = None
        self.follow_up = self.follow_at = None

    def to_withdraw(self, pid):
        """A prompt moved away from here: delete it here when the server answers again."""
        self.to_delete.add(pid)

    def take_ran_twice(self):
        ran, self.ran_twice = self.ran_twice, []
        return ran

    def not_withdrawn(self):
        return sorted(self.to_delete | set(self.withdrawing or ()))

    # ---- the socket -------------------------------------------------------------------------
    def connected(self, e, now, out):
        before = self.socket
        self.socket = Socket.UP
        rounds = self.p.rounds
        rounds.opened(e.at)
        if before is Socket.OPENING:
            if rounds.followed():
                # Prompts given already on the server (`wait`): ask where they are (they may
                # have ended long ago) before trusting the socket, as after a reconnect.
                rounds.catch_up(now, out)
            return  # the run's first socket: nothing else to catch up on
        out.append(Mode(f"connection: websocket {'reconnected' if e.reconnect else 'connected'}; checking open "
                        "prompts over HTTP", False))
        if rounds.followed() or self.p.subs.any_probing() or self.to_delete:
            # Before any later frame: the re-sent `executing` must find the right prompt.
            rounds.catch_up(now, out)

    def disconnected(self, e, now, out):
        if self.socket is Socket.UP:
            out.append(Mode(f"connection: websocket lost ({e.reason}); polling /queue and /history every "
                            f"{self.policy.poll_interval:g} s while reconnecting", True))
            for prompt in self.board.open_prompts:
                prompt.gap()
            self.board.running_from_queue(())  # unknown until the next round says
        elif self.socket is Socket.OPENING:
            # Before anything is sent: if HTTP fails too, there is nothing to talk to.
            self.checking = e.reason
            self.socket = Socket.DOWN
            out.append(CheckServer())
            return
        else:
            return
        self.socket = Socket.DOWN
        self.p.rounds.release(out)
        self.p.rounds.request(now)

    # ---- HTTP ---------------------------------------------------------------------------------
    def server_checked(self, e, now, out):
        if e.problem is not None and not self.policy.alone:
            # Other servers can do the work: note it, and look again later.
            self.not_answering(e.problem, now, out)
            self.rechecks += 1
            self.recheck_at = now + self.policy.recheck.delay(self.rechecks)
            return
        reason, self.checking = self.checking, None
        if e.problem is not None:
            # Nothing was sent: the one error line says it all, and the summary lists them.
            self.p.stop.never_reached(e.problem, now)
            return
        self.answering(now, out)
        if reason != NO_SOCKET:
            out.append(Mode(f"connection: websocket unavailable ({reason}); polling /queue and /history every "
                            f"{self.policy.poll_interval:g} s until it opens", True))
        self.p.rounds.request(now)

    def not_answering(self, message, now, out):
        if self.unreachable_since is None:
            since = _time.strftime("%H:%M:%S", _time.localtime(self.wall + (now - self.started)))
            self.unreachable_since = (now, since)
            out.append(Note(f"connection: server not answering since {since} ({message}); retrying"))

    def answering(self, now, out):
        if self.to_delete and self.checking is None and self.withdrawing is None and self.withdraw_at is None:
            # Back after its prompts were moved: before anything else, make sure they do not
            # run here a second time.
            self._withdraw(out)
        if self.unreachable_since is not None:
            out.append(Note(f"connection: server answering again after {now - self.unreachable_since[0]:.0f} s"))
            self.unreachable_since = None

    def _withdraw(self, out):
        """A fresh withdrawal: it counts its own passes, and covers a follow-up still to go."""
        ids = tuple(sorted(self.to_delete | set(self.follow_up or ())))
        self.to_delete = set()
        self.follow_up = self.follow_at = None
        self.passes = 0
        self.withdrawing = ids
        self.withdraw_at = None
        out.append(Withdraw(ids))

    def withdrawn(self, e, now, out):
        ids, self.withdrawing = self.withdrawing or (), None
        following, self.following = self.following, False
        gone = set(e.deleted) | set(e.interrupted)
        self.ran_twice.extend(e.ran)
        if e.problem:
            self.to_delete.update(pid for pid in ids if pid not in gone and pid not in e.ran)
            self.withdraw_tries += 1
            self.withdraw_at = now + backoff.WITHDRAW.delay(self.withdraw_tries)
            out.append(Note(f"{self.name}: could not delete the prompts moved away from it: {e.problem}; "
                            f"trying again in {self.withdraw_at - now:g} s"))
        else:
            self.withdraw_tries = 0
            self._follow(e.deleted, now)
        if gone and not following:  # (a follow-up pass only makes sure of those counted)
            out.append(Note(f"{self.name}: answering again; removed {len(gone)} of our prompts that had been "
                            "moved to other servers"))

    def _follow(self, deleted, now):
        self.passes += 1
        if deleted and backoff.CANCEL.allows(self.passes):
            self.follow_up = tuple(sorted(deleted))
            self.follow_at = now + backoff.CANCEL.delay(self.passes)
        else:
            self.passes = 0

    # ---- time -----------------------------------------------------------------------------
    def timers(self, now, out):
        if self.recheck_at is not None and now >= self.recheck_at:
            self.recheck_at = None
            out.append(CheckServer())
        limit = self.policy.limits.connect_timeout
        if self.socket is Socket.OPENING and now >= self.started + limit:
            self.disconnected(ev.Disconnected(now, f"no answer within {limit:g} s"), now, out)
        if self.withdraw_at is not None and now >= self.withdraw_at and self.withdrawing is None:
            if self.to_delete:
                self._withdraw(out)
            else:
                self.withdraw_at = None
        if self.follow_up is not None and now >= self.follow_at and self.withdrawing is None:
            self.withdrawing, self.follow_up, self.follow_at = self.follow_up, None, None
            self.following = True
            out.append(Withdraw(self.withdrawing))

    def next_wakeup(self):
        follow = self.follow_at if self.withdrawing is None else None
        opening = self.started + self.policy.limits.connect_timeout if self.socket is Socket.OPENING else None
        return earliest(self.recheck_at, self.withdraw_at, follow, opening)
