"""One run: the event pump between the queue, the supervisor, the workers and the view.

    listener thread --events--> +-------+ --item, now--> supervisor (pure)
    workers (HTTP)  --results-> | queue |                    |
    signal handlers --Signal--> +-------+ <--- one loop --- commands
                                                              |
              I/O commands -> workers;  view commands -> view (main thread only)

The main thread runs one loop: take one item from the queue (or wake up when the supervisor
asks), feed it to the supervisor, carry out the commands it answers with. Nothing here
decides anything; no handler does I/O. Workers run one job at a time each: the submitter
(POST /prompt, in batch order), the reader (GET /queue, /history, and cancelling) and the
downloader (/view), so a slow download never holds up a submission or a round.
"""

import json
import queue
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Optional

from comfy_cli import backoff, batch, errors
from comfy_cli import events as ev
from comfy_cli import report
from comfy_cli import supervisor as sv
from comfy_cli import tracker as tr
from comfy_cli import view as views
from comfy_cli.client import RETRY_STATUS, Client, Rejected, TlsError, Unsendable
from comfy_cli.errors import ServerError
from comfy_cli.listener import Listener

TICK = 0.1  # the longest the loop sleeps: bars redraw at this pace
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
    # For `submit` and `wait` (the defaults are `run`'s):
    client_id: Optional[str] = None  # the websocket's clientId (a handle's, to get its progress)
    socket: bool = True  # False: follow by /queue and /history only
    submit_only: bool = False  # done once every prompt is on the server
    detach_on_signal: bool = False  # Ctrl-C stops following and leaves the prompts running
    prompts: Optional[list] = None  # tracker Prompts to follow (status submitted) instead of `workflows`


