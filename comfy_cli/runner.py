"""One run: the event pump between the queue, the supervisor, the workers and the view.

    listener thread --events--> +-------+ --item, now--> supervisor (pure)
    workers (HTTP)  --results-> | queue |                    |
    signal handlers --Signal--> +-------+ <--- one loop --- commands
                                                              |
              I/O commands -> workers;  view commands -> view (main thread only)

The main thread runs one loop: take one item from the queue (or wake up when the supervisor
asks), feed it to the supervisor, carry out the commands it answers with. Nothing here
decides anything; no handler does I/O. Workers run one job at a time each (jobs.py): the
submitter (POST /prompt, in batch order), the reader (GET /queue, /history, cancelling,
withdrawing, dropping a deaf socket), the downloader (/view) and, with --expect, the comparer
(decoding and comparing images), so a slow download or comparison never holds up a
submission or a round.
"""

import datetime
import os
import queue
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Optional

from comfy_cli import backoff, errors, jobs
from comfy_cli import events as ev
from comfy_cli import report
from comfy_cli import supervisor as sv
from comfy_cli import tracker as tr
from comfy_cli import view as views
from comfy_cli.client import Client
from comfy_cli.errors import ServerError
from comfy_cli.limits import Limits
from comfy_cli.listener import Listener
from comfy_cli.uploads import Uploaded, Uploads

TICK = 0.1  # the longest the loop sleeps: bars redraw at this pace
HURRY_GRACE = 2.0  # after a second Ctrl-C, the longest the process may take to leave


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
    expect: Optional[str] = None  # --expect DIR: compare every output with its expected file there
    tolerance: object = None  # --tolerance (compare.Tolerance; None: the default)
    update_expected: bool = False  # --update-expected: write DIR's missing and differing files
    overwrite: bool = False
    events: bool = False  # NDJSON on stdout as things happen
    junit: Optional[str] = None
    report: Optional[str] = None  # --report FILE.html
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
    # Several servers (issue J):
    urls: tuple = ()  # every server; `url` is the first
    per_server: Optional[int] = None  # ours waiting on one server at once (default: 2 with several, else all)
    retry: int = 0  # new attempts for a prompt that failed, was lost or ended in error
    failover_after: float = 20.0  # a server silent this long loses its prompts that had not started
    node_types: Optional[list] = None  # per server, the node types its /object_info lists (None: unknown)
    journal: Optional[str] = None  # --journal FILE: record the batch; take it up again after a crash
    journal_options: Optional[dict] = None  # the options that make the batch this batch
    batch_key: Optional[str] = None  # the plan's digest: stands for every workflow in the journal's fingerprint
    # {"fingerprint", "size", "shard"}: the whole batch and the slice this run takes, in every
    # manifest line (what `merge` puts shards back together by)
    plan: Optional[dict] = None


def _one_cpu():
    """Keep this thread, and the threads it starts from now on, on the CPU it runs on now;
    return the CPUs it was allowed before (to restore), or None if nothing was changed.

    Why: the run's threads take turns on the GIL (one runs Python at a time) and hand work to
    each other all the time: frames to the loop, jobs to workers, the GIL itself. On different
    CPUs every such hand-off wakes another CPU (an inter-processor interrupt, costly in a VM);
    on one CPU it is a plain switch. That was a third of a 1000-prompt batch's CPU
    (tests/bench/RESULTS.md). Threads started earlier (a --simulate server) are not moved.
    Linux only; COMFY_CLI_ANY_CPU=1 turns it off."""
    if os.environ.get("COMFY_CLI_ANY_CPU") or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        allowed = os.sched_getaffinity(0)
        with open("/proc/thread-self/stat", "rb") as fh:
            cpu = int(fh.read().rsplit(b")", 1)[1].split()[36])  # field 39: the CPU it last ran on
        if len(allowed) < 2 or cpu not in allowed:
            return None
        os.sched_setaffinity(0, {cpu})
    except (OSError, ValueError, IndexError):
        return None
    return allowed


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
            if result is not None:  # (a journal write answers nothing)
                self.results.put(result)


