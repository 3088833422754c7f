"""The progress views, driven with real tracker state (no server needed)."""

import io

from comfy_cli import events as ev
from comfy_cli import tracker as tr
from comfy_cli import view
from comfy_cli.workflow import Workflow

WF = Workflow("w.json", "w", {"1": {"class_type": "TestSteps", "inputs": {}, "_meta": {"title": "Sampler"}},
                              "2": {"class_type": "SaveImage", "inputs": {}}})


def drive(v, prompt, steps=8):
    v.added(prompt)
    for e in [ev.Started(1.0, prompt.prompt_id, None), ev.Executing(1.0, prompt.prompt_id, "1", "1")] + [
            ev.Progress(1.0 + i / 100, prompt.prompt_id, "1", i, steps) for i in range(1, steps + 1)] + [
            ev.Executing(1.2, prompt.prompt_id, "2", "2"), ev.Succeeded(1.3, prompt.prompt_id, None)]:
        if prompt.handle(e):
            v.update(prompt)


def test_lines_mode_prints_start_node_quarters_and_end():
    err = io.StringIO()
    v = view.make("lines", err, io.StringIO())
    drive(v, tr.Prompt("p", WF))
    # Each 25% of a node's steps, with how far the whole prompt is (1 node of 2 done at 8/8).
    assert err.getvalue().splitlines() == [
        "w: started", "w: node 1 Sampler (0%)", "w: Sampler 2/8 (12%)", "w: Sampler 4/8 (25%)",
        "w: Sampler 6/8 (37%)", "w: Sampler 8/8 (50%)", "w: node 2 SaveImage (50%)",
        "w: done (in 0.30s, 2 executed, 0 cached)"]


def test_bars_end_full_with_their_final_state():
    err = io.StringIO()
    v = view.make("bars", err, io.StringIO(), name_width=1)
    drive(v, tr.Prompt("p", WF), steps=1000)
    v.close()
    text = err.getvalue()
    assert "2/2 nodes, done (in 0.30s, 2 executed, 0 cached)" in text
    # A thousand progress messages, but redraws are rate-limited (not one per message).
    assert text.count("\r") < 50


def test_many_prompts_show_one_overall_bar():
    err = io.StringIO()
    v = view.make("bars", err, io.StringIO(), name_width=1, count=13)
    assert isinstance(v, view.ManyBarsView)
    prompts = [tr.Prompt(f"p{i}", WF) for i in range(12)]
    for p in prompts:
        drive(v, p, steps=2)
    failed = tr.Prompt("bad", WF)
    v.added(failed)
    failed.give_up(tr.LOST, 2.0, "lost")
    v.update(failed)
    v.close()
    text = err.getvalue()
    assert "13/13 prompts" in text and "1 not ok" in text


def test_many_prompts_on_several_servers_show_what_runs_on_each():
    v = view.ManyBarsView(io.StringIO(), io.StringIO(), 3, 20, columns=120, clock=Clock())
    v.show_server = True
    a, b = tr.Prompt("a", WF), tr.Prompt("b", WF)
    server = {a: "http://gpu1:8188", b: "http://gpu2:8188"}
    for p in (a, b):
        v.added(p, server[p])
        feed(v, p, ev.Started(1.0, p.prompt_id, None), ev.Executing(1.0, p.prompt_id, "1", "1"),
             ev.Progress(1.0, p.prompt_id, "1", 3, 8))
    v._redraw(force=True)
    lines = {key: str(bar) for key, bar in v.current.items()}
    assert set(lines) == {server[a], server[b]}
    assert "w @gpu1:8188" in lines[server[a]] and "w @gpu2:8188" in lines[server[b]]
    assert "Sampler 3/8" in lines[server[a]]
    # The next prompt on gpu1 takes gpu1's bar; gpu2's is untouched.
    feed(v, a, ev.Succeeded(2.0, "a", None))
    c = tr.Prompt("c", WF)
    v.added(c, server[a])
    feed(v, c, ev.Started(2.0, "c", None))
    assert v.shown == {server[a]: "c", server[b]: "b"} and len(v.current) == 2
    v.close()


