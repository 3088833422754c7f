"""The dispatcher: one batch over several servers, each with its own supervisor. Pure.

Theory of operation
-------------------
Prompts wait here, in batch order, until a server takes them. A prompt goes to the usable
server (answering, not given up) with the least outstanding work: the server's own queue as
its last `status` said, plus our POSTs in flight there; at most `per_server` of ours may wait
on one server at once, so a fast server is not starved while a slow one hoards the batch.
A server whose `/object_info` lacks one of the workflow's node types is never given it; a
prompt no server can run is rejected at once.

Failover: a server that has not answered for `failover_after` seconds loses its prompts. Those
that had not started get a new attempt on another server (a fresh prompt id, not counted as a
retry); one that was running ends `lost`. The server's supervisor remembers the moved ids and,
when the server answers again, deletes them from its queue before anything else, and says if
one ran there anyway (a warning on that item: it ran twice).

Retries: a prompt that ended `failed`, `lost` or `error` gets a new attempt, up to `retry`
times, on another server when there is one. Every attempt is a tracker Prompt of its own; the
item's last attempt decides its exit code.

What an attempt is beyond its prompt (its item, which try it is, its server, whether it was
moved, the servers tried before) is the dispatcher's `Attempt` record, never the tracker's: the
runner asks for it (`attempt`, `every`, `finals`) and hands it to the journal, the report and
the view. Prompts followed rather than dispatched (`wait`) get one too (no item).

The dispatcher holds no socket and reads no clock: the runner feeds it, tagged by server, what
it would feed a supervisor, and it answers with (server index, commands) groups.
"""

import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from comfy_cli import backoff
from comfy_cli import events as ev
from comfy_cli import tracker as tr
from comfy_cli.commands import Added, Changed, Report
from comfy_cli.limits import Limits
from comfy_cli.part import earliest

RETRIED = (tr.FAILED, tr.LOST, tr.ERROR)


@dataclass
class Plan:
    per_server: Optional[int] = None  # None: no limit (a single server takes the batch at once)
    retry: backoff.Backoff = backoff.retries(0)  # --retry: new attempts for a prompt that failed
    limits: Limits = field(default_factory=Limits)


class Attempt:
    """What the dispatcher knows of one attempt beyond its prompt. Only the dispatcher changes
    it; the journal, the report and the view read it."""

    __slots__ = ("item", "number", "server", "moved", "tried")

    def __init__(self, item=None, number=1, server=None, tried=()):
        self.item = item  # its place in the batch (None: followed, not of a batch); its attempts share it
        self.number = number  # which try of its item this is (--retry; a move is not a try)
        self.server = server  # the server it was sent to, once it was
        self.moved = False  # taken from a server that stopped answering, before it ran
        self.tried = tried  # servers earlier attempts of its item went to

    def again(self, moved):
        """The record of its item's next attempt."""
        return Attempt(self.item, self.number + (0 if moved else 1), None, self.tried + (self.server,))


