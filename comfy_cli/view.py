"""What a person sees on stderr while a run goes on: tqdm bars, plain lines, or nothing.

Driven by the main thread alone. Redraws are rate-limited here, never once per message:
a flood of progress messages only changes numbers, and the screen is redrawn at most every
`interval` seconds per bar (and always at the end of a prompt).
"""

import math
import os
import sys
import time

from comfy_cli import tracker as tr

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
    tr.MISMATCH: "MISMATCH",
}


MANY = 10  # above this many prompts, bars show the running prompt and one overall bar


def make(mode, stream=None, out=None, name_width=0, count=1, show_server=False):
    """The view for --progress MODE; `out` is where results go (stdout); `show_server`: several
    servers, say which one runs each prompt."""
    view = _make(mode, stream or sys.stderr, out or sys.stdout, name_width, count)
    view.show_server = show_server
    return view


def _make(mode, stream, out, name_width, count):
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
    now = prompt.progress
    if now.node is None:
        return ""
    text = prompt.workflow.title(now.node)
    if now.step is not None:
        value, top = now.step
        text += f" {_num(value)}/{_num(top)}"
    return text


def _num(x):
    if isinstance(x, int):
        return str(x) if abs(x) < 10 ** 15 else f"{x:.3g}"  # a junk 400-digit step count stays short
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


def _steps(step):
    """(value, max) as floats for the bar, or None when they cannot fill one (max <= 0, huge)."""
    try:
        value, top = float(step[0]), float(step[1])
    except (OverflowError, TypeError, ValueError):
        return None
    if not (top > 0 and math.isfinite(top) and math.isfinite(value)):
        return None
    return min(max(value, 0.0), top), top


class QuietView:
    """No progress at all; messages still reach stderr."""

    def __init__(self, stream, out):
        self.stream = stream
        self.out = out

    def result(self, line):
        """One line of results on stdout."""
        self.out.write(line + "\n")
        self.out.flush()

    show_server = False  # several servers: say which one runs each prompt

    def added(self, prompt, server=None):
        """A prompt to show, sent to `server` (None: not sent to one)."""

    def update(self, prompt):
        pass

    def transport(self, text, polling=False):
        """The socket went down or came back; `polling` says which mode we are in now."""
        self.note(text)

    def tick(self):
        pass

    def note(self, text):
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self):
        pass


class LinesView(QuietView):
    """One line when a prompt starts, changes node, passes each 25% of a node's steps, ends; each
    with how far the whole prompt is (its `fill`). A node that runs long without steps (a model
    loading) gets a line every `quiet` seconds, so a log shows it is busy, not hung."""

    def __init__(self, stream, out, quiet=30.0, clock=time.monotonic):
        super().__init__(stream, out)
        self.quiet = quiet
        self.clock = clock
        self._seen = {}  # prompt_id -> (status, node, quarter)
        self._running = {}  # prompt_id -> (prompt, time of its last line): those with a node running
        self._last = 0.0

    def added(self, prompt, server=None):
        self._seen[prompt.prompt_id] = (prompt.status, None, -1)

    def update(self, prompt):
        status, node, quarter = self._seen.get(prompt.prompt_id, (None, None, -1))
        name = prompt.workflow.name
        if prompt.ended:
            self._running.pop(prompt.prompt_id, None)
            # Every end but success is said once, with its reasons, when the prompt is reported.
            if status not in tr.ENDED and prompt.status == tr.SUCCESS:
                self.note(f"{name}: {END_WORDS[prompt.status]}{_end_detail(prompt)}")
            self._seen[prompt.prompt_id] = (prompt.status, None, -1)
            return
        if status in tr.BEFORE_RUN and prompt.status == tr.RUNNING:
            self.note(f"{name}: started")
        running, step = prompt.progress.node, prompt.progress.step
        if running is not None and running != node:
            node, quarter = running, -1
            self._said(prompt, f"node {node} {prompt.workflow.title(node)}")
        step = _steps(step) if step is not None else None
        if step is not None:
            q = min(4, int(4 * step[0] / step[1]))
            if q > quarter and q > 0:
                self._said(prompt, step_text(prompt))
                quarter = q
        self._seen[prompt.prompt_id] = (prompt.status, node, quarter)

    def _said(self, prompt, text):
        self.note(f"{prompt.workflow.name}: {text} ({percent(prompt)}%)")
        self._running[prompt.prompt_id] = (prompt, self.clock())

    def tick(self):
        now = self.clock()
        if now - self._last < 1.0:
            return
        self._last = now
        for pid, (prompt, said) in list(self._running.items()):
            node, since = prompt.progress.node, prompt.progress.node_at
            if prompt.ended or node is None or since is None or now - said < self.quiet:
                continue
            self.note(f"{prompt.workflow.name}: node {node} {prompt.workflow.title(node)} still "
                      f"running ({_clock_text(now - since)}, {percent(prompt)}%)")
            self._running[pid] = (prompt, now)