def test_bars_show_on_a_terminal_that_reports_no_size():
    # A fresh pseudo-terminal is 0x0 (as on some CI runners); tqdm alone would draw nothing there.
    import os
    import pty

    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=True) as err:
            v = view.make("auto", err, io.StringIO())
            assert isinstance(v, view.BarsView)
            drive(v, tr.Prompt("p", WF))
            v.close()
        text = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            text += chunk
    finally:
        os.close(master)
    assert b"2/2 nodes, done" in text


# ---- bars that move with the server's step messages ------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def bars(columns=120, name_width=1, interval=0.1):
    clock = Clock()
    v = view.BarsView(io.StringIO(), io.StringIO(), name_width=name_width, interval=interval, columns=columns,
                      clock=clock)
    return v, clock


def feed(v, prompt, *events):
    for e in events:
        if prompt.handle(e):
            v.update(prompt)


def shown(v, pid="p"):
    """The bar's line as it is drawn now (tqdm formats it on demand)."""
    v._draw(pid) if pid in v.prompts and not v.prompts[pid].ended else None
    return str(v.bars[pid]).rstrip()


def test_bar_fills_with_the_nodes_steps_with_rate_and_time_left():
    v, clock = bars()
    p = tr.Prompt("p", WF)
    v.added(p)
    assert "0%" in shown(v) and "0/2 nodes, queued" in shown(v)
    feed(v, p, ev.Started(1.0, "p", None), ev.Executing(1.0, "p", "1", "1"))
    assert "| 0/2 nodes, Sampler" in shown(v)
    for i in range(1, 5):  # two steps a second
        clock.now += 0.5
        feed(v, p, ev.Progress(1.0, "p", "1", i, 8))
    line = shown(v)
    assert " 25%|" in line  # 4/8 steps of the first of two nodes: a quarter of the prompt
    assert "| 0/2 nodes, Sampler 4/8, 2.00it/s, 00:02 left" in line
    for i in range(5, 9):
        clock.now += 2.0  # slower now: the rate follows (smoothed, as tqdm's)
        feed(v, p, ev.Progress(1.0, "p", "1", i, 8))
    line = shown(v)
    assert " 50%|" in line and "Sampler 8/8" in line and "s/it" in line  # 100% only at the end


def test_a_node_without_steps_shows_the_prompts_advance_in_nodes():
    v, clock = bars()
    p = tr.Prompt("p", WF)
    v.added(p)
    feed(v, p, ev.Started(1.0, "p", None), ev.Executing(1.0, "p", "1", "1"), ev.Progress(1.0, "p", "1", 3, 8),
         ev.Executing(1.1, "p", "2", "2"))
    line = shown(v)
    assert " 50%|" in line and "| 1/2 nodes, SaveImage" in line and "/8" not in line


def test_cached_nodes_advance_the_bar():
    v, clock = bars()
    p = tr.Prompt("p", WF)
    v.added(p)
    feed(v, p, ev.Started(1.0, "p", None), ev.Cached(1.0, "p", ("1",)))
    line = shown(v)
    assert " 50%|" in line and "| 1/2 nodes, running" in line
    feed(v, p, ev.Succeeded(1.1, "p", None))
    assert "100%|" in shown(v) and "2/2 nodes, done" in shown(v) and "1 cached" in shown(v)


def test_ended_bars_keep_their_final_state():
    v, clock = bars()
    ok, bad = tr.Prompt("p", WF), tr.Prompt("q", WF)
    v.added(ok)
    v.added(bad)
    feed(v, ok, ev.Started(1.0, "p", None), ev.Executing(1.0, "p", "1", "1"), ev.Progress(1.0, "p", "1", 3, 8),
         ev.Succeeded(2.0, "p", None))
    feed(v, bad, ev.Started(2.0, "q", None), ev.Executing(2.0, "q", "1", "1"), ev.Progress(2.0, "q", "1", 3, 8),
         ev.Executed(2.1, "q", "1", "1", None), ev.Executing(2.1, "q", "2", "2"),
         ev.Failed(2.5, "q", "2", "SaveImage", "disk full", "OSError", (), None))
    final = {"p": shown(v, "p"), "q": shown(v, "q")}
    assert "100%|" in final["p"] and "| 2/2 nodes, done (in 1.00s, 1 executed, 0 cached)" in final["p"]
    assert " 50%|" in final["q"] and "| 1/2 nodes, FAILED (in 0.50s)" in final["q"]  # kept where it was
    clock.now += 10
    v.tick()
    v.transport("connection: websocket lost", polling=True)
    assert {"p": shown(v, "p"), "q": shown(v, "q")} == final  # nothing moves them any more
    v.close()
    text = v.stream.getvalue()
    assert "2/2 nodes, done (in 1.00s" in text and "1/2 nodes, FAILED" in text