def _catch_signals(events, hurry):
    """SIGINT and SIGTERM become events for the supervisor; a second one asks to stop at once
    (its exit code goes into `hurry`, a list the main loop watches); returns what restores the
    handlers before. An inherited SIG_IGN is kept: a shell that starts us in the background
    means it. Only the main thread may set handlers: a run started from another thread (a
    library user's) leaves the signals to its program."""
    saved = {}
    signalled = []

    def on(code):
        def handler(signum, frame):
            if hurry:
                os._exit(code)  # a third time: not even a last draw
            if signalled:
                # Asked twice: stop without waiting for the cancel. The loop sees it at its next
                # turn (within TICK, never in the middle of a draw: this handler draws nothing)
                # and leaves a clean screen; the timer ends the process should it not get there.
                hurry.append(code)
                timer = threading.Timer(HURRY_GRACE, os._exit, (code,))
                timer.daemon = True
                timer.start()
                events.put((None, None))
                return
            signalled.append(code)
            events.put((None, ev.Signal(time.monotonic(), code)))

        return handler

    for signum, code in ((signal.SIGINT, errors.SIGINT), (signal.SIGTERM, errors.SIGTERM)):
        if threading.current_thread() is not threading.main_thread():
            break
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue
        saved[signum] = signal.signal(signum, on(code))

    def restore():
        for signum, handler in saved.items():
            signal.signal(signum, handler)

    return restore


def _io(server, c):
    """An I/O command: a job on one of the server's workers."""
    server.carry_out[type(c)](c)


class _Tagged:
    """What a server's listener and workers put on the run's one queue: (server index, item)."""

    __slots__ = ("put",)

    def __init__(self, out, index):
        put = out.put
        self.put = lambda item: put((index, item))


class Server:
    """One ComfyUI server of the run: its HTTP client, websocket listener, workers, supervisor."""

    def __init__(self, index, url, opts, client_id, events, policy, started, prompts, run):
        limits = policy.limits
        self.run = run  # what the jobs need of the run: the journal, the output folder, ...
        self.index = index
        self.client = Client(url, token=opts.token, headers=opts.headers, ca_bundle=opts.ca_bundle,
                             insecure=opts.insecure)
        self.name = self.client.base
        tagged = _Tagged(events, index)
        header, sslopt = self.client.ws_options()
        self.listener = Listener(self.client.ws_url(client_id), client_id, tagged, header=header, sslopt=sslopt,
                                 connect_timeout=limits.connect_try()) if opts.socket else None
        names = ("submitter", "reader", "downloader") + (("comparer",) if opts.expect else ())
        self.workers = {name: Worker(f"{name}-{index}", tagged) for name in names}
        self.sup = sv.Supervisor(prompts, policy, started, wall=time.time(), socket_open=opts.socket,
                                 name=self.name)
        self.files = Uploads(self.client, opts.uploads, tagged.put)
        self.client_id = client_id
        self.carry_out = {
            sv.Submit: self._submit, sv.ReadQueue: self._read_queue, sv.ReadHistory: self._read_history,
            sv.Download: self._download, sv.Compare: self._compare, sv.Cancel: self._cancel,
            sv.Reconnect: self._reconnect,
            sv.CheckServer: self._check_server, sv.Withdraw: self._withdraw,
        }

    def start(self):
        if self.listener is not None:
            self.listener.start()
        for worker in self.workers.values():
            worker.start()

    def stop(self):
        """Its threads are told to stop (the client stays open for the summary's URLs)."""
        if self.listener is not None:
            self.listener.stop()
        for worker in self.workers.values():
            worker.stop()

    # ---- I/O commands: each becomes a job on one of its workers ---------------------------
    def _submit(self, c):
        prompt = self.sup.prompt(c.prompt_id)
        journal = self.run.journal
        attempt = self.run.attempt(prompt)
        record = journal.submitted if journal is not None and attempt.item is not None else None
        self.workers["submitter"].put(jobs.submit, self.client, prompt.workflow, self.client_id, c.prompt_id,
                                      record and (lambda: record(prompt, attempt)), self.files)

    def _read_queue(self, c):
        self.workers["reader"].put(jobs.read_queue, self.client, c.gen)

    def _read_history(self, c):
        self.workers["reader"].put(jobs.read_history, self.client, c.gen, c.prompt_id)

    def _download(self, c):
        run = self.run
        self.workers["downloader"].put(jobs.download, self.client, run.folder, c, run.over.is_set,
                                       run.opts.output_dir, c.prompt_id in run.resumed)

    def _compare(self, c):
        prompt = self.sup.prompt(c.prompt_id)
        job = self.run.expecting.job(prompt, self.sup.saved(c.prompt_id) or {})
        self.workers["comparer"].put(jobs.compare, *job)

    def _cancel(self, c):
        self.workers["reader"].put(jobs.cancel, self.client, c.prompt_ids)

    def _withdraw(self, c):
        self.workers["reader"].put(jobs.withdraw, self.client, c.prompt_ids)

    def _check_server(self, c):
        self.workers["reader"].put(jobs.check_server, self.client)

    def _reconnect(self, c):
        if self.listener is not None:  # (closing a socket can block: a worker does it)
            self.workers["reader"].put(jobs.reconnect, self.listener)