def percent(prompt):
    """How far the whole prompt is, in whole percent: 100 only once it succeeded."""
    return int(prompt.progress.fill * 100 + 1e-9)


def _end_detail(prompt):
    bits = []
    server_ms = (prompt.server_end_ms - prompt.server_start_ms
                 if isinstance(prompt.server_end_ms, int) and isinstance(prompt.server_start_ms, int) else None)
    if prompt.submitted_at is None and server_ms is not None and 0 <= server_ms < 10 ** 12:  # (junk: not shown)
        # Not submitted by us (`wait`): it may have run before we looked; the server's clock knows.
        bits.append(f"in {server_ms / 1000:.2f}s")
    elif prompt.started_at is not None and prompt.ended_at is not None:
        bits.append(f"in {prompt.ended_at - prompt.started_at:.2f}s")
    if prompt.status == tr.SUCCESS:
        cached = prompt.progress.cached
        bits.append(f"{len(prompt.progress.ran - cached)} executed, {len(cached)} cached")
    return f" ({', '.join(bits)})" if bits else ""


# ---- bars -----------------------------------------------------------------------------------------

NAME_SHARE = 0.25  # a workflow's name takes at most this share of the terminal's width
MIN_BAR = 6  # the bar itself keeps at least this many columns
SPARE = 2  # columns left free at the right: a "^C" echoed after a bar must not wrap the line
SMOOTH = 0.3  # weight of the newest step rate (as tqdm's default smoothing)
SAMPLE = 0.25  # seconds between step-rate samples
ERASE = "\x1b[K"  # erase to the end of the line


def shorten(text, width):
    """`text` in at most `width` columns, with a middle ellipsis if it is longer."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    head = width // 2
    tail = width - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


def _rate_text(rate):
    """Steps per second as ComfyUI's console shows them: 4.91it/s, or 2.35s/it when slow."""
    return f"{rate:.2f}it/s" if rate >= 1 else f"{1 / rate:.2f}s/it"


