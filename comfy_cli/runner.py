"""One run: submit the workflows, follow every prompt to its end, return the exit code.

The main thread owns everything here: it submits over HTTP, takes events from the
listener's queue, feeds them to the tracker, drives the view and prints results. The
listener thread only produces events; nothing else runs concurrently.

Keeping track through a flaky network:
- while the socket is down, a reconciliation round (poller.py) runs every poll interval;
- after every (re)connect one round runs at once, before any later frame is handled, so
  the server's prompt-less `executing` re-send is given to the right prompt;
- a quiet socket is checked over HTTP after `silence_check` seconds; if the server moved on
  without telling the socket, the socket is deaf and is replaced;
- a `status` broadcast whose queue shrank for no reason of ours triggers a round too: that is
  the only sign that someone deleted one of our pending prompts.
"""

import json
import queue
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Optional

from comfy_cli import batch, errors
from comfy_cli import events as ev
from comfy_cli import report
from comfy_cli import tracker as tr
from comfy_cli import view as views
from comfy_cli.client import RETRY_STATUS, Client, Rejected, TlsError
from comfy_cli.errors import ServerError
from comfy_cli.listener import Listener
from comfy_cli.poller import Poller, history_events

TICK = 0.1  # how often the main loop wakes when nothing arrives (redraws, timers)
HISTORY_RETRY = (0.05, 0.1, 0.2, 0.4, 0.8, 1.5)  # the entry can lag the terminal event (#11540)
SUBMIT_RETRY = (0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0)  # ~45 s for a POST that failed
SUBMIT_SETTLE = 3.0  # a lost POST must stay absent from /queue and /history this long before a resend
STATUS_ROUND_GAP = 2.0  # at most one status-triggered round per this many seconds
MAX_DOWNLOAD = 16 << 30  # no real output is bigger; a server sending more is broken or hostile


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
    poll_interval: float = 1.0
    silence_check: float = 15.0
    output_dir: Optional[str] = None  # download outputs here
    overwrite: bool = False
    events: bool = False  # NDJSON on stdout as things happen
    junit: Optional[str] = None
    uploads: tuple = ()  # --input assignments (batch.Assignment); loader nodes' local files are found too
    token: Optional[str] = None
    headers: tuple = ()  # "Name: value" strings
    ca_bundle: Optional[str] = None
    insecure: bool = False


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
        self.client = Client(opts.url, token=opts.token, headers=opts.headers, ca_bundle=opts.ca_bundle,
                             insecure=opts.insecure)
        self.client_id = str(uuid.uuid4())
        self.events = queue.Queue()
        self.board = tr.Board()
        width = max((len(wf.name) for wf in opts.workflows), default=0)
        self.view = views.make(opts.progress, self.err, self.out, width, len(opts.workflows))
        header, sslopt = self.client.ws_options()
        self.listener = Listener(self.client.ws_url(self.client_id), self.client_id, self.events, header=header,
                                 sslopt=sslopt)
        self.poller = Poller(self.client)
        self.lookups = {}  # prompt_id -> _Lookup: /history reads still to do
        self.printed = set()
        self.started = time.monotonic()
        self.last_heard = self.started  # last time anything new came from the server
        self.last_frame = self.started  # last time the socket delivered anything
        self.socket_up = False
        self.next_round = None  # when the next reconciliation round is due
        self.last_status_round = 0.0
        self.ended_since_status = False
        self.unreachable_since = None  # (monotonic, wall clock) while HTTP fails
        self.stream = None
        if opts.events:
            from comfy_cli.stream import EventStream

            self.stream = EventStream(self.out, self.started)
        self.folder = None
        if opts.output_dir:
            from comfy_cli.outputs import OutputDir

            self.folder = OutputDir(opts.output_dir, opts.overwrite)
        self.handled = {}  # prompt_id -> {output key: local path or None}
        self.finished = set()  # prompt ids whose end has been handled
        self.history_done = set()  # prompt ids whose /history entry was replayed
        self.files_missing = False

    # ---- the whole run ----------------------------------------------------------------
    def execute(self):
        """Run to the end; return the exit code. A fatal ServerError is raised again after the
        summary (--json, --events, --junit) has been written, so scripts always get one."""
        cancel_code = None
        fatal = None
        old_term = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            self.listener.start()
            self._wait_for_socket()
            workflows = self._upload_inputs(self.opts.workflows)
            for wf in workflows:
                self._submit(wf)
            self._loop()
        except KeyboardInterrupt:
            cancel_code = errors.SIGINT
        except Terminated:
            cancel_code = errors.SIGTERM
        except ServerError as exc:
            fatal = exc
            open_prompts = self.board.open
            for prompt in open_prompts:
                prompt.give_up(tr.ERROR, time.monotonic(), str(exc))
                self._report(prompt)
            self._cancel_on_server(open_prompts)
        finally:
            signal.signal(signal.SIGTERM, old_term)
            if cancel_code is not None:
                self._cancel(cancel_code)
            self.listener.stop()
            self.view.close()
        if self.opts.junit:
            self._write_junit()
        codes = [report.exit_code(p, cancel_code or errors.SIGINT) for p in self.board.prompts.values()]
        if self.files_missing or fatal is not None:
            codes.append(errors.UNREACHABLE)  # asked-for files are missing, or the run broke off
        code = errors.worst(codes)
        if self.opts.json or self.stream:
            doc = report.summary(self.board, self.client, code, self.opts.include_temp, self.handled)
            if self.stream:
                self.stream.summary(doc)
            else:
                self.out.write(json.dumps(errors.redact_obj(doc), indent=2) + "\n")
                self.out.flush()
        self.client.close()
        if fatal is not None:
            raise fatal
        return code

    def _write_junit(self):
        from comfy_cli.outputs import write_new

        text = errors.redact(report.junit_xml(self.board, time.monotonic() - self.started)).encode()
        try:
            write_new(self.opts.junit, lambda fh: fh.write(text), self.opts.overwrite)
        except OSError as exc:
            self.view.note(f"--junit {self.opts.junit}: cannot write: {exc.strerror or exc}")
            self.files_missing = True  # a report that was asked for is missing: not a success

    def _upload_inputs(self, workflows):
        """Upload --input files and local files named by loader nodes, once each; point exactly
        those inputs at the names the server gave them."""
        names = {}
        for wf in workflows:
            for nid, name, path in batch.upload_targets(wf, self.opts.uploads):
                if path not in names:
                    names[path] = self.client.upload(path)
                    self.view.note(f"uploaded {path} as {names[path]}")
                wf.graph[nid]["inputs"][name] = names[path]
        return workflows

    def _wait_for_socket(self):
        """Open the socket before the first submission, so no event is missed. If only the
        socket fails, go on by polling; if HTTP fails too, there is nothing to talk to."""
        try:
            event = self.events.get(timeout=self.opts.connect_timeout)
        except queue.Empty:
            event = ev.Disconnected(time.monotonic(), f"no answer within {self.opts.connect_timeout:g} s")
        if isinstance(event, ev.Connected):
            self.socket_up = True
            return
        self.client.system_stats()  # raises Unreachable: "cannot connect to URL"
        self.next_round = time.monotonic()
        self._mode(f"connection: websocket unavailable ({event.reason}); polling /queue and /history "
                   f"every {self.opts.poll_interval:g} s until it opens", polling=True)

    def _loop(self):
        while not (self.board.all_ended and not self.lookups):
            event = self._next_event()
            if event is not None:
                self._handle(event)
            now = time.monotonic()
            if self.next_round is not None and now >= self.next_round:
                self._round(now)
            elif self.socket_up and now - self.last_frame >= self.opts.silence_check and not self.board.all_ended:
                self._check_quiet_socket(now)
            self._due_lookups()
            self._check_limits()
            self.view.tick()

    def _next_event(self):
        due = self.next_round if self.next_round is not None else float("inf")
        for lk in self.lookups.values():
            due = min(due, lk.due)
        wait = max(0.0, min(TICK, due - time.monotonic()))
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

    # ---- submitting ---------------------------------------------------------------------
    def _submit(self, wf):
        prompt = self.board.add(tr.Prompt(str(uuid.uuid4()), wf, time.monotonic()))
        self.view.added(prompt)
        if self.stream:
            self.stream.added(prompt)
        if self._past_deadline(time.monotonic()):
            prompt.give_up(tr.TIMEOUT, time.monotonic(), f"not submitted: the deadline of {self.opts.deadline:g} s "
                                                         "passed")
            self._ended(prompt)
            return
        waits = iter(SUBMIT_RETRY)
        while True:
            try:
                reply = self.client.submit(wf.graph, self.client_id, prompt.prompt_id)
                break
            except Rejected as exc:
                prompt.reject(time.monotonic(), _rejection(exc.body))
                self._ended(prompt)
                return
            except ServerError as exc:
                if isinstance(exc, TlsError) or (exc.status is not None and exc.status not in RETRY_STATUS):
                    self._not_submitted(prompt, exc)
                    return
                if not exc.sent:  # it never left: sending again is safe
                    if not self._wait_to_retry(prompt, waits, exc):
                        return
                    continue
                # The answer was lost on the way back: the server may have the prompt.
                found = self._find_submitted(prompt, waits, exc)
                if found is None:
                    return
                if found:
                    self.view.note(f"{wf.name}: the answer to POST /prompt was lost, but the server has the "
                                   f"prompt ({exc})")
                    reply = {}
                    break
                # Still absent after the settle time: it did not arrive, so send it again.
        prompt.accepted(reply.get("number"), reply.get("node_errors"))
        if reply.get("node_errors"):
            self.view.note(f"{wf.name}: warning: the server dropped some outputs that failed validation:")
            for line in report.node_error_lines(wf, reply["node_errors"]):
                self.view.note(line)
        # Handle what arrived meanwhile, so a fast prompt shows progress during a batch.
        self._drain()

    def _not_submitted(self, prompt, exc):
        prompt.give_up(tr.ERROR, time.monotonic(), f"could not submit: {exc}")
        self._ended(prompt)

    def _wait_to_retry(self, prompt, waits, exc):
        """Wait the next backoff step; False (and the prompt ended) when the budget is spent."""
        wait = next(waits, None)
        if wait is None or self._past_deadline(time.monotonic() + wait):
            self._not_submitted(prompt, exc)
            return False
        self._pause(wait)
        return True

    def _find_submitted(self, prompt, waits, first_error):
        """After a POST whose answer was lost: True if the server has the prompt; False if it
        still does not after SUBMIT_SETTLE seconds (the request may have been slow to arrive,
        so an early "no" is not trusted); None if we gave up (the prompt then ended as an error)."""
        failed_at = time.monotonic()
        while self._wait_to_retry(prompt, waits, first_error):
            if prompt.status != tr.SUBMITTED:
                return True  # the socket already told us it runs
            try:
                running, pending = self.client.queue(retry=False)
                found = prompt.prompt_id in running or prompt.prompt_id in pending or \
                    self.client.history(prompt.prompt_id, retry=False) is not None
            except ServerError as exc:
                self._not_answering(exc)
                continue  # cannot tell yet: ask again later, never resend blindly
            self._answering()
            if found:
                return True
            if time.monotonic() - failed_at >= SUBMIT_SETTLE:
                return False
        return None

    def _pause(self, seconds):
        """Wait while still handling socket events (no blind sleep on the main thread)."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            try:
                self._handle(self.events.get(timeout=left))
            except queue.Empty:
                return

    # ---- events -----------------------------------------------------------------------
    def _handle(self, item):
        """One queue item: a transport event, or a list of server events from one read."""
        if type(item) is list:
            for event in item:
                self._handle_one(event)
        else:
            self._handle_one(item)

    def _handle_one(self, event):
        now = event.at
        kind = type(event)
        if kind is ev.Connected:
            self.socket_up = True
            self.last_frame = now
            self._mode(f"connection: websocket {'reconnected' if event.reconnect else 'connected'}; checking open "
                       "prompts over HTTP", polling=False)
            self.next_round = None
            # Before any later frame: the re-sent `executing` must find the right prompt.
            self._round(now)
            return
        if kind is ev.Disconnected:
            if self.socket_up:
                self.socket_up = False
                self._mode(f"connection: websocket lost ({event.reason}); polling /queue and /history every "
                           f"{self.opts.poll_interval:g} s while reconnecting", polling=True)
                for prompt in self.board.open:
                    prompt.gap()
                self.board.running_from_queue(())  # unknown until the next round says
                self.next_round = now
            return
        if kind is ev.ListenerStopped:
            if event.error:
                raise ServerError(f"the websocket listener stopped: {event.error}")
            return
        self.last_frame = self.last_heard = now
        if kind is ev.Status:
            self._status(event)
        self._apply(event)

    def _apply(self, event):
        """Feed one event (from the socket or the poller) to the board and react."""
        prompt = self.board.feed(event)
        if prompt is None:
            return False
        self.last_heard = event.at
        self.view.update(prompt)
        if self.stream:
            self.stream.update(prompt)
        if type(event) is ev.Executed:
            self._collect(prompt)
        if prompt.ended:
            if prompt.prompt_id not in self.finished:
                self.ended_since_status = True
                self._ended(prompt)
        elif prompt.server_done:
            # The done marker came before any terminal event: ask the history for the outcome.
            self._lookup(prompt.prompt_id, event.at)
        return True

    def _status(self, event):
        before = self.board.queue_remaining
        shrank = before is not None and event.queue_remaining is not None and event.queue_remaining < before
        if shrank and not self.ended_since_status and any(p.status == tr.SUBMITTED for p in self.board.open):
            # The queue shrank and none of ours ended: perhaps one of ours was deleted.
            # Check soon, but not more often than every STATUS_ROUND_GAP seconds.
            due = max(event.at, self.last_status_round + STATUS_ROUND_GAP)
            if self.next_round is None or due < self.next_round:
                self.next_round = due
        if shrank:
            self.ended_since_status = False

    def _ended(self, prompt):
        """Once per prompt, when it ends: report it, after a /history read if outputs may be missing."""
        self.finished.add(prompt.prompt_id)
        self.view.update(prompt)
        if prompt.prompt_id not in self.history_done and prompt.status in (tr.SUCCESS, tr.FAILED, tr.INTERRUPTED) \
                and (prompt.needs_history or (prompt.status == tr.SUCCESS and not prompt.outputs)):
            # Outputs may be incomplete: read them from /history before reporting.
            self._lookup(prompt.prompt_id, time.monotonic())
            return
        self._report(prompt)

    def _report(self, prompt):
        """The prompt's end is final and its outputs are known: say so, once."""
        if prompt.prompt_id in self.printed:
            return
        self.printed.add(prompt.prompt_id)
        self._collect(prompt)
        for line in report.failure_lines(prompt, self.opts.verbose):
            self.view.note(line)
        if self.stream:
            self.stream.finished(prompt)

    def _collect(self, prompt):
        """Handle output files as soon as they are reported: download them into --output-dir,
        and name each on stdout (its local path, else its URL) unless stdout carries JSON."""
        done = self.handled.setdefault(prompt.prompt_id, {})
        for node, item in report.output_files(prompt, self.opts.include_temp):
            key = report.output_key(node, item)
            if key in done:
                continue
            url = self.client.view_url(item)
            path = self._download(prompt, item) if self.folder else None
            done[key] = path
            if self.stream:
                self.stream.output(prompt, node, item, url, path)
            elif not self.opts.json and (path or not self.folder):
                self.view.result(path or url)

    def _download(self, prompt, item):
        from comfy_cli.outputs import UnsafeName

        for attempt in range(3):
            try:
                until = self.started + self.opts.deadline if self.opts.deadline is not None else None
                return self.folder.save(item, lambda fh: self.client.download(item, fh, MAX_DOWNLOAD, until))
            except UnsafeName as exc:
                self.view.note(f"{prompt.workflow.name}: not saved: {exc}")
                break
            except ServerError as exc:
                if attempt == 2:
                    self.view.note(f"{prompt.workflow.name}: download failed: {exc}")
            except OSError as exc:
                self.view.note(f"{prompt.workflow.name}: cannot write into {self.opts.output_dir}: "
                               f"{exc.strerror or exc}")
                break
        self.files_missing = True
        prompt.warnings.append({"type": "download", "message": f"not saved: {item.get('filename')!r}"})
        return None

    def _mode(self, text, polling):
        self.view.transport(text, polling)
        if self.stream:
            self.stream.transport(text, polling)

    # ---- reconciliation over HTTP -------------------------------------------------------
    def _round(self, now):
        """One poller round; schedules the next while the socket is down."""
        self.next_round = None if self.socket_up else now + self.opts.poll_interval
        self.last_status_round = now
        open_prompts = self.board.open
        if not open_prompts:
            return False
        try:
            found, running = self.poller.round(open_prompts, now)
        except ServerError as exc:
            self._not_answering(exc)
            return False
        self._answering()
        self.board.running_from_queue(running)
        changed = False
        for event in found:
            changed = self._apply(event) or changed
        if self.poller.missing and self.next_round is None:
            self.next_round = now + self.opts.poll_interval  # confirm soon before calling it lost
        return changed

    def _not_answering(self, exc):
        if self.unreachable_since is None:
            self.unreachable_since = (time.monotonic(), time.strftime("%H:%M:%S"))
            self.view.note(f"connection: server not answering since {self.unreachable_since[1]} ({exc}); retrying")

    def _answering(self):
        if self.unreachable_since is not None:
            down = time.monotonic() - self.unreachable_since[0]
            self.view.note(f"connection: server answering again after {down:.0f} s")
            self.unreachable_since = None

    def _check_quiet_socket(self, now):
        """Nothing on the socket for a while: normal during a slow node, unless the server has
        moved on without telling us. Then the socket is deaf, so replace it."""
        self._drain()  # frames already waiting are not silence
        if self.last_frame > now - self.opts.silence_check:
            return
        self.last_frame = now
        if self._round(now):
            self._mode("connection: the websocket went quiet while the server moved on; reconnecting",
                       polling=False)
            self.listener.reconnect()

    # ---- /history reads for outputs ---------------------------------------------------
    def _lookup(self, prompt_id, now):
        self.lookups.setdefault(prompt_id, _Lookup(0, now))

    def _due_lookups(self):
        now = time.monotonic()
        for pid, lk in list(self.lookups.items()):
            if lk.due > now:
                continue
            prompt = self.board.prompts[pid]
            try:
                entry = self.client.history(pid, retry=False)
            except ServerError as exc:
                entry = None
                if lk.attempt + 1 >= len(HISTORY_RETRY):
                    self.view.note(f"{prompt.workflow.name}: cannot read /history: {exc}")
            if entry is not None:
                del self.lookups[pid]
                self.history_done.add(pid)
                prompt.history_read()
                for event in history_events(pid, entry, now):
                    self._apply(event)
                if prompt.ended:
                    self._report(prompt)
                continue
            if lk.attempt + 1 >= len(HISTORY_RETRY):
                del self.lookups[pid]
                if prompt.ended:
                    self._report(prompt)  # what the socket told us is all we have
                # else: not finished after all; the socket or the poller will tell us
                continue
            lk.due = now + HISTORY_RETRY[lk.attempt]
            lk.attempt += 1

    # ---- limits, cancel -----------------------------------------------------------------
    def _past_deadline(self, when):
        return self.opts.deadline is not None and when - self.started >= self.opts.deadline

    def _check_limits(self):
        now = time.monotonic()
        o = self.opts
        reason = None
        if self._past_deadline(now):
            reason = f"deadline of {o.deadline:g} s passed"
        elif o.timeout is not None and now - self.last_heard >= o.timeout:
            reason = f"nothing new from the server for {o.timeout:g} s"
        if reason is None:
            return
        status = tr.TIMEOUT
        if self.unreachable_since is not None:
            status, reason = tr.ERROR, f"server not answering since {self.unreachable_since[1]}; {reason}"
        open_prompts = self.board.open
        for prompt in open_prompts:
            prompt.give_up(status, now, reason)
            self.view.update(prompt)
            self._report(prompt)
        for pid in self.lookups:  # ended, but waiting for /history: report what we have
            self._report(self.board.prompts[pid])
        self.lookups.clear()
        if self.unreachable_since is None:
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
            running, pending = self.client.queue(retry=False)
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
