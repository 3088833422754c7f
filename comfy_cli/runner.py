"""One run: submit the workflows, follow every prompt to its end, return the exit code.

The main thread owns everything here: it submits over HTTP, takes events from the
listener's queue, feeds them to the tracker, drives the view and prints results. The
listener thread only produces events; nothing else runs concurrently.
"""

import json
import queue
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import List, Optional

from comfy_cli import errors
from comfy_cli import events as ev
from comfy_cli import report
from comfy_cli import tracker as tr
from comfy_cli import view as views
from comfy_cli.client import Client, Rejected
from comfy_cli.errors import ServerError
from comfy_cli.listener import Listener
from comfy_cli.poller import history_events

TICK = 0.1  # how often the main loop wakes when nothing arrives (redraws, timers)
HISTORY_RETRY = (0.05, 0.1, 0.2, 0.4, 0.8, 1.5)  # the entry can lag the terminal event (#11540)


@dataclass
class Options:
    url: str
    workflows: list
    progress: str = "auto"
    json: bool = False
    timeout: Optional[float] = None
    deadline: Optional[float] = None
    verbose: bool = False
    include_temp: bool = False
    no_cancel: bool = False
    connect_timeout: float = 10.0


class Terminated(Exception):
    """SIGTERM arrived."""


@dataclass
class _Lookup:
    attempt: int = 0
    due: float = 0.0


