"""Aftercare: what happens to a prompt after its end, up to its report. Pure: no clock, no I/O.

A prompt whose picture may be incomplete (a gap in the socket, or a success with no outputs
seen) has its /history read (`backoff.HISTORY`: the entry can lag the end, ComfyUI #11540).
Its files are downloaded as soon as they are named, when asked (`--output-dir`); a download
the server failed is tried again (`backoff.DOWNLOAD`, not past the deadline nor once the run
is stopping). With --expect, a success's saved outputs are then compared with the expected
files (`Compare`, on a worker; the tracker turns a difference into `mismatch`); a run that is
stopping compares no more. Then it is reported, once: `settle`.
"""

from comfy_cli import backoff, report
from comfy_cli import tracker as tr
from comfy_cli.commands import Compare, Download, Note, Output, ReadHistory, Report
from comfy_cli.part import Part
from comfy_cli.poller import history_events


class _Fetch:
    """One output file being downloaded; `due` is set while it waits to be tried again."""

    __slots__ = ("node", "item", "tries", "due", "problem")

    def __init__(self, node, item):
        self.node, self.item = node, item
        self.tries = 0
        self.due = None
        self.problem = None


class _Lookup:
    """A /history read after the end."""

    __slots__ = ("attempt", "due", "asked")

    def __init__(self, due):
        self.attempt = 0
        self.due = due
        self.asked = False