class Run:
    def __init__(self, opts: Options, out=None, err=None):
        self.opts = opts
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.client_id = opts.client_id or str(uuid.uuid4())
        self.events = queue.SimpleQueue()  # reentrant: the signal handlers put on it too
        urls = list(opts.urls) or [opts.url]
        self.journal = None
        self.earlier = {}  # prompt id -> {output key: path}: files of prompts that ended in an earlier run
        self.resumed = set()  # ids of prompts taken up from the journal (their files may be there already)
        self.junit_failed = False
        if opts.journal:
            from comfy_cli.journal import Journal, fingerprint

            options = dict(opts.journal_options or {})
            if opts.batch_key is not None:
                options["plan"] = opts.batch_key  # (a plan's prompts are not built to be fingerprinted)
            self.journal = Journal(opts.journal, fingerprint(opts.workflows if opts.batch_key is None else [], urls,
                                                             options), self.client_id)
            self.client_id = self.journal.client_id
            # fsync is slow: the main loop hands `output` and `end` lines to a worker of their own
            # (a `submit` line is written by the submitter, just before its POST leaves).
            self.journal_worker = Worker("journal", _Tagged(self.events, None))
        self.items = {}  # prompt id -> (item, attempt, server) of the batch's prompts, as the journal left them
        if opts.prompts is not None:
            self.prompts = list(opts.prompts)
        else:
            self.prompts = [self._prompt(i if wf.index is None else wf.index, wf)
                            for i, wf in enumerate(opts.workflows)]
        width = max((len(p.workflow.name) for p in self.prompts), default=0)
        self.view = views.make(opts.progress, self.err, self.out, width, len(self.prompts))
        self.view.show_server = len(opts.urls) > 1
        self.started = time.monotonic()
        self.over = threading.Event()  # set when the run ends: downloads stop early
        self.stream = None
        if opts.events:
            from comfy_cli.stream import EventStream

            self.stream = EventStream(self.out, self.started)
        self._open_outputs()
        self.wall_started = time.time()
        # `wait`'s prompts (not of a batch): their places in the order given
        self.places = {p.prompt_id: i for i, p in enumerate(self.prompts) if p.prompt_id not in self.items}
        self.urls_printed = 0  # /view URLs on stdout (a --simulate run says they die with it)
        self.hurry = []  # the exit code, once a second signal asked to stop at once
        self._make_servers(urls)
        self._do = {  # command type -> what carries it out, given (server, command)
            **{kind: _io for kind in sv.IO_COMMANDS},
            sv.Added: self._added, sv.Changed: self._changed, sv.Output: self._output, sv.Report: self._report,
            sv.Note: self._note, sv.Mode: self._mode,
        }

    def _open_outputs(self):
        """--output-dir (the folder and its manifest) and --report, each with its writer."""
        opts = self.opts
        self.folder = self.expecting = None
        self.manifest = None
        if opts.expect:
            from comfy_cli.expect import ForRun

            self.expecting = ForRun(opts.expect, opts.tolerance, opts.update_expected, opts.output_dir,
                                    opts.overwrite, opts.include_temp)
        if opts.output_dir or self.expecting:
            from comfy_cli.outputs import OutputDir

            self.folder = OutputDir(opts.output_dir or self.expecting.scratch, opts.overwrite)
        if opts.output_dir:
            from comfy_cli.manifest import Manifest

            self.manifest = Manifest(opts.output_dir)
            if opts.report:  # (the page may go into a folder of its own in DIR)
                os.makedirs(os.path.dirname(os.path.abspath(opts.report)), exist_ok=True)
            self.manifest_worker = Worker("manifest", _Tagged(self.events, None))
        self.live = None  # --report
        if opts.report:
            from comfy_cli.livereport import LiveReport

            self.live = LiveReport(opts.report, Worker("report", _Tagged(self.events, None)))

    def _make_servers(self, urls):
        """Every server of the run (client, listener, workers, supervisor) and the dispatcher
        over them; the prompts taken up from the journal or given to follow."""
        from comfy_cli.dispatch import Dispatcher, Plan

        opts = self.opts
        several = len(urls) > 1
        limits = Limits(deadline=opts.deadline, timeout=opts.timeout, connect_timeout=opts.connect_timeout,
                        failover_after=opts.failover_after)
        policy = sv.Policy(poll_interval=opts.poll_interval, silence_check=opts.silence_check, limits=limits,
                           no_cancel=opts.no_cancel, download=self.folder is not None, expect=bool(opts.expect),
                           include_temp=opts.include_temp, submit_only=opts.submit_only,
                           detach_on_signal=opts.detach_on_signal, alone=not several)
        # Prompts given to follow (`wait`) stay with the first server; a batch goes through the
        # dispatcher.
        follow = [p for p in self.prompts if p.status != tr.WAITING]
        self.servers = [Server(i, url, opts, self.client_id, self.events, policy, self.started,
                               [p for p in follow if p.prompt_id not in self.items] if i == 0 else [], self)
                        for i, url in enumerate(urls)]
        self.client = self.servers[0].client
        plan = Plan(per_server=opts.per_server if opts.per_server is not None else (2 if several else None),
                    retry=backoff.retries(opts.retry), limits=limits)
        waiting = [p for p in self.prompts if p.status == tr.WAITING]
        self.disp = Dispatcher(waiting, [s.sup for s in self.servers], plan, self.started,
                               names=[s.name for s in self.servers], node_types=opts.node_types,
                               items=[self.items[p.prompt_id][0] for p in waiting])
        for prompt in follow:
            if prompt.prompt_id in self.items:  # from the journal
                item, attempt, server = self.items[prompt.prompt_id]
                self.disp.known(prompt, item, attempt, server or self.client.base)
                if prompt.status == tr.SUBMITTING:
                    self._server_named(server).sup.resume(prompt, self.started,
                                                          self.journal.outputs.get(prompt.prompt_id))
            else:
                self.disp.follow(prompt, self.client.base)

    def _prompt(self, item, wf):
        """The batch's item `item`: new, or as the journal last saw it."""
        record = self.journal.items.get(item) if self.journal else None
        if record is None:
            prompt = tr.Prompt(str(uuid.uuid4()), wf, None, status=tr.WAITING)
        elif record.get("event") == "end":
            prompt = tr.Prompt(record["prompt_id"], wf, None, status=record.get("status") or tr.ERROR,
                               error=record.get("error"))
            if isinstance(record.get("outputs"), dict):
                prompt.outputs = record["outputs"]
                self.earlier[prompt.prompt_id] = dict(self.journal.outputs.get(prompt.prompt_id, {}))
            prompt.warnings.append({"type": "journal", "message": "ended in an earlier run (from the journal)"})
            prompt.settle()
        else:
            prompt = tr.Prompt(record["prompt_id"], wf, None, status=tr.SUBMITTING)
            self.resumed.add(prompt.prompt_id)
        self.items[prompt.prompt_id] = (item, 1, None) if record is None else \
            (item, record.get("attempt") or 1, record.get("server"))
        return prompt

    def attempt(self, prompt):
        """The dispatcher's record of one of the run's prompts (its item, try, server)."""
        return self.disp.attempt(prompt.prompt_id)

    def _server_named(self, name):
        return next((s for s in self.servers if s.name == name), self.servers[0])

    @property
    def several(self):
        return len(self.servers) > 1

    # ---- the whole run ----------------------------------------------------------------
    def execute(self):
        """Run to the end; return the exit code. A fatal ServerError is raised again after the
        summary (--json, --events, --junit) has been written, so scripts always get one."""
        fatal = None
        restore = _catch_signals(self.events, self.hurry)
        cpus = _one_cpu()
        try:
            for server in self.servers:
                server.start()
            if self.journal is not None:
                self.journal_worker.start()
            if self.manifest is not None:
                self.manifest_worker.start()
            for line in self.expecting.start_notes() if self.expecting else ():
                self.view.note(line)
            if self.live is not None:
                self.live.worker.start()
            self._earlier_records()
            self._loop()
            if self.hurry:
                self._stop_at_once()
            problem = self.disp.fatal or next((s.sup.outcome().fatal for s in self.servers
                                               if s.sup.outcome().fatal), None)
            if problem:
                fatal = ServerError(problem)
        finally:
            self._shut_down(restore, cpus)
        return self._summarize(fatal)

    def _shut_down(self, restore, cpus):
        """Signals and CPUs as they were; every thread told to stop, every file closed."""
        restore()
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        self.over.set()
        if self.journal is not None:
            self.journal_worker.stop()
            self.journal_worker.join(10)  # every line written before the file is closed
            self.journal.close()
        if self.manifest is not None:
            self.manifest_worker.stop()
            self.manifest_worker.join(10)
            self.manifest.close()
        if self.live is not None:
            self.live.stop()
        for server in self.servers:
            server.stop()
        self.view.close()

    def _summarize(self, fatal):
        """After the loop: the end notes, --junit, the summary line, --json or --events' summary;
        the exit code (a fatal ServerError is raised again once they are written)."""
        for server in self.servers:
            left = server.sup.outcome().not_withdrawn
            if left:  # it never answered again, or would not delete them: say what may still be queued there
                why = "did not answer again" if server.sup.silent_since() else "could not delete them there"
                self.view.note(f"{server.name}: {why}; these prompts moved away from it may still be in its queue: "
                               f"{' '.join(left)}")
        if self.manifest is not None and self.manifest.problem:
            self.view.note(f"--output-dir: {self.manifest.problem}")
        if self.opts.junit:
            self._write_junit()
        if self.live is not None:
            self.live.write(self.live.records, self._report_meta(self._exit_code(fatal)))
            if self.live.problem:
                self.view.note(self.live.problem)
        code = self._exit_code(fatal)
        for line in self.expecting.finish(self._finals()) if self.expecting else ():
            self.view.note(line)
        if fatal is None and not self.opts.submit_only:  # (`submit` says what it sent itself)
            self.err.write(self._summary_line() + "\n")
            self.err.flush()
        if self.opts.json or self.stream:
            saved = dict(self.earlier)
            for server in self.servers:
                saved.update(server.sup.outcome().saved)
            if self.expecting and self.expecting.scratch and not self.expecting.kept:
                saved = {}  # (the temporary folder is gone: no paths into it)
            doc = report.summary(self.disp.every(), self._view_url, [s.name for s in self.servers], code,
                                 self.opts.include_temp, saved, lazy=not self.stream)
            if self.stream:
                self.stream.summary(doc)
            else:
                report.write_json(self.out, doc)
                self.out.flush()
        for server in self.servers:
            server.client.close()
        if fatal is not None:
            raise fatal
        return code

    def _summary_line(self):
        every = [s.sup.outcome().saved for s in self.servers] + [self.earlier]
        files = sum(1 for one in every for saved in one.values() for path in saved.values()
                    if path is not None or self.folder is None)
        return report.summary_line(self._finals(), files, time.monotonic() - self.started)

    def _stop_at_once(self):
        """The second Ctrl-C: no waiting for the cancel. The bars are drawn a last time as they are
        (the loop has stopped between two draws, so none is half-drawn), one line says what may
        still run, and the process ends now: no report or file is written."""
        self.view.close()
        left = [pid for server in self.servers for pid in server.sup.may_still_run()]
        if left:
            line = "comfy-cli: stopped at once: prompts may still run on the server: " + " ".join(left)
        else:
            line = self._summary_line()
        try:
            self.out.flush()
            self.err.write(line + "\n")
            self.err.flush()
        finally:
            os._exit(self.hurry[0])

    def _finals(self):
        """Each batch item's last attempt, and the prompts followed (`wait`)."""
        return self.disp.finals()

    def _exit_code(self, fatal):
        outcomes = [s.sup.outcome() for s in self.servers]
        cancel_code = next((o.signal_code for o in outcomes if o.signal_code), errors.SIGINT)
        finals = self._finals() or self.prompts
        codes = [errors.OK if self.opts.submit_only and p.status in (tr.SUBMITTED, tr.RUNNING)
                 else report.exit_code(p, cancel_code) for p in finals]
        incomplete = self.junit_failed or (self.live is not None and self.live.problem) or (self.manifest and self.manifest.problem)
        if any(o.files_missing for o in outcomes) or incomplete or fatal is not None:
            codes.append(errors.UNREACHABLE)  # asked-for files are missing, or the run broke off
        return errors.worst(codes)

    # ---- the manifest's lines (written by its worker) -----------------------------------------
    def _record(self, prompt):
        """A prompt ended: its manifest line, kept for the report and handed to the writer."""
        if self.manifest is None and not self.opts.report:
            return
        from comfy_cli.manifest import record

        saved = next((files for files in (s.sup.saved(prompt.prompt_id) for s in self.servers) if files is not None),
                     self.earlier.get(prompt.prompt_id, {}))
        attempt = self.attempt(prompt)
        index = attempt.item if attempt.item is not None else self.places.get(prompt.prompt_id)
        ended = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")
        doc = errors.redact_obj(record(prompt, index, self.client_id, saved, self.opts.output_dir, self._view_url,
                                       self.opts.include_temp, self.opts.plan, ended, attempt))
        if self.live is not None:
            self.live.add(doc)
        # (A killed run may have written a line it did not journal: not twice.)
        if self.manifest is not None and prompt.prompt_id not in self.manifest.earlier:
            self.manifest_worker.put(self.manifest.write, doc)

    def _earlier_records(self):
        """A run taken up from its journal: the prompts that ended before keep their lines (a
        line the killed run had no time to write is written now)."""
        if self.manifest is None:
            return
        for prompt in self.prompts:
            if prompt.prompt_id in self.items and prompt.settled:
                doc = self.manifest.earlier.get(prompt.prompt_id)
                if doc is None:
                    self._record(prompt)
                elif self.live is not None:
                    self.live.add(doc)

    def _loop(self):
        import gc

        # What is alive now (modules, the batch) lives to the end: keep it out of the garbage
        # collector's full passes, which otherwise rescan it again and again in a long batch.
        gc.freeze()
        disp, get, dispatch, tick = self.disp, self.events.get, self._dispatch, self.view.tick
        if self.live is not None:
            tick = self._tick_and_report
        dispatch(disp.start(time.monotonic()))
        while not disp.done and not self.hurry:
            wake = disp.next_wakeup()
            wait = TICK if wake is None else min(TICK, max(0.0, wake - time.monotonic()))
            try:
                index, item = get(timeout=wait)
            except queue.Empty:
                index, item = None, None
            now = time.monotonic()
            if type(item) is list:  # the events of one socket read, each shown before the next
                server = self.servers[index]
                take, do = server.sup.take, self._do
                for event in item:
                    for command in take(event, now):
                        do[type(command)](server, command)
                item = None  # (the feed below lets the dispatcher see what ended)
            elif type(item) is Uploaded:  # a worker's news, nothing to decide
                self.view.note(f"uploaded {item.path} as {item.name}"
                               + (f" to {self.servers[index].name}" if self.several else ""))
                item = None
            dispatch(disp.feed(index, item, now))
            tick()

    def _dispatch(self, groups):
        do = self._do
        servers = self.servers
        for index, commands in groups:
            server = servers[index] if index is not None else None
            for command in commands:
                do[type(command)](server, command)

    def _view_url(self, prompt, item):
        attempt = self.attempt(prompt)
        for server in self.servers:
            if attempt is not None and server.name == attempt.server:
                return server.client.view_url(item)
        return self.client.view_url(item)

    # ---- view commands --------------------------------------------------------------------
    def _added(self, server, c):
        attempt = self.attempt(c.prompt)
        self.view.added(c.prompt, attempt.server)
        if self.several and isinstance(self.view, views.LinesView):
            which = f" (attempt {attempt.number})" if attempt.number > 1 else ""
            self.view.note(f"{c.prompt.workflow.name}: sent to {attempt.server}{which}")
        if self.stream:
            self.stream.added(c.prompt, attempt)

    def _changed(self, server, c):
        self.view.update(c.prompt)
        if self.stream:
            self.stream.update(c.prompt)

    def _output(self, server, c):
        attempt = self.attempt(c.prompt)
        if self.journal is not None and attempt.item is not None:
            from comfy_cli.report import output_key

            self.journal_worker.put(self.journal.output, c.prompt, attempt, output_key(c.node, c.item), c.path)
        if self.stream:
            self.stream.output(c.prompt, c.node, c.item, server.client.view_url(c.item), c.path)
        elif not self.opts.json and (c.path or not self.opts.output_dir):
            shown = c.path if self.opts.output_dir else None  # (--expect's temporary folder: URLs, as without)
            self.view.result(shown or server.client.view_url(c.item))
            self.urls_printed += shown is None

    def _report(self, server, c):
        prompt = c.prompt
        self._record(prompt)
        attempt = self.attempt(prompt)
        if self.journal is not None and attempt.item is not None:
            self.journal_worker.put(self.journal.ended, self.journal.end_record(prompt, attempt))
        self.view.update(prompt)
        for line in report.failure_lines(prompt, self.opts.verbose):
            self.view.note(line)
        if prompt.checked:
            for line in self.expecting.changes(prompt) + self.expecting.diffs(prompt):
                self.view.note(line)
        if self.stream:
            self.stream.finished(prompt)

    def _note(self, server, c):
        self.view.note(f"{server.name}: {c.text}" if self.several and server is not None
                       and not c.text.startswith(server.name) else c.text)

    def _mode(self, server, c):
        text = f"{server.name}: {c.text}" if self.several and server is not None else c.text
        self.view.transport(text, c.polling)
        if self.stream:
            self.stream.transport(text, c.polling)

    # ---- --report: rewritten during the run by a worker, at the pace of htmlreport.Pace --------
    def _tick_and_report(self):
        self.view.tick()
        now = time.monotonic()
        if self.live.resting(now):
            return
        open_ = [p for s in self.servers for p in s.sup.ours_open()]
        running = sum(1 for p in open_ if p.status == tr.RUNNING)
        if self.live.due(now, running, len(open_)):
            self.live.rewrite(self._report_meta(None, running=running, queued=len(open_) - running))

    def _report_meta(self, code, running=None, queued=None):
        """What the page says besides the prompts' lines (made on the main thread)."""
        def clock(t):
            return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(t))

        def way_to(folder):  # from the page to a folder, as a relative link prefix
            rel = os.path.relpath(os.path.abspath(folder), os.path.dirname(os.path.abspath(self.opts.report)))
            return "" if rel == "." else rel.replace(os.sep, "/") + "/"

        files = way_to(self.opts.output_dir) if self.opts.output_dir else None
        names = sorted({p.workflow.path for p in self.prompts})
        title = "comfy-cli report: " + ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return {"title": errors.redact(title), "finished": code is not None, "exit_code": code, "wall_s": time.monotonic() - self.started, "servers": [s.name for s in self.servers],
                "total": len(self.disp.finals()), "started": clock(self.wall_started),
                "updated": clock(time.time()), "files": files,
                "expected": way_to(self.opts.expect) if self.opts.expect else None, "refresh": 5, "running": running, "queued": queued}

    def _write_junit(self):
        from comfy_cli.outputs import write_new

        text = errors.redact(report.junit_xml(self.disp.every(), time.monotonic() - self.started)).encode()
        try:
            write_new(self.opts.junit, lambda fh: fh.write(text), self.opts.overwrite)
        except OSError as exc:
            self.view.note(f"--junit {self.opts.junit}: cannot write: {exc.strerror or exc}")
            self.junit_failed = True  # a report that was asked for is missing: not a success