def test_polling_is_marked_on_open_bars():
    v, clock = bars()
    p = tr.Prompt("p", WF)
    v.added(p)
    feed(v, p, ev.Started(1.0, "p", None), ev.Executing(1.0, "p", "1", "1"), ev.Progress(1.0, "p", "1", 3, 8))
    v.transport("connection: websocket lost", polling=True)
    assert "| 0/2 nodes, [polling] Sampler 3/8" in shown(v)
    v.transport("connection: reconnected", polling=False)
    assert "[polling]" not in shown(v)


LONG = "a_really_long_workflow_name_for_the_nightly_render_batch_v2"


def test_long_names_are_shortened_in_the_middle_and_node_steps_state_stay_visible_at_60_columns():
    long_wf = Workflow(f"{LONG}.json", LONG, WF.graph)
    v, clock = bars(columns=60, name_width=len(LONG))
    p, q = tr.Prompt("p", long_wf), tr.Prompt("q", WF)
    v.added(p)
    v.added(q)
    feed(v, p, ev.Started(1.0, "p", None), ev.Executing(1.0, "p", "1", "1"))
    for i in range(1, 4):
        clock.now += 0.5
        feed(v, p, ev.Progress(1.0, "p", "1", i, 8))
    line, other = shown(v, "p"), shown(v, "q")
    assert len(line) <= 58 and len(other) <= 58  # two columns spare: an echoed ^C does not wrap
    name = line.split(" ", 1)[0]
    assert "…" in name and name.startswith("a_real") and name.endswith("_v2") and len(name) <= 15
    assert "0/2" in line and "Sampler 3/8" in line
    assert "0/2 nodes, queued" in other
    assert line.index("|") == other.index("|")  # bars line up
    feed(v, p, ev.Succeeded(2.0, "p", None))
    assert "2/2 nodes, done" in shown(v, "p")
    # and a title too long for the room is shortened, the steps kept
    long_title = Workflow("w.json", "w", {"1": {"class_type": "TestSteps", "inputs": {},
                                                "_meta": {"title": "An extremely verbose sampler title " * 2}}})
    r = tr.Prompt("r", long_title)
    v.added(r)
    feed(v, r, ev.Started(1.0, "r", None), ev.Executing(1.0, "r", "1", "1"), ev.Progress(1.0, "r", "1", 5, 20))
    line = shown(v, "r")
    assert len(line) <= 58 and "…" in line and line.endswith("5/20")


def test_shorten():
    assert view.shorten("abcdef", 6) == "abcdef"
    assert view.shorten("abcdefghij", 5) == "ab…ij"
    assert view.shorten("abcdefghij", 6) == "abc…ij"
    assert len(view.shorten("x" * 100, 15)) == 15


class Terminal:
    """Just enough of a terminal for tqdm: printable text, \\r, \\n (as CR LF), cursor up, erase to
    the end of the line, and the wrap of a line that is full."""

    def __init__(self, width):
        self.width = width
        self.rows = [[]]
        self.r = self.c = 0

    def isatty(self):
        return True

    def flush(self):
        pass

    def write(self, text):
        i = 0
        while i < len(text):
            if text.startswith("\x1b[A", i):
                self.r = max(0, self.r - 1)
                i += 3
                continue
            if text.startswith("\x1b[K", i):
                del self._row()[self.c:]
                i += 3
                continue
            ch = text[i]
            i += 1
            if ch == "\r":
                self.c = 0
            elif ch == "\n":
                self.r, self.c = self.r + 1, 0
            else:
                if self.c >= self.width:
                    self.r, self.c = self.r + 1, 0
                row = self._row()
                row.extend(" " * (self.c + 1 - len(row)))
                row[self.c] = ch
                self.c += 1
        return len(text)

    def _row(self):
        while len(self.rows) <= self.r:
            self.rows.append([])
        return self.rows[self.r]

    def lines(self):
        return ["".join(row).rstrip() for row in self.rows]


