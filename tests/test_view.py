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
    assert err.getvalue().splitlines() == [
        "w: started", "w: node 1 Sampler", "w: Sampler 2/8 (25%)", "w: Sampler 4/8 (50%)",
        "w: Sampler 6/8 (75%)", "w: Sampler 8/8 (100%)", "w: node 2 SaveImage",
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