class Run:
    def __init__(self, opts: Options, out=None, err=None):
        self.opts = opts
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.client = Client(opts.url)
        self.client_id = str(uuid.uuid4())
        self.events = queue.Queue()
        self.board = tr.Board()
        width = max((len(wf.name) for wf in opts.workflows), default=0)
        self.view = views.make(opts.progress, self.err, self.out, width)
        self.listener = Listener(self.client.ws_url(self.client_id), self.client_id, self.events)
        self.lookups = {}  # prompt_id -> _Lookup: /history reads still to do
        self.printed = set()
        self.started = time.monotonic()
        self.last_heard = self.started
        self.socket_up = False

    # ---- the whole run ----------------------------------------------------------------
    def execute(self):
        cancel_code = None
        old_term = _on_sigterm()
        try:
            self.listener.start()
            self._wait_for_socket()
            self._submit_all()
            self._loop()
        except KeyboardInterrupt:
            cancel_code = errors.SIGINT
        except Terminated:
            cancel_code = errors.SIGTERM
        finally:
            signal.signal(signal.SIGTERM, old_term)
            if cancel_code is not None:
                self._cancel(cancel_code)
            self.listener.stop()
            self.view.close()
        code = errors.worst(report.exit_code(p, cancel_code or errors.SIGINT) for p in self.board.prompts.values())
        if self.opts.json:
            doc = report.summary(self.board, self.client, code, self.opts.include_temp)
            self.out.write(json.dumps(doc, indent=2) + "\n")
            self.out.flush()
        self.client.close()
        return code

    def _wait_for_socket(self):
        """The socket must be open before the first submission, so no event is missed."""
        try:
            event = self.events.get(timeout=self.opts.connect_timeout)
        except queue.Empty:
            raise ServerError(f"{self.client.ws_url('...')}: websocket did not open within "
                              f"{self.opts.connect_timeout:g} s") from None
        if isinstance(event, ev.Connected):
            self.socket_up = True
            return
        # Tell "nothing there" from "HTTP works but the websocket does not".
        self.client.system_stats()
        raise ServerError(f"{self.client.base}: HTTP works but the websocket does not: "
                          f"{getattr(event, 'reason', event)}")

    def _submit_all(self):
        for wf in self.opts.workflows:
            prompt = self.board.add(tr.Prompt(str(uuid.uuid4()), wf, time.monotonic()))
            self.view.added(prompt)
            try:
                reply = self.client.submit(wf.graph, self.client_id, prompt.prompt_id)
            except Rejected as exc:
                prompt.reject(time.monotonic(), _rejection(exc.body))
                self._ended(prompt)
                continue
            except ServerError as exc:
                prompt.give_up(tr.ERROR, time.monotonic(), f"could not submit: {exc}")
                self._ended(prompt)
                continue
            prompt.accepted(reply.get("number"), reply.get("node_errors"))
            if reply.get("node_errors"):
                self.view.note(f"{wf.name}: warning: the server dropped some outputs that failed validation:")
                for line in report.node_error_lines(wf, reply["node_errors"]):
                    self.view.note(line)
            # Drain what arrived meanwhile, so a fast prompt shows progress during a batch.
            self._drain()

    def _loop(self):
        while not (self.board.all_ended and not self.lookups):
            event = self._next_event()
            if event is not None:
                self._handle(event)
            self._due_lookups()
            self._check_limits()
            self.view.tick()

    def _next_event(self):
        wait = TICK
        if self.lookups:
            wait = min(wait, max(0.0, min(lk.due for lk in self.lookups.values()) - time.monotonic()))
        try:
            return self.events.get(timeout=wait)
        except queue.Empty:
            return None

    def _drain(self):
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            self._handle(event)

    # ---- events -----------------------------------------------------------------------
    def _handle(self, event):
        now = event.at
        kind = type(event)
        if kind is ev.Connected:
            self.socket_up = True
            self.view.transport("connection: websocket reconnected; checking open prompts over HTTP")
            for prompt in self.board.open:
                self._lookup(prompt.prompt_id, now)
            return
        if kind is ev.Disconnected:
            if self.socket_up:
                self.socket_up = False
                self.view.transport(f"connection: websocket lost ({event.reason}); reconnecting")
                for prompt in self.board.open:
                    prompt.gap()
            return
        if kind is ev.ListenerStopped:
            if event.error:
                raise ServerError(f"the websocket listener stopped: {event.error}")
            return
        self.last_heard = now
        prompt = self.board.feed(event)
        if prompt is None:
            return
        self.view.update(prompt)
        if prompt.ended:
            self._ended(prompt)
        elif prompt.needs_history and prompt.prompt_id not in self.lookups and kind is ev.Executing:
            # The done marker came before any terminal event: ask the history for the outcome.
            self._lookup(prompt.prompt_id, now)

    def _ended(self, prompt):
        self.view.update(prompt)
        if prompt.status in (tr.SUCCESS, tr.FAILED, tr.INTERRUPTED) and (
            prompt.needs_history or (prompt.status == tr.SUCCESS and not prompt.outputs)
        ):
            # Outputs may be incomplete: read them from /history before reporting.
            self._lookup(prompt.prompt_id, time.monotonic())
            return
        self._report(prompt)

    def _report(self, prompt):
        if prompt.prompt_id in self.printed:
            return
        self.printed.add(prompt.prompt_id)
        for line in report.failure_lines(prompt, self.opts.verbose):
            self.view.note(line)
        if not self.opts.json:
            for _node, item in report.output_files(prompt, self.opts.include_temp):
                self.view.result(self.client.view_url(item))

    # ---- /history reads ---------------------------------------------------------------
    def _lookup(self, prompt_id, now):
        self.lookups.setdefault(prompt_id, _Lookup(0, now))

    def _due_lookups(self):
        now = time.monotonic()
        for pid, lk in list(self.lookups.items()):
            if lk.due > now:
                continue
            prompt = self.board.prompts[pid]
            try:
                entry = self.client.history(pid)
            except ServerError as exc:
                entry = None
                if lk.attempt + 1 >= len(HISTORY_RETRY):
                    self.view.note(f"{prompt.workflow.name}: cannot read /history: {exc}")
            if entry is not None:
                del self.lookups[pid]
                prompt.needs_history = False
                prompt.via_poll = True
                for event in history_events(pid, entry, now):
                    self.board.feed(event)
                if prompt.ended:
                    self._ended_after_lookup(prompt)
                continue
            if prompt.ended and lk.attempt + 1 >= len(HISTORY_RETRY):
                # Give up on extra outputs; report what the socket told us.
                del self.lookups[pid]
                self._report(prompt)
                continue
            if not prompt.ended and lk.attempt + 1 >= len(HISTORY_RETRY):
                # Not finished after all (still queued or running): the socket will tell us.
                del self.lookups[pid]
                continue
            lk.due = now + HISTORY_RETRY[lk.attempt]
            lk.attempt += 1

    def _ended_after_lookup(self, prompt):
        self.view.update(prompt)
        self._report(prompt)

    # ---- limits, cancel -----------------------------------------------------------------
    def _check_limits(self):
        now = time.monotonic()
        o = self.opts
        reason = None
        if o.deadline is not None and now - self.started >= o.deadline:
            reason = f"deadline of {o.deadline:g} s passed"
        elif o.timeout is not None and now - self.last_heard >= o.timeout:
            reason = f"nothing heard from the server for {o.timeout:g} s"
        if reason is None:
            return
        open_prompts = self.board.open
        for prompt in open_prompts:
            prompt.give_up(tr.TIMEOUT, now, reason)
            self.view.update(prompt)
            self._report(prompt)
        self.lookups.clear()
        self._cancel_on_server(open_prompts)

    def _cancel(self, code):
        open_prompts = self.board.open
        now = time.monotonic()
        word = "interrupted" if code == errors.SIGINT else "terminated"
        for prompt in open_prompts:
            prompt.give_up(tr.CANCELLED, now, f"cancelled ({word})")
            self.view.update(prompt)
            self._report(prompt)
        self._cancel_on_server(open_prompts)

    def _cancel_on_server(self, prompts):
        """Delete our pending prompts and interrupt the running one only if it is ours."""
        if not prompts:
            return
        ids = [p.prompt_id for p in prompts]
        if self.opts.no_cancel:
            self.view.note("left running on the server: " + " ".join(ids))
            return
        # A second Ctrl-C while we talk to the server exits at once.
        previous = signal.signal(signal.SIGINT, _exit_now)
        try:
            running, pending = self.client.queue()
            mine = set(ids)
            self.client.delete_pending([pid for pid in pending if pid in mine])
            for pid in running:
                if pid in mine:
                    self.client.interrupt(pid)
        except ServerError as exc:
            self.view.note(f"could not cancel on the server: {exc}; prompt ids: {' '.join(ids)}")
        finally:
            signal.signal(signal.SIGINT, previous)


def _rejection(body):
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    return {
        "type": error.get("type") or "rejected",
        "message": error.get("message") or "rejected by the server",
        "details": error.get("details") or "",
        "node_errors": body.get("node_errors") if isinstance(body.get("node_errors"), dict) else {},
    }


def _raise_terminated(signum, frame):
    raise Terminated()


def _exit_now(signum, frame):
    import os

    os._exit(errors.SIGINT)


def _on_sigterm():
    return signal.signal(signal.SIGTERM, _raise_terminated)
