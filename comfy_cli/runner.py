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

import os
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Optional

from comfy_cli import backoff, jobs
from comfy_cli import events as ev
from comfy_cli import livereport, runfiles, signals
from comfy_cli import summary as sm
from comfy_cli import supervisor as sv
from comfy_cli import tracker as tr
from comfy_cli import view as views
from comfy_cli.client import Client
from comfy_cli.ending import Ending
from comfy_cli.errors import ServerError
from comfy_cli.limits import Limits
from comfy_cli.listener import Listener
from comfy_cli.records import Records
from comfy_cli.shows import Shows
from comfy_cli.uploads import Uploaded, Uploads

TICK = 0.1  # the longest the loop sleeps: bars redraw at this pace
BURST = 64  # the most queue items one turn of the loop takes from one server


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

    def view_url(self, item):
        return self.client.view_url(item)

    def _reconnect(self, c):
        if self.listener is not None:  # (closing a socket can block: a worker does it)
            self.workers["reader"].put(jobs.reconnect, self.listener)


def take_burst(server, do, events, index, item, now):
    """One server's news (an event, or the events of one socket read) and whatever more of its
    news already waits on `events`: each event taken by its supervisor and its commands done
    (`do`) before the next, since views read the prompts as they are. The loop then runs the
    timers and the dispatcher once for all of it: a busy socket costs one turn per burst, not
    one per read. At most BURST items, so timers and bars never wait behind a flood. Returns
    the time and the item read that is not part of the burst (another server's, a signal, an
    upload note, or the one after a full burst), for the next turn."""
    take = server.sup.take
    for _ in range(BURST):
        for event in item if type(item) is list else (item,):
            for command in take(event, now):
                do[type(command)](server, command)
        if events.empty():
            return now, None
        nxt = events.get()
        if nxt[0] != index or type(nxt[1]) is Uploaded:
            return now, nxt
        item, now = nxt[1], time.monotonic()
    return now, (index, item)


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
        self.view = views.make(opts.progress, self.err, self.out, width, len(self.prompts),
                               show_server=len(opts.urls) > 1)
        self.started = time.monotonic()
        self.over = threading.Event()  # set when the run ends: downloads stop early
        self.stream = None
        if opts.events:
            from comfy_cli.stream import EventStream

            self.stream = EventStream(self.out, self.started)
        files = runfiles.open_files(opts, lambda name: Worker(name, _Tagged(self.events, None)))
        self.folder, self.expecting, self.live = files.folder, files.expecting, files.live
        self.wall_started = time.time()
        # `wait`'s prompts (not of a batch): their places in the order given
        self.places = {p.prompt_id: i for i, p in enumerate(self.prompts) if p.prompt_id not in self.items}
        self.hurry = []  # the exit code, once a second signal asked to stop at once
        self._make_servers(urls)
        self.records = Records(files.manifest, files.manifest_worker, self.live, opts, self.client_id, self._saved,
                               self.places, self._view_url, self.attempt)
        self.shows = shows = Shows(self.view, self.stream, opts, self.several, self.records, self.attempt,
                                   self.expecting, self.journal,
                                   self.journal_worker.put if self.journal is not None else None)
        self.ending = Ending(self.view, self.out, self.err, self.stream, opts, self.records, self.live,
                             self.expecting, downloading=self.folder is not None)
        self._do = {  # command type -> what carries it out, given (server, command)
            **{kind: _io for kind in sv.IO_COMMANDS},
            sv.Added: shows.added, sv.Changed: shows.changed, sv.Output: shows.output, sv.Report: shows.report,
            sv.Note: shows.note, sv.Mode: shows.mode,
        }

    def _make_servers(self, urls):
        """Every server of the run (client, listener, workers, supervisor) and the dispatcher
        over them; the prompts taken up from the journal or given to follow."""
        from comfy_cli.dispatch import Dispatcher, Plan

        opts = self.opts
        several = len(urls) > 1
        self.limits = limits = Limits(deadline=opts.deadline, timeout=opts.timeout, connect_timeout=opts.connect_timeout,
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
                                                          self.journal.handled(prompt.prompt_id))
            else:
                self.disp.follow(prompt, self.client.base)

    def _prompt(self, item, wf):
        """The batch's item `item`: new, or as the journal last saw it."""
        record = self.journal.last(item) if self.journal else None
        if record is None:
            prompt = tr.Prompt(str(uuid.uuid4()), wf, None, status=tr.WAITING)
        elif record.get("event") == "end":
            prompt = tr.ended_before(record["prompt_id"], wf, record.get("status") or tr.ERROR, record.get("error"),
                                     outputs=record.get("outputs"))
            if isinstance(record.get("outputs"), dict):
                self.earlier[prompt.prompt_id] = self.journal.handled(prompt.prompt_id)
            prompt.warn("journal", "ended in an earlier run (from the journal)")
        else:
            prompt = tr.Prompt(record["prompt_id"], wf, None, status=tr.SUBMITTING)
            self.resumed.add(prompt.prompt_id)
        self.items[prompt.prompt_id] = (item, 1, None) if record is None else \
            (item, record.get("attempt") or 1, record.get("server"))
        return prompt

    def attempt(self, prompt):
        """The dispatcher's record of one of the run's prompts (its item, try, server)."""
        return self.disp.attempt(prompt.prompt_id)

    @property
    def urls_printed(self):
        """How many /view URLs went to stdout (a --simulate run says they die with it)."""
        return self.shows.urls_printed()

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
        restore = signals.catch(self.events, self.hurry, self.limits)
        cpus = _one_cpu()
        try:
            for server in self.servers:
                server.start()
            if self.journal is not None:
                self.journal_worker.start()
            self.records.start()
            for line in self.expecting.start_notes() if self.expecting else ():
                self.view.note(line)
            if self.live is not None:
                self.live.start()
            self.records.earlier(self.prompts)
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
        self.records.close()
        if self.live is not None:
            self.live.stop()
        for server in self.servers:
            server.stop()
        self.view.close()

    def _summarize(self, fatal):
        """After the loop: what the run says and writes at its end (ending.py); the exit code (a
        fatal ServerError is raised again once they are written)."""
        code = self.ending.finish(self._end(), fatal, time.monotonic() - self.started, self._view_url,
                                  self._report_meta)
        for server in self.servers:
            server.client.close()
        if fatal is not None:
            raise fatal
        return code

    def _end(self):
        """The run as the loop left it, for the summary (values only)."""
        sups = [s.sup for s in self.servers]
        return sm.End([s.name for s in self.servers], [sup.outcome() for sup in sups],
                      [sup.silent_since() for sup in sups], self.disp.every(),
                      self._finals(), self.earlier)

    def _finals(self):
        """Each batch item's last attempt, then the prompts followed (`wait`'s)."""
        return self.disp.finals()

    def _stop_at_once(self):
        """The second Ctrl-C: no waiting for the cancel. The bars are drawn a last time as they are
        (the loop has stopped between two draws, so none is half-drawn), one line says what may
        still run, and the process ends now: no report or file is written."""
        self.view.close()
        left = [pid for server in self.servers for pid in server.sup.may_still_run()]
        if left:
            line = "comfy-cli: stopped at once: prompts may still run on the server: " + " ".join(left)
        else:
            line = self.ending.line(self._end(), time.monotonic() - self.started)
        try:
            kept = self.expecting.abandon(self._finals()) if self.expecting else []
            self.out.flush()
            self.err.write("".join(f"{text}\n" for text in [line] + kept))
            self.err.flush()
        finally:
            os._exit(self.hurry[0])

    def _loop(self):
        import gc

        # What is alive now (modules, the batch) lives to the end: keep it out of the garbage
        # collector's full passes, which otherwise rescan it again and again in a long batch.
        gc.freeze()
        disp, dispatch, tick = self.disp, self._dispatch, self.view.tick
        get, empty = self.events.get, self.events.empty
        if self.live is not None:
            tick = self._tick_and_report
        dispatch(disp.start(time.monotonic()))
        held = None  # an item taken from the queue that is for the next turn
        while not disp.done and not self.hurry:
            if held is not None:
                (index, item), held = held, None
            elif not empty():  # (no need to know when to wake)
                index, item = get()
            else:
                wake = disp.next_wakeup()
                wait = TICK if wake is None else min(TICK, max(0.0, wake - time.monotonic()))
                try:
                    index, item = get(timeout=wait)
                except queue.Empty:
                    index, item = None, None
            now = time.monotonic()
            if type(item) is Uploaded:  # a worker's news, nothing to decide
                self.view.note(f"uploaded {item.path} as {item.name}"
                               + (f" to {self.servers[index].name}" if self.several else ""))
                item = None
            elif index is not None:
                now, held = take_burst(self.servers[index], self._do, self.events, index, item, now)
                item = None  # (the feed below runs its timers; the dispatcher sees what ended)
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
        return self._server_named(attempt and attempt.server).view_url(item)

    def _saved(self, pid):
        """A prompt's files ({output key: path}), from the server that saved them or an earlier run."""
        return next((files for files in (s.sup.saved(pid) for s in self.servers) if files is not None),
                    self.earlier.get(pid, {}))

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
        return livereport.meta(self.opts, [p.workflow.path for p in self.prompts], [s.name for s in self.servers],
                               len(self.disp.finals()), self.wall_started,
                               time.monotonic() - self.started, code, running, queued)