class Aftercare(Part):
    def __init__(self, board, policy, started, count):
        super().__init__(board, policy, started)
        self.unsettled = count  # prompts not reported yet
        self.lookups = {}  # prompt id -> _Lookup: /history reads after the end
        self.downloads = {}  # prompt id -> {key: _Fetch} still downloading
        self.refetch = set()  # (prompt id, key) of downloads waiting to be tried again
        self.saved = {}  # prompt id -> {output key: local path or None}
        self.files_missing = False
        self.comparing = set()  # prompt ids whose outputs are being compared (--expect)
        self.compare_off = False  # stopping: no more comparisons
        self.reported = []  # prompts settled since the dispatcher last asked

    # ---- told and asked by the other parts ------------------------------------------------
    def add(self, saved=None):
        """One more prompt to report; `saved`: files an earlier run saved ({pid: {key: path}})."""
        self.unsettled += 1
        self.saved.update(saved or {})

    def all_settled(self):
        return self.unsettled == 0

    def take_reported(self):
        reported, self.reported = self.reported, []
        return reported

    def ended(self, prompt, at, out):
        """Once per prompt, at its end: read /history if the picture may be incomplete."""
        self.p.rounds.prompt_ended()
        self.p.subs.forget_timer(prompt.prompt_id)
        if prompt.wants_history:
            self.look_up(prompt.prompt_id, at)
            return
        self.settle(prompt, out)

    def look_up(self, pid, at):
        """Read the prompt's /history (from `at`)."""
        if pid not in self.lookups:
            self.lookups[pid] = _Lookup(at)

    def forget(self, pid):
        self.lookups.pop(pid, None)

    def forget_lookups(self):
        """The run is giving up: report what we have."""
        self.lookups.clear()

    def history_replayed(self, prompt, out):
        self.lookups.pop(prompt.prompt_id, None)
        prompt.history_read()
        self.settle(prompt, out)

    def lookup_answer(self, pid, entry, problem, now, out):
        lk = self.lookups.get(pid)
        if lk is None:
            return
        lk.asked = False
        prompt = self.board.prompts[pid]
        if entry is not None:
            self.p.conn.answering(now, out)
            del self.lookups[pid]
            prompt.history_read()
            for event in history_events(pid, entry, now):
                self.p.sup.apply(event, out)
            self.settle(prompt, out)
            return
        lk.attempt += 1
        if backoff.HISTORY.allows(lk.attempt):
            lk.due = now + backoff.HISTORY.delay(lk.attempt)
            return
        del self.lookups[pid]
        if problem:
            out.append(Note(f"{prompt.workflow.name}: cannot read /history: {problem}"))
        self.settle(prompt, out)  # what the socket told us is all we have
        # (if it had not ended after all, the socket or a round will tell)

    # ---- files ----------------------------------------------------------------------------
    def collect(self, prompt, out):
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

    def _until(self):
        return self.policy.limits.deadline_at(self.started)

    def downloaded(self, e, now, out):
        fetch = self.downloads.get(e.prompt_id, {}).get(e.key)
        if fetch is None or fetch.due is not None:
            return
        if e.retry and not self.p.stop.stopping():
            wait = backoff.DOWNLOAD.delay(fetch.tries + 1)
            if backoff.DOWNLOAD.allows(fetch.tries + 1) \
                    and not self.policy.limits.past_deadline(self.started, now + wait):
                fetch.tries += 1
                fetch.due = now + wait
                fetch.problem = e.problem
                self.refetch.add((e.prompt_id, e.key))
                return
        self._fetched(e.prompt_id, e.key, e.path, e.problem, out)

    def drop_downloads(self):
        """Wait for no file any more (those not saved count as missing), nor comparison."""
        self.compare_off = True
        for pid in self.comparing:
            self.board.prompts[pid].warn("expect", "not compared: the run stopped")
        self.comparing.clear()
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
        prompt = self.board.prompts[pid]
        self.saved.setdefault(pid, {})[key] = path
        if problem:
            out.append(Note(f"{prompt.workflow.name}: {problem}"))
        if path is None:
            self.files_missing = True
            prompt.warn("download", f"not saved: {fetch.item.get('filename')!r}")
        out.append(Output(prompt, fetch.node, fetch.item, path))
        self.settle(prompt, out)

    # ---- the report -----------------------------------------------------------------------
    def settle(self, prompt, out):
        """Report the prompt once its end is final and nothing more is coming for it."""
        pid = prompt.prompt_id
        if prompt.settled or pid in self.lookups or self.downloads.get(pid):
            return
        if not prompt.ended and not (self.policy.submit_only and prompt.status in (tr.SUBMITTED, tr.RUNNING)):
            return
        if self.p.stop.holds(pid):
            return  # a cancel is due or under way: its answer completes the end
        if self.p.subs.is_posting(pid):
            return  # a POST is still out: it may yet need cancelling
        if self._compare(prompt, out):
            return
        prompt.settle()
        self.unsettled -= 1
        self.reported.append(prompt)
        out.append(Report(prompt))

    def _compare(self, prompt, out):
        """--expect: a success is compared with its expected files once its outputs are saved;
        true while that is under way."""
        pid = prompt.prompt_id
        if pid in self.comparing:
            return True
        if not self.policy.expect or prompt.status != tr.SUCCESS or prompt.checked is not None or self.compare_off:
            return False
        self.comparing.add(pid)
        out.append(Compare(pid))
        return True

    def compared(self, e, now, out):
        if e.prompt_id not in self.comparing:
            return  # (the run stopped meanwhile)
        self.comparing.discard(e.prompt_id)
        prompt = self.board.prompts[e.prompt_id]
        prompt.compared(e.outcomes)
        self.settle(prompt, out)

    def settle_all(self, out, ended_only=False):
        for prompt in list(self.board.prompts.values()):
            if prompt.ended or not ended_only:
                self.settle(prompt, out)

    def close_all(self):
        """Nothing was sent and nothing will be: every prompt is over, unreported."""
        for prompt in self.board.prompts.values():
            prompt.settle()
        self.unsettled = 0

    # ---- time -----------------------------------------------------------------------------
    def timers(self, now, out):
        """/history lookups that are due, then downloads to try again (or to fail, if the run is
        giving up). Most turns have neither: nothing is built then."""
        for pid, lk in self.lookups.items():
            if not lk.asked and lk.due <= now:
                lk.asked = True
                out.append(ReadHistory(None, pid))
        if not self.refetch:
            return
        for pid, key in list(self.refetch):
            fetch = self.downloads[pid][key]
            if self.p.stop.stopping():  # the run is giving up: no more tries
                self.refetch.discard((pid, key))
                self._fetched(pid, key, None, fetch.problem, out)
            elif fetch.due <= now:
                self.refetch.discard((pid, key))
                fetch.due = None
                out.append(Download(pid, key, fetch.item, self._until()))

    def next_wakeup(self):
        if not self.lookups and not self.refetch:
            return None
        times = [lk.due for lk in self.lookups.values() if not lk.asked]
        times += [self.downloads[pid][key].due for pid, key in self.refetch]
        return min(times, default=None)