def _clock_text(seconds):
    seconds = int(max(0.0, seconds) + 0.5)
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _bar_width(width):
    """The bar's own columns for a line of `width`: a fifth of it, 6 to 25."""
    return max(MIN_BAR, min(25, width // 5))


class _Speed:
    """The running node's step rate, from the times its step messages reached the view."""

    __slots__ = ("node", "t0", "v0", "last", "rate")

    def __init__(self):
        self.node = self.t0 = self.v0 = self.last = self.rate = None

    def see(self, node, value, now):
        if node != self.node or self.last is None or value < self.last:
            # A new node (or a node that starts its steps again): measure afresh.
            self.node, self.t0, self.v0, self.last, self.rate = node, now, value, value, None
            return
        self.last = value
        if value > self.v0 and now - self.t0 >= SAMPLE:
            latest = (value - self.v0) / (now - self.t0)
            self.rate = latest if self.rate is None else SMOOTH * latest + (1 - SMOOTH) * self.rate
            self.t0, self.v0 = now, value


class _Line:
    """What one bar says, in parts, so it can be laid out for any width at draw time."""

    def __init__(self, name, pad):
        self.name = name
        self.pad = pad  # names are padded to this width (the longest name in the run), if room
        self.nodes = (0, 1)  # (done, total)
        self.title = None  # the running node's title
        self.step = None  # (value, max)
        self.speed = None  # (rate text, time left text), once known
        self.busy = None  # seconds the running node has run without steps, once worth showing
        self.state = "queued"  # shown when no node runs: queued, running, or the end word
        self.detail = ""  # the end's details: " (in 1.05s, 2 executed, 0 cached)"
        self.polling = False

    def layout(self, width, elapsed):
        """(left, right) of the bar for a line of `width` columns."""
        share = max(8, int(width * NAME_SHARE))
        left = shorten(self.name, share).ljust(min(self.pad, share)) + " "
        room = width - len(left) - len("100%||") - _bar_width(width)
        return left, self._right(room, elapsed).ljust(room)  # the same bar width on every line

    def _right(self, room, elapsed):
        done, total = self.nodes
        nodes_long, nodes_short = f"{done}/{total} nodes", f"{done}/{total}"
        mark = "[polling] " if self.polling else ""
        if self.title is not None:
            what = mark + self.title
            steps = f" {_num(self.step[0])}/{_num(self.step[1])}" if self.step else ""
            if not self.step and self.busy is not None:
                steps = f", busy {_clock_text(self.busy)}"  # a model loading: the server works
            clock = f"[{_clock_text(elapsed)}]"
            variants = []
            if self.speed:
                rate, left_time = self.speed
                variants += [[nodes_long, what + steps, f"{rate}, {left_time} left", clock],
                             [nodes_long, what + steps, f"{rate}, {left_time} left"],
                             [nodes_short, what + steps, f"{rate} {left_time}"]]
            variants += [[nodes_long, what + steps, clock], [nodes_long, what + steps], [nodes_short, what + steps]]
            last = (nodes_short, mark, self.title, steps)
        else:
            state = mark + self.state
            variants = [[nodes_long, state + self.detail], [nodes_short, state + self.detail],
                        [nodes_long, state], [nodes_short, state]]
            last = (nodes_short, mark, self.state, "")
        for parts in variants:
            right = "| " + ", ".join(parts)
            if len(right) <= room:
                return right
        # Narrower still: the title gives way (the steps stay), then tqdm cuts at the edge.
        nodes, mark, title, steps = last
        fixed = len(f"| {nodes}, {mark}{steps}")
        return f"| {nodes}, {mark}{shorten(title, max(4, room - fixed))}{steps}"


def _bar_class(tqdm, erase):
    """tqdm, drawing a `_Line` laid out for the terminal's width at each redraw."""

    class Bar(tqdm):
        def __init__(self, *args, line, **kwargs):
            self.line = line  # before tqdm's own __init__, which draws the bar once
            super().__init__(*args, **kwargs)
            draw = getattr(self, "sp", None)
            if erase and draw is not None:
                def sp(text):
                    # On a terminal each draw also erases the rest of the line: a "^C" the
                    # terminal echoed after the bar goes at the next draw (the last one too).
                    draw(text)
                    self.fp.write(ERASE)

                self.sp = sp

        @property
        def format_dict(self):
            d = super().format_dict
            width = max(20, (d.get("ncols") or 100) - SPARE)
            d["ncols"] = width
            d["left"], d["right"] = self.line.layout(width, d.get("elapsed") or 0.0)
            # Whole percent rounded down, as lines say it (tqdm rounds): 100% means done.
            d["pct"] = math.floor(100 * d["n"] / d["total"] + 1e-9) if d.get("total") else 0
            return d

        def clear(self, nolock=False):
            # As tqdm's, but on a terminal it erases the whole line: whatever the terminal echoed
            # there (a "^C") goes too, and no stale bar is left above the messages.
            if self.disable:
                return
            if not nolock:
                self._lock.acquire()
            try:
                pos = abs(self.pos)
                if pos < (self.nrows or 20):
                    self.moveto(pos)
                    self.sp("")
                    self.fp.write("\r" + ERASE if erase else "\r")
                    self.moveto(-pos)
            finally:
                if not nolock:
                    self._lock.release()

    return Bar


BUSY = 1.0  # a node running this long without steps shows how long, redrawn every second


class BarsView(QuietView):
    """One tqdm bar per prompt. The bar fills with the whole prompt's advance (its `fill`: nodes
    done and the running node's steps, only forward, 100% only on success); the text says nodes
    done/total, the node's title, its steps, their rate and the time left, or how long a node
    without steps has been busy; an ended bar keeps its final state and fill."""

    FORMAT = "{left}{pct:3d}%|{bar}{right}"

    def __init__(self, stream, out, name_width=0, interval=0.1, columns=None, clock=time.monotonic):
        super().__init__(stream, out)
        self.name_width = name_width
        from tqdm import tqdm  # only when bars are drawn: keeps start-up light

        self._tqdm = tqdm
        self._bar = _bar_class(tqdm, erase=_isatty(stream))
        # Follow the terminal's size; a pseudo-terminal with no size (some CI runners) reports
        # 0x0, and tqdm would then draw nothing at all.
        if columns:
            self._width = {"ncols": columns, "nrows": 1000}
        else:
            self._width = {"dynamic_ncols": True} if _columns(stream) > 0 else {"ncols": 100, "nrows": 1000}
        self.interval = interval
        self.clock = clock
        self.bars = {}  # prompt_id -> Bar
        self.prompts = {}  # prompt_id -> Prompt
        self.speeds = {}  # prompt_id -> _Speed
        self._drawn = {}  # prompt_id -> clock time of the last redraw
        self._dirty = set()
        self.polling = False

    def _new_bar(self, name, position, leave=True):
        return self._bar(total=1, position=position, leave=leave, file=self.stream, bar_format=self.FORMAT,
                         mininterval=self.interval, **self._width, line=_Line(name, self.name_width))

    def added(self, prompt, server=None):
        label = prompt.workflow.name
        if self.show_server and server:
            label += " @" + server.split("://", 1)[-1]  # which server runs it (several servers)
        bar = self._new_bar(label, len(self.bars))
        self.bars[prompt.prompt_id] = bar
        self.prompts[prompt.prompt_id] = prompt
        self.speeds[prompt.prompt_id] = _Speed()
        self._fill(bar, prompt, None)
        bar.refresh()
        self._drawn[prompt.prompt_id] = self.clock()

    def update(self, prompt):
        pid = prompt.prompt_id
        bar = self.bars.get(pid)
        if bar is None:
            return
        now = self.clock()
        if prompt.ended:
            self._fill(bar, prompt, None)
            bar.refresh()
            self._dirty.discard(pid)
            return
        step = _steps(prompt.progress.step) if prompt.progress.step is not None else None
        if step is not None:
            self.speeds[pid].see(prompt.progress.node, step[0], now)
        if now - self._drawn[pid] >= self.interval:
            self._draw(pid)
        else:
            self._dirty.add(pid)  # drawn at the next tick: nothing is formatted per message

    def _fill(self, bar, prompt, speed):
        """Put the prompt's state into the bar (no drawing)."""
        line, now = bar.line, prompt.progress
        line.nodes = (now.done_count, now.total)
        line.speed = line.busy = None
        self._set(bar, now.fill, 1)  # on any end but success it stays where it was
        if prompt.ended:
            line.title = line.step = None
            line.state = END_WORDS.get(prompt.status, prompt.status)
            line.detail = _end_detail(prompt)
            line.polling = False
            return
        line.polling = self.polling
        line.detail = ""
        line.state = "running" if prompt.status == tr.RUNNING else "queued"
        line.title = prompt.workflow.title(now.node) if now.node is not None else None
        step = _steps(now.step) if now.step is not None and now.node is not None else None
        line.step = now.step if step is not None else None
        if step is not None:
            value, top = step
            if speed is not None and speed.rate and speed.node == now.node:
                line.speed = (_rate_text(speed.rate), _clock_text((top - value) / speed.rate))
        elif now.node is not None and now.node_at is not None and self.clock() - now.node_at >= BUSY:
            line.busy = self.clock() - now.node_at

    @staticmethod
    def _set(bar, n, total):
        if bar.total != total:
            bar.total = total
        bar.n = n

    def _draw(self, pid):
        prompt, bar = self.prompts[pid], self.bars[pid]
        self._fill(bar, prompt, self.speeds[pid])
        bar.refresh()
        self._drawn[pid] = self.clock()
        self._dirty.discard(pid)

    def transport(self, text, polling=False):
        self.note(text)
        self.polling = polling
        for pid, prompt in self.prompts.items():
            if not prompt.ended:
                self._draw(pid)  # redraw with (or without) the polling mark

    def tick(self):
        now = self.clock()
        for pid in list(self._dirty):
            if now - self._drawn[pid] >= self.interval and not self.prompts[pid].ended:
                self._draw(pid)
        for pid, prompt in self.prompts.items():
            if _busy(prompt, now) and now - self._drawn[pid] >= BUSY:
                self._draw(pid)  # no message comes while a model loads: the busy time still moves

    def note(self, text):
        self._tqdm.write(text, file=self.stream)

    def result(self, line):
        # Through tqdm, so a terminal shared by stdout and stderr keeps its bars intact.
        self._tqdm.write(line, file=self.out)
        self.out.flush()

    def close(self):
        # Each bar is drawn a last time, in order, on its own line (tqdm's leave=True).
        for pid, bar in self.bars.items():
            prompt = self.prompts.get(pid)
            if prompt is not None:
                self._fill(bar, prompt, self.speeds.get(pid))
            bar.close()
        self.bars.clear()


def _busy(prompt, now):
    """A node runs without steps (yet) and has for a while: its bar shows for how long."""
    p = prompt.progress
    return not prompt.ended and p.node is not None and p.step is None and p.node_at is not None and now - p.node_at >= BUSY


class ManyBarsView(BarsView):
    """For big batches: one overall bar (prompts ended / total, failures counted) and a bar for
    the prompt running now: one per server when there are several (each runs one at a time),
    labelled with the server, so hundreds of prompts stay readable."""

    def __init__(self, stream, out, name_width, count, columns=None, clock=time.monotonic):
        super().__init__(stream, out, name_width, columns=columns, clock=clock)
        self.count = count
        self.failed = 0
        self.ended = set()
        self.overall = self._bar(total=count, position=0, leave=True, file=stream, mininterval=self.interval,
                                 bar_format=self.FORMAT, **self._width, line=_Overall(name_width, count))
        self.current = {}  # server (None with one) -> its "running now" bar
        self.shown = {}  # server -> prompt_id on its bar, or None
        self.servers = {}  # prompt_id -> the server it was sent to
        self._last = 0.0

    def _slot(self, prompt):
        key = self.servers.get(prompt.prompt_id) if self.show_server else None
        if key not in self.current:
            self.current[key] = self._new_bar("", 1 + len(self.current), leave=False)
            self.shown[key] = None
        return key

    def added(self, prompt, server=None):
        self.prompts[prompt.prompt_id] = prompt
        self.speeds[prompt.prompt_id] = _Speed()
        self.servers[prompt.prompt_id] = server

    def update(self, prompt):
        pid = prompt.prompt_id
        if prompt.ended:
            if pid not in self.ended:
                self.ended.add(pid)
                self.failed += prompt.status != tr.SUCCESS
                self.overall.n = len(self.ended)
                self.overall.line.ended, self.overall.line.failed = len(self.ended), self.failed
            for key, shown in self.shown.items():
                if shown == pid:
                    self.shown[key] = None
            self._redraw(force=len(self.ended) == self.count)
            return
        step = _steps(prompt.progress.step) if prompt.progress.step is not None else None
        if step is not None:
            self.speeds[pid].see(prompt.progress.node, step[0], self.clock())
        if prompt.status == tr.RUNNING:
            self.shown[self._slot(prompt)] = pid
        self._redraw()

    def _redraw(self, force=False):
        now = self.clock()
        if not force and now - self._last < self.interval:
            self._dirty.add("all")
            return
        self._last = now
        self.overall.refresh()
        for key, bar in self.current.items():
            prompt = self.prompts.get(self.shown[key])
            if prompt is not None and not prompt.ended:
                where = " @" + key.split("://", 1)[-1] if key else ""
                bar.line.name = prompt.workflow.name + where
                self._fill(bar, prompt, self.speeds.get(prompt.prompt_id))
            bar.refresh()
        self._dirty.clear()

    def transport(self, text, polling=False):
        self.note(text)
        self.polling = polling
        self._redraw(force=True)

    def tick(self):
        now = self.clock()
        if self._dirty or (now - self._last >= BUSY
                           and any(_busy(self.prompts[pid], now) for pid in self.shown.values() if pid)):
            self._redraw()

    def close(self):
        for bar in self.current.values():
            bar.close()
        self.overall.refresh()
        self.overall.close()


class _Overall:
    """The overall bar's text: prompts ended / total, time and time left, those not ok."""

    def __init__(self, pad, count):
        self.pad = pad
        self.count = count
        self.ended = 0
        self.failed = 0

    def layout(self, width, elapsed):
        share = max(8, int(width * NAME_SHARE))
        left = "all".ljust(min(self.pad, share)) + " "
        room = width - len(left) - len("100%||") - _bar_width(width)
        done = f"{self.ended}/{self.count} prompts"
        bad = f"{self.failed} not ok" if self.failed else ""
        clock = f"[{_clock_text(elapsed)}"
        if 0 < self.ended < self.count and elapsed > 0:
            clock += f"<{_clock_text(elapsed / self.ended * (self.count - self.ended))}"
        clock += "]"
        for parts in ([done, clock, bad], [done, bad], [f"{self.ended}/{self.count}", bad]):
            right = "| " + ", ".join(p for p in parts if p)
            if len(right) <= room:
                break
        return left, right.ljust(room)
