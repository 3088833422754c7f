"""What a person sees on stderr while a run goes on: tqdm bars, plain lines, or nothing.

Driven by the main thread alone. Redraws are rate-limited here, never once per message:
a flood of progress messages only changes numbers, and the screen is redrawn at most every
`interval` seconds per bar (and always at the end of a prompt).
"""

import os
import sys
import time

from comfy_cli import tracker as tr
from comfy_cli.errors import redact

END_WORDS = {
    tr.SUCCESS: "done",
    tr.FAILED: "FAILED",
    tr.INTERRUPTED: "interrupted",
    tr.REJECTED: "rejected",
    tr.LOST: "lost",
    tr.CANCELLED: "cancelled",
    tr.TIMEOUT: "timed out",
    tr.ERROR: "error",
    tr.DETACHED: "left running",
}


MANY = 10  # above this many prompts, bars show the running prompt and one overall bar


def make(mode, stream=None, out=None, name_width=0, count=1):
    """The view for --progress MODE; `out` is where results go (stdout)."""
    stream = stream or sys.stderr
    out = out or sys.stdout
    if mode == "auto":
        mode = "bars" if _isatty(stream) else "lines"
    if mode == "bars":
        return ManyBarsView(stream, out, name_width, count) if count > MANY else BarsView(stream, out, name_width)
    if mode == "lines":
        return LinesView(stream, out)
    return QuietView(stream, out)


def _columns(stream):
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def step_text(prompt):
    if prompt.node is None:
        return ""
    text = prompt.workflow.title(prompt.node)
    if prompt.step is not None:
        value, top = prompt.step
        text += f" {_num(value)}/{_num(top)}"
    return text


def _num(x):
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


class QuietView:
    """No progress at all; messages still reach stderr."""

    def __init__(self, stream, out):
        self.stream = stream
        self.out = out

    def result(self, line):
        """One line of results on stdout."""
        self.out.write(redact(line) + "\n")
        self.out.flush()

    def added(self, prompt):
        pass

    def update(self, prompt):
        pass

    def transport(self, text, polling=False):
        """The socket went down or came back; `polling` says which mode we are in now."""
        self.note(text)

    def tick(self):
        pass

    def note(self, text):
        self.stream.write(redact(text) + "\n")
        self.stream.flush()

    def close(self):
        pass


class LinesView(QuietView):
    """One line when a prompt starts, changes node, passes each 25% of a node's steps, ends."""

    def __init__(self, stream, out):
        super().__init__(stream, out)
        self._seen = {}  # prompt_id -> (status, node, quarter)

    def added(self, prompt):
        self._seen[prompt.prompt_id] = (prompt.status, None, -1)

    def update(self, prompt):
        status, node, quarter = self._seen.get(prompt.prompt_id, (None, None, -1))
        name = prompt.workflow.name
        if prompt.ended:
            if status not in tr.ENDED:
                self.note(f"{name}: {END_WORDS[prompt.status]}{_end_detail(prompt)}")
            self._seen[prompt.prompt_id] = (prompt.status, None, -1)
            return
        if status in tr.BEFORE_RUN and prompt.status == tr.RUNNING:
            self.note(f"{name}: started")
        if prompt.node is not None and prompt.node != node:
            node, quarter = prompt.node, -1
            self.note(f"{name}: node {node} {prompt.workflow.title(node)}")
        if prompt.step is not None and prompt.step[1]:
            q = min(4, int(4 * prompt.step[0] / prompt.step[1]))
            if q > quarter and q > 0:
                self.note(f"{name}: {step_text(prompt)} ({25 * q}%)")
                quarter = q
        self._seen[prompt.prompt_id] = (prompt.status, node, quarter)


def _end_detail(prompt):
    bits = []
    if prompt.started_at is not None and prompt.ended_at is not None:
        bits.append(f"in {prompt.ended_at - prompt.started_at:.2f}s")
    if prompt.status == tr.SUCCESS:
        bits.append(f"{len(prompt.ran - prompt.cached)} executed, {len(prompt.cached)} cached")
    return f" ({', '.join(bits)})" if bits else ""