def test_ctrl_c_leaves_no_stale_bar_above_the_messages():
    # As in a terminal: bars drawn, the terminal echoes "^C" at the cursor (the end of the first
    # bar), then the runner ends the prompts, writes its messages and closes the view.
    for columns in (120, 60):
        term = Terminal(columns)
        v = view.BarsView(term, io.StringIO(), name_width=len(LONG), columns=columns, clock=Clock())
        assert v._width["ncols"] == columns
        prompts = [tr.Prompt("p", Workflow(f"{LONG}.json", LONG, WF.graph)), tr.Prompt("q", WF)]
        for p in prompts:
            v.added(p)
        feed(v, prompts[0], ev.Started(1.0, "p", None), ev.Executing(1.0, "p", "1", "1"),
             ev.Progress(1.0, "p", "1", 3, 8))
        v._draw("p")
        term.write("^C")  # the tty's echo
        for p in prompts:
            p.give_up(tr.CANCELLED, 3.0, "cancelled")
            v.update(p)
            v.note(f"{p.workflow.name[:20]}: cancelled")
        v.close()
        lines = [line for line in term.lines() if line]
        assert lines[:2] == [f"{LONG[:20]}: cancelled", "w: cancelled"], lines
        assert len(lines) == 4 and all("cancelled" in line and "%|" in line for line in lines[2:]), lines
        assert not any("^C" in line for line in lines), lines


# ---- whatever the server sends as steps, the views draw without raising ------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

NUMBERS = (st.integers(-10 ** 6, 10 ** 6) | st.integers(10 ** 300, 10 ** 400) | st.integers(-10 ** 400, -10 ** 300)
           | st.floats(allow_nan=False, allow_infinity=False))


@settings(max_examples=150, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(st.sampled_from(["1", "2", "9"]), NUMBERS, NUMBERS), max_size=12),
       columns=st.sampled_from([20, 60, 120]), mode=st.sampled_from(["bars", "many", "lines"]))
def test_views_draw_any_steps(steps, columns, mode):
    clock = Clock()
    if mode == "bars":
        v = view.BarsView(io.StringIO(), io.StringIO(), name_width=3, columns=columns, clock=clock)
    elif mode == "many":
        v = view.ManyBarsView(io.StringIO(), io.StringIO(), 3, 12, columns=columns, clock=clock)
    else:
        v = view.LinesView(io.StringIO(), io.StringIO())
    p = tr.Prompt("p", WF)
    v.added(p)
    feed(v, p, ev.Started(1.0, "p", None))
    for node, value, top in steps:
        clock.now += 0.3
        feed(v, p, ev.Progress(1.0, "p", node, value, top))
        v.tick()
        if mode == "bars":
            assert len(shown(v)) <= columns
    feed(v, p, ev.Succeeded(2.0, "p", None))
    v.close()


def test_a_followed_prompt_that_ended_before_we_looked_shows_the_servers_run_time():
    # `wait`: the prompt was not submitted here (submitted_at None) and its end came from /history.
    for start_ms, end_ms, shown in [(1000, 3500, "in 2.50s"), (0, 10 ** 400, "in 0.00s")]:
        err = io.StringIO()
        v = view.make("lines", err, io.StringIO())
        p = tr.Prompt("p", WF)
        v.added(p)
        for e in [ev.Started(5.0, "p", start_ms), ev.Succeeded(5.0, "p", end_ms)]:
            if p.handle(e):
                v.update(p)
        assert err.getvalue().splitlines()[-1] == f"w: done ({shown}, 2 executed, 0 cached)"