class Worker(threading.Thread):
    """Runs I/O jobs one at a time, in order; each job's result event goes on the run's queue."""

    def __init__(self, name, results):
        super().__init__(name=f"comfy-cli-{name}", daemon=True)
        self.jobs = queue.SimpleQueue()
        self.results = results

    def put(self, fn, *args):
        self.jobs.put((fn, args))

    def stop(self):
        self.jobs.put(None)

    def run(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            fn, args = job
            try:
                result = fn(*args)
            except BaseException as exc:  # a bug: tell the main loop, never die silently
                result = ev.WorkerCrashed(time.monotonic(), f"{type(exc).__name__}: {exc}")
            self.results.put(result)


class Run:
    def __init__(self, opts: Options, out=None, err=None):
        self.opts = opts
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.client = Client(opts.url, token=opts.token, headers=opts.headers, ca_bundle=opts.ca_bundle,
                             insecure=opts.insecure)
        self.client_id = opts.client_id or str(uuid.uuid4())
        self.events = queue.SimpleQueue()  # reentrant: the signal handlers put on it too
        if opts.prompts is not None:
            self.prompts = list(opts.prompts)
        else:
            self.prompts = [tr.Prompt(str(uuid.uuid4()), wf, None, status=tr.WAITING) for wf in opts.workflows]
        width = max((len(p.workflow.name) for p in self.prompts), default=0)
        self.view = views.make(opts.progress, self.err, self.out, width, len(self.prompts))
        header, sslopt = self.client.ws_options()
        self.listener = Listener(self.client.ws_url(self.client_id), self.client_id, self.events, header=header,
                                 sslopt=sslopt)
        self.started = time.monotonic()
        self.over = threading.Event()  # set when the run ends: downloads stop early
        self.stream = None
        if opts.events:
            from comfy_cli.stream import EventStream

            self.stream = EventStream(self.out, self.started)
        self.folder = None
        if opts.output_dir:
            from comfy_cli.outputs import OutputDir

            self.folder = OutputDir(opts.output_dir, opts.overwrite)
        self.workers = {name: Worker(name, self.events) for name in ("submitter", "reader", "downloader")}
        self.signalled = False
        policy = sv.Policy(poll_interval=opts.poll_interval, silence_check=opts.silence_check,
                           connect_timeout=opts.connect_timeout, timeout=opts.timeout, deadline=opts.deadline,
                           no_cancel=opts.no_cancel, download=self.folder is not None,
                           include_temp=opts.include_temp, submit_only=opts.submit_only,
                           detach_on_signal=opts.detach_on_signal)
        self.sup = sv.Supervisor(self.prompts, policy, self.started, wall=time.time(), socket_open=opts.socket)
        self._do = {
            sv.Submit: self._submit, sv.ReadQueue: self._read_queue, sv.ReadHistory: self._read_history,
            sv.Download: self._download, sv.Cancel: self._cancel, sv.Reconnect: self._reconnect,
            sv.CheckServer: self._check_server,
            sv.Added: self._added, sv.Changed: self._changed, sv.Output: self._output, sv.Report: self._report,
            sv.Note: self._note, sv.Mode: self._mode,
        }

    # ---- the whole run ----------------------------------------------------------------
    def execute(self):
        """Run to the end; return the exit code. A fatal ServerError is raised again after the
        summary (--json, --events, --junit) has been written, so scripts always get one."""
        fatal = None
        restore = self._catch_signals()
        try:
            if self.opts.socket:
                self.listener.start()
            for worker in self.workers.values():
                worker.start()
            try:
                self._prepare()
            except ServerError as exc:
                fatal = exc
                self._not_submitted(str(exc))
            else:
                self._loop()
                if self.sup.fatal:
                    fatal = ServerError(self.sup.fatal)
        finally:
            restore()
            self.over.set()
            if self.opts.socket:
                self.listener.stop()
            for worker in self.workers.values():
                worker.stop()
            self.view.close()
        if self.opts.junit:
            self._write_junit()
        code = self._exit_code(fatal)
        if fatal is None and not self.opts.submit_only:  # (`submit` says what it sent itself)
            files = sum(1 for saved in self.sup.saved.values() for path in saved.values()
                        if path is not None or self.folder is None)
            self.err.write(errors.redact(report.summary_line(self.prompts, files, time.monotonic() - self.started))
                           + "\n")
            self.err.flush()
        if self.opts.json or self.stream:
            doc = report.summary(self.sup.board, self.client, code, self.opts.include_temp, self.sup.saved)
            if self.stream:
                self.stream.summary(doc)
            else:
                self.out.write(json.dumps(errors.redact_obj(doc), indent=2) + "\n")
                self.out.flush()
        self.client.close()
        if fatal is not None:
            raise fatal
        return code

    def _exit_code(self, fatal):
        cancel_code = self.sup.signal_code or errors.SIGINT
        codes = [errors.OK if self.opts.submit_only and p.status in (tr.SUBMITTED, tr.RUNNING)
                 else report.exit_code(p, cancel_code) for p in self.prompts]
        if self.sup.files_missing or fatal is not None:
            codes.append(errors.UNREACHABLE)  # asked-for files are missing, or the run broke off
        return errors.worst(codes)

    def _prepare(self):
        """Before the loop: upload the input files (the loop submits what uses them)."""
        names = {}
        for prompt in self.prompts:
            if prompt.status != tr.WAITING:
                continue  # followed, not sent by us (`wait`): its graph came from the server
            wf = prompt.workflow
            for nid, name, path in batch.upload_targets(wf, self.opts.uploads):
                if path not in names:
                    names[path] = self.client.upload(path)
                    self.view.note(f"uploaded {path} as {names[path]}")
                wf.graph[nid]["inputs"][name] = names[path]

    def _not_submitted(self, reason):
        now = time.monotonic()
        for prompt in self.prompts:
            prompt.give_up(tr.ERROR, now, f"not submitted: {reason}")
            if self.stream:
                self.stream.finished(prompt)

    def _loop(self):
        sup, get, dispatch, tick = self.sup, self.events.get, self._dispatch, self.view.tick
        dispatch(sup.start(time.monotonic()))
        while not sup.done:
            wake = sup.next_wakeup()
            wait = TICK if wake is None else min(TICK, max(0.0, wake - time.monotonic()))
            try:
                item = get(timeout=wait)
            except queue.Empty:
                item = None
            now = time.monotonic()
            if type(item) is list:  # the events of one socket read
                take = sup.take
                for event in item:
                    dispatch(take(event, now))
                item = None
            dispatch(sup.feed(item, now))
            tick()

    def _dispatch(self, commands):
        do = self._do
        for command in commands:
            do[type(command)](command)

    # ---- signals ------------------------------------------------------------------------
    def _catch_signals(self):
        """SIGINT and SIGTERM become events for the supervisor (a second one exits at once).
        An inherited SIG_IGN is kept: a shell that starts us in the background means it."""
        saved = {}
        for signum, code in ((signal.SIGINT, errors.SIGINT), (signal.SIGTERM, errors.SIGTERM)):
            if signal.getsignal(signum) is signal.SIG_IGN:
                continue
            saved[signum] = signal.signal(signum, self._on_signal(code))

        def restore():
            for signum, handler in saved.items():
                signal.signal(signum, handler)

        return restore

    def _on_signal(self, code):
        def handler(signum, frame):
            if self.signalled:
                import os

                os._exit(code)  # asked twice: do not wait for the cancel
            self.signalled = True
            self.events.put(ev.Signal(time.monotonic(), code))

        return handler

    # ---- I/O commands: each becomes a job on a worker ------------------------------------
    def _submit(self, c):
        prompt = self.sup.board.prompts[c.prompt_id]
        self.workers["submitter"].put(_submit, self.client, prompt.workflow, self.client_id, c.prompt_id)

    def _read_queue(self, c):
        self.workers["reader"].put(_read_queue, self.client, c.gen)

    def _read_history(self, c):
        self.workers["reader"].put(_read_history, self.client, c.gen, c.prompt_id)

    def _download(self, c):
        until = self.started + self.opts.deadline if self.opts.deadline is not None else None
        self.workers["downloader"].put(_download, self.client, self.folder, c, until, self.over.is_set,
                                       self.opts.output_dir)

    def _cancel(self, c):
        self.workers["reader"].put(_cancel, self.client, c.prompt_ids)

    def _check_server(self, c):
        self.workers["reader"].put(_check_server, self.client)

    def _reconnect(self, c):
        self.listener.reconnect()

    # ---- view commands --------------------------------------------------------------------
    def _added(self, c):
        self.view.added(c.prompt)
        if self.stream:
            self.stream.added(c.prompt)

    def _changed(self, c):
        self.view.update(c.prompt)
        if self.stream:
            self.stream.update(c.prompt)

    def _output(self, c):
        url = self.client.view_url(c.item)
        if self.stream:
            self.stream.output(c.prompt, c.node, c.item, url, c.path)
        elif not self.opts.json and (c.path or not self.folder):
            self.view.result(c.path or url)

    def _report(self, c):
        prompt = c.prompt
        self.view.update(prompt)
        for line in report.failure_lines(prompt, self.opts.verbose):
            self.view.note(line)
        if self.stream:
            self.stream.finished(prompt)

    def _note(self, c):
        self.view.note(c.text)

    def _mode(self, c):
        self.view.transport(c.text, c.polling)
        if self.stream:
            self.stream.transport(c.text, c.polling)

    def _write_junit(self):
        from comfy_cli.outputs import write_new

        text = errors.redact(report.junit_xml(self.sup.board, time.monotonic() - self.started)).encode()
        try:
            write_new(self.opts.junit, lambda fh: fh.write(text), self.opts.overwrite)
        except OSError as exc:
            self.view.note(f"--junit {self.opts.junit}: cannot write: {exc.strerror or exc}")
            self.sup.files_missing = True  # a report that was asked for is missing: not a success


# ---- jobs: run on workers; each does its I/O and returns one result event ---------------
def _submit(client, workflow, client_id, prompt_id):
    try:
        reply = client.submit(workflow.graph, client_id, prompt_id)
    except Rejected as exc:
        return ev.SubmitFailed(time.monotonic(), prompt_id, ev.REFUSED, str(exc), exc.body)
    except Unsendable as exc:
        from comfy_cli.workflow import unsafe_input

        where = unsafe_input(workflow.graph)
        text = f"node {where[0]!r}: input {where[1]!r} holds NaN or Infinity, which JSON does not allow" \
            if where else str(exc)
        return ev.SubmitFailed(time.monotonic(), prompt_id, ev.LOCAL, f"{workflow.path}: {text}", None)
    except ServerError as exc:
        if isinstance(exc, TlsError) or (exc.status is not None and exc.status not in RETRY_STATUS):
            kind = ev.FATAL
        else:
            kind = ev.SENT if exc.sent else ev.NOT_SENT
        return ev.SubmitFailed(time.monotonic(), prompt_id, kind, str(exc), None)
    node_errors = reply.get("node_errors")
    number = reply.get("number")
    return ev.Accepted(time.monotonic(), prompt_id, number if isinstance(number, int) else None,
                       node_errors if isinstance(node_errors, dict) and node_errors else None)


def _check_server(client):
    try:
        client.system_stats(retry=False)
    except ServerError as exc:
        return ev.ServerChecked(time.monotonic(), str(exc))
    return ev.ServerChecked(time.monotonic(), None)


def _read_queue(client, gen):
    try:
        running, pending = client.queue(retry=False)
    except ServerError as exc:
        return ev.ReadFailed(time.monotonic(), gen, None, str(exc))
    return ev.QueueRead(time.monotonic(), gen, tuple(running), tuple(pending))


def _read_history(client, gen, prompt_id):
    try:
        entry = client.history(prompt_id, retry=False)
    except ServerError as exc:
        return ev.ReadFailed(time.monotonic(), gen, prompt_id, str(exc))
    return ev.HistoryRead(time.monotonic(), gen, prompt_id, entry)


def _download(client, folder, c, until, stop, folder_name):
    from comfy_cli.outputs import UnsafeName

    problem = None
    for attempt in range(backoff.DOWNLOAD.tries + 1):
        if attempt:
            time.sleep(backoff.DOWNLOAD.delay(attempt))
        try:
            path = folder.save(c.item, lambda fh: client.download(c.item, fh, MAX_DOWNLOAD, until, stop))
            return ev.Downloaded(time.monotonic(), c.prompt_id, c.key, path, None)
        except UnsafeName as exc:
            return ev.Downloaded(time.monotonic(), c.prompt_id, c.key, None, f"not saved: {exc}")
        except OSError as exc:
            return ev.Downloaded(time.monotonic(), c.prompt_id, c.key, None,
                                 f"cannot write into {folder_name}: {exc.strerror or exc}")
        except ServerError as exc:
            problem = f"download failed: {exc}"
            if stop() or (until is not None and time.monotonic() > until):
                break
    return ev.Downloaded(time.monotonic(), c.prompt_id, c.key, None, problem)


def _cancel(client, ids):
    """Delete ours that wait in the queue; interrupt ours that run, by prompt id, so that
    another client's prompt is never interrupted. Twice: one may start between the reads."""
    mine = set(ids)
    deleted, interrupted = [], []
    try:
        for _ in range(2):
            running, pending = client.queue(retry=False)
            wait = [pid for pid in pending if pid in mine and pid not in deleted]
            run = [pid for pid in running if pid in mine and pid not in interrupted]
            if not wait and not run:
                break
            client.delete_pending(wait)
            deleted.extend(wait)
            for pid in run:
                client.interrupt(pid)
                interrupted.append(pid)
    except ServerError as exc:
        return ev.CancelDone(time.monotonic(), tuple(deleted), tuple(interrupted), str(exc))
    return ev.CancelDone(time.monotonic(), tuple(deleted), tuple(interrupted), None)