class BarsView(QuietView):
    """One tqdm bar per prompt: name, nodes done/total, and the running node's steps."""

    FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} nodes [{elapsed}]{postfix}"
    FORMAT_ENDED = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} nodes{postfix}"  # time frozen

    def __init__(self, stream, out, name_width=0, interval=0.1):
        super().__init__(stream, out)
        self.name_width = name_width
        from tqdm import tqdm  # only when bars are drawn: keeps start-up light

        self._tqdm = tqdm
        # Follow the terminal's size; a pseudo-terminal with no size (some CI runners) reports
        # 0x0, and tqdm would then draw nothing at all.
        self._width = {"dynamic_ncols": True} if _columns(stream) > 0 else {"ncols": 100, "nrows": 1000}
        self.interval = interval
        self.bars = {}  # prompt_id -> tqdm
        self.prompts = {}  # prompt_id -> Prompt
        self._drawn = {}  # prompt_id -> monotonic time of the last redraw
        self._dirty = set()
        self.polling = False

    def added(self, prompt):
        bar = self._tqdm(total=max(prompt.total, 1), desc=prompt.workflow.name.ljust(self.name_width),
                         position=len(self.bars),
                         leave=True, file=self.stream, bar_format=self.FORMAT, **self._width,
                         mininterval=self.interval)
        bar.set_postfix_str("queued", refresh=False)
        bar.refresh()
        self.bars[prompt.prompt_id] = bar
        self.prompts[prompt.prompt_id] = prompt
        self._drawn[prompt.prompt_id] = time.monotonic()

    def update(self, prompt):
        pid = prompt.prompt_id
        bar = self.bars.get(pid)
        if bar is None:
            return
        if prompt.ended:
            bar.n = bar.total if prompt.status == tr.SUCCESS else prompt.done_count
            bar.bar_format = self.FORMAT_ENDED
            bar.set_postfix_str(END_WORDS[prompt.status] + _end_detail(prompt), refresh=False)
            bar.refresh()
            self._dirty.discard(pid)
        elif time.monotonic() - self._drawn[pid] >= self.interval:
            self._draw(pid)
        else:
            self._dirty.add(pid)  # drawn at the next tick: nothing is formatted per message

    def _draw(self, pid):
        prompt, bar = self.prompts[pid], self.bars[pid]
        bar.n = prompt.done_count
        bar.set_postfix_str(self._postfix(prompt), refresh=False)
        bar.refresh()
        self._drawn[pid] = time.monotonic()
        self._dirty.discard(pid)

    def transport(self, text, polling=False):
        self.note(text)
        self.polling = polling
        for prompt in self.prompts.values():
            if not prompt.ended:
                self.update(prompt)  # redraw with (or without) the polling mark

    def tick(self):
        now = time.monotonic()
        for pid in list(self._dirty):
            if now - self._drawn[pid] >= self.interval and not self.prompts[pid].ended:
                self._draw(pid)

    def _postfix(self, prompt):
        text = step_text(prompt) or ("running" if prompt.status == tr.RUNNING else "queued")
        return "[polling] " + text if self.polling else text

    def note(self, text):
        self._tqdm.write(redact(text), file=self.stream)

    def result(self, line):
        # Through tqdm, so a terminal shared by stdout and stderr keeps its bars intact.
        self._tqdm.write(redact(line), file=self.out)
        self.out.flush()

    def close(self):
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


class ManyBarsView(BarsView):
    """For big batches: one overall bar (prompts ended / total, failures counted) and one bar
    for the prompt running now, so hundreds of prompts stay readable."""

    def __init__(self, stream, out, name_width, count):
        super().__init__(stream, out, name_width)
        self.count = count
        self.failed = 0
        self.ended = set()
        self.overall = self._tqdm(total=count, desc="all".ljust(name_width), position=0, leave=True,
                                  file=stream, mininterval=self.interval, **self._width,
                                  bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} prompts "
                                             "[{elapsed}<{remaining}]{postfix}")
        self.current = self._tqdm(total=1, desc="".ljust(name_width), position=1, leave=False, file=stream,
                                  bar_format=self.FORMAT, **self._width, mininterval=self.interval)
        self.shown = None  # prompt_id on the current bar
        self._last = 0.0

    def added(self, prompt):
        self.prompts[prompt.prompt_id] = prompt

    def update(self, prompt):
        if prompt.ended:
            if prompt.prompt_id not in self.ended:
                self.ended.add(prompt.prompt_id)
                self.failed += prompt.status != tr.SUCCESS
                self.overall.n = len(self.ended)
                self.overall.set_postfix_str(f"{self.failed} not ok" if self.failed else "", refresh=False)
            if self.shown == prompt.prompt_id:
                self.shown = None
            self._redraw(force=len(self.ended) == self.count)
            return
        if prompt.status == tr.RUNNING:
            self.shown = prompt.prompt_id
        self._redraw()

    def _redraw(self, force=False):
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            self._dirty.add("all")
            return
        self._last = now
        prompt = self.prompts.get(self.shown)
        if prompt is not None and not prompt.ended:
            name = prompt.workflow.name.ljust(self.name_width)
            if self.current.desc != name or self.current.total != max(prompt.total, 1):
                self.current.reset(total=max(prompt.total, 1))
                self.current.set_description_str(name, refresh=False)
            self.current.n = prompt.done_count
            self.current.set_postfix_str(self._postfix(prompt), refresh=False)
        self.overall.refresh()
        self.current.refresh()
        self._dirty.clear()

    def tick(self):
        if self._dirty:
            self._redraw()

    def close(self):
        self.current.close()
        self.overall.refresh()
        self.overall.close()