class Dispatcher:
    def __init__(self, prompts, sups, plan, now, names=None, node_types=None, items=None):
        """`prompts`: the batch (status waiting), in order; `items`: their places in the batch
        (default: 0, 1, ...); `sups`: one Supervisor per server; `node_types`: per server, the
        set of node types it has (None: unknown, anything goes)."""
        self.sups = sups
        self.plan = plan
        self.limits = plan.limits
        self.started = now
        self.names = names or [str(i) for i in range(len(sups))]
        self.node_types = node_types or [None] * len(sups)
        self.waiting = deque()
        self.later = []  # (due, prompt): retries waiting out their backoff
        self.attempts = {}  # prompt id -> Attempt
        self.prompts = []  # every attempt, in the order they were made
        self.final = {}  # item -> its latest attempt
        self.followed = []  # prompts followed, not of the batch (`wait`)
        self.moved = set()  # servers whose prompts were moved away (until they answer again)
        self.stopped = None  # (status, message) once a signal or the deadline ended the run
        self._fatal = None  # when no server could be reached at all
        self.ever_usable = False
        for i, prompt in enumerate(prompts):
            self._add(prompt, Attempt(i if items is None else items[i]))

    def known(self, prompt, item, number=1, server=None):
        """A prompt of the batch that is not dispatched here (taken up from a journal): attempt
        `number` of `item`, sent to `server`."""
        self.attempts[prompt.prompt_id] = Attempt(item, number, server)
        self.prompts.append(prompt)
        self.final[item] = prompt

    def follow(self, prompt, server):
        """A prompt not of the batch, followed on `server` (`wait`)."""
        self.attempts[prompt.prompt_id] = Attempt(None, 1, server)
        self.prompts.append(prompt)
        self.followed.append(prompt)

    def _add(self, prompt, attempt, front=False, due=None):
        """A new attempt: it waits in line (first, for a retry), or until `due`."""
        self.attempts[prompt.prompt_id] = attempt
        self.prompts.append(prompt)
        self.final[attempt.item] = prompt
        if due is not None:
            self.later.append((due, prompt))
        elif front:
            self.waiting.appendleft(prompt)
        else:
            self.waiting.append(prompt)

    # ---- the interface ------------------------------------------------------------------
    def start(self, now):
        groups = [(i, sup.start(now)) for i, sup in enumerate(self.sups)]
        return groups + self._after(now)

    def feed(self, i, item, now):
        """An item for server `i`, or for all of them (i None: signals and wake-ups)."""
        if i is None:
            groups = [(j, sup.feed(item, now)) for j, sup in enumerate(self.sups)]
            if type(item) is ev.Signal:
                self._stop(tr.CANCELLED, "cancelled by you before it was sent", now, groups)
        else:
            groups = [(i, self.sups[i].feed(item, now))]
        return groups + self._after(now)

    def attempt(self, prompt_id):
        """The Attempt of one of its prompts (None: not one of them)."""
        return self.attempts.get(prompt_id)

    def every(self):
        """(prompt, Attempt) of every attempt made, in the order they were made."""
        return [(p, self.attempts[p.prompt_id]) for p in self.prompts]

    def finals(self):
        """Each batch item's latest attempt, then the prompts followed."""
        return list(self.final.values()) + self.followed

    @property
    def fatal(self):
        """Why the batch could not run at all (no server could be reached), or None."""
        return self._fatal

    @property
    def done(self):
        return not self.waiting and not self.later and all(sup.done for sup in self.sups)

    def next_wakeup(self):
        times = [sup.next_wakeup() for sup in self.sups]
        if self.stopped is None and (self.waiting or self.later):
            times += [due for due, _ in self.later]
            times.append(self.limits.deadline_at(self.started))
        if len(self.sups) > 1:  # (failover: only with somewhere to move to)
            for i, sup in enumerate(self.sups):
                silent = sup.silent_since()
                if silent is not None and i not in self.moved and self._followed_on(i):
                    times.append(silent[0] + self.limits.failover_after)
        return earliest(*times)

    # ---- decisions ------------------------------------------------------------------------
    def _after(self, now):
        """After anything: retries, failover, deadline, then hand out waiting prompts."""
        groups = []
        for i, sup in enumerate(self.sups):
            for pid in sup.take_ran_twice():
                self._ran_twice(i, pid)
            for prompt in sup.take_reported():
                self._maybe_retry(prompt, i, now)
        if len(self.sups) > 1:
            self._failover(now, groups)
        if not self.ever_usable:
            if any(sup.usable and sup.reached() for sup in self.sups):
                self.ever_usable = True
            elif all(not sup.reached() and sup.silent_since() is not None for sup in self.sups):
                self._fatal = "none of the servers answers: " + "; ".join(
                    f"{name} (since {sup.silent_since()[1]})" for name, sup in zip(self.names, self.sups))
                self._stop(tr.ERROR, f"not submitted: {self._fatal}", now, groups)
                for sup in self.sups:
                    sup.unreachable(self._fatal, now)
        if self.later:
            self._due_retries(now)
        if (self.waiting or self.later) and self.stopped is None \
                and all(not sup.usable and sup.outcome().fatal for sup in self.sups):
            # Every server broke off (e.g. `submit`'s only server cannot be reached): nobody
            # will ever take the rest. As in the supervisor, the run's one error line says it
            # (nothing is shown per prompt).
            reasons = dict.fromkeys(sup.outcome().fatal for sup in self.sups)
            self._stop(tr.ERROR, "not submitted: " + "; ".join(reasons), now, [])
        if (self.waiting or self.later) and self.stopped is None and self.limits.past_deadline(self.started, now):
            self._stop(tr.TIMEOUT, f"not submitted: the deadline of {self.limits.deadline:g} s passed", now, groups)
        if self.waiting and self.stopped is None:
            self._hand_out(now, groups)
        return groups

    def _hand_out(self, now, groups):
        touched = set()
        while self.waiting:
            prompt = self.waiting[0]
            fits = [i for i in range(len(self.sups)) if self._fits(prompt, i)]
            if not fits:
                self.waiting.popleft()
                missing = sorted(set(_types(prompt)) - set().union(*(t for t in self.node_types if t is not None)))
                prompt.reject(now, {"type": "missing_node_types", "details": "", "node_errors": {},
                                    "message": "no server has the node types " + ", ".join(missing)})
                prompt.settle()
                groups.append((None, _shown(prompt)))
                continue
            tried = self.attempts[prompt.prompt_id].tried
            free = [i for i in fits if self.sups[i].usable and self._room(i)]
            if not free:
                break
            fresh = [i for i in free if self.names[i] not in tried] or free
            i = min(fresh, key=lambda j: (self._load(j), j))
            self.waiting.popleft()
            self.attempts[prompt.prompt_id].server = self.names[i]
            self.sups[i].assign(prompt)
            touched.add(i)
        for i in sorted(touched):
            groups.append((i, self.sups[i].feed(None, now)))

    def _fits(self, prompt, i):
        types = self.node_types[i]
        return types is None or all(t in types for t in _types(prompt))

    def _room(self, i):
        k = self.plan.per_server
        # (ours there that have not started)
        return k is None or sum(1 for p in self.sups[i].ours_open() if p.status in tr.BEFORE_RUN) < k

    def _load(self, i):
        return self.sups[i].load()

    def _maybe_retry(self, prompt, i, now):
        attempt = self.attempts[prompt.prompt_id]
        if self.stopped is not None or prompt.status not in RETRIED or self.final.get(attempt.item) is not prompt:
            return
        if not attempt.moved and not self.plan.retry.allows(attempt.number):
            return
        again = tr.Prompt(str(uuid.uuid4()), prompt.workflow, None, status=tr.WAITING)
        wait = 0.0 if attempt.moved else self.plan.retry.delay(attempt.number)
        self._add(again, attempt.again(attempt.moved), front=True, due=now + wait if wait > 0 else None)

    def _due_retries(self, now):
        """Retries whose wait is over go first in line, in the order they were made."""
        if all(t > now for t, _ in self.later):
            return
        due = [(t, p) for t, p in self.later if t <= now]
        self.later = [(t, p) for t, p in self.later if t > now]
        for _, prompt in reversed(due):
            self.waiting.appendleft(prompt)

    def _followed_on(self, i):
        """Has server `i` any of ours that failover would move or end?"""
        return any(p.on_server for p in self.sups[i].ours_open())

    def _failover(self, now, groups):
        """Servers silent for `failover_after` lose their prompts (only with several servers)."""
        for i, sup in enumerate(self.sups):
            silent = sup.silent_since()
            if silent is None:
                self.moved.discard(i)
                continue
            if i in self.moved or now - silent[0] < self.limits.failover_after:
                continue
            self.moved.add(i)
            since = silent[1]
            commands = []
            for prompt in sup.ours_open():
                if prompt.status == tr.RUNNING:
                    commands += sup.abandon(prompt, tr.LOST, f"lost: {self.names[i]} stopped answering (since "
                                            f"{since}) while it ran", now)
                else:
                    self.attempts[prompt.prompt_id].moved = True
                    commands += sup.abandon(prompt, tr.ERROR, f"moved: {self.names[i]} has not answered since "
                                            f"{since}; sent to another server", now)
            if commands:
                groups.append((i, commands))
            for prompt in sup.take_reported():  # abandoned prompts are reported at once
                self._maybe_retry(prompt, i, now)

    def _ran_twice(self, i, pid):
        moved = next((p for p in self.prompts if p.prompt_id == pid), None)
        if moved is None:
            return
        latest = self.final[self.attempts[pid].item]
        warning = f"also ran on {self.names[i]} (prompt {pid}), after it had been moved away from that server"
        for prompt in {id(latest): latest, id(moved): moved}.values():
            prompt.warn("ran_twice", warning)

    def _stop(self, status, message, now, groups):
        if self.stopped is not None:
            return
        self.stopped = (status, message)
        ended = []
        self.waiting.extend(p for _, p in self.later)
        self.later = []
        while self.waiting:
            prompt = self.waiting.popleft()
            prompt.give_up(status, now, message)
            prompt.settle()
            ended += _shown(prompt)
        if ended:
            groups.append((None, ended))


def _types(prompt):
    return {node.get("class_type") for node in prompt.workflow.graph.values() if isinstance(node, dict)}


def _shown(prompt):
    """The view commands for a prompt that ended here, never having reached a server."""
    return [Added(prompt), Changed(prompt), Report(prompt)]
