"""How far a prompt is (`Prompt.progress.fill`): the one figure bars, lines and --events show.

It must only move forward, mean the whole prompt (nodes done + the running node's steps, over its
nodes; cached ones count as done), reach 100% only at the end and stay where it was on any other
end. Checked on ComfyUI's real default workflow (tests/data/real_sd15: recordings of a real SD1.5
run), replayed straight into the tracker and through the simulator to the real `comfy-cli`.
"""

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_cli import events as ev
from comfy_cli import progress
from comfy_cli import tracker as tr
from comfy_cli import view
from comfy_cli.sim import SimServer
from comfy_cli.sim.replay import Script
from comfy_cli.stream import EventStream
from comfy_cli.workflow import Workflow

pytestmark = pytest.mark.timeout(60)

REAL = Path(__file__).resolve().parent / "data" / "real_sd15"
TRACES = ["default_cold", "default_warm", "default_all_cached", "default_feature_flags", "default_20_steps"]
GRAPH = json.loads((REAL / "default_api.json").read_text())


def lines(name):
    with open(REAL / f"{name}.ndjson") as fh:
        return [json.loads(text) for text in fh if text.strip()]


def replay(name, *views):
    """The trace's messages through a real Prompt, each change shown by `views` (anything with
    `update(prompt)`): (prompt, [(message type, node running, step, fill)])."""
    recorded = lines(name)
    pid = next(x["response"]["prompt_id"] for x in recorded if x.get("event") == "post_prompt")
    prompt = tr.Prompt(pid, Workflow("default.json", "default", GRAPH), submitted_at=0.0)
    for v in views:
        v.added(prompt)
    seen = []
    for x in recorded:
        if x.get("kind") != "text":
            continue
        event = ev.parse(json.dumps(x["msg"]).encode(), x["t"])
        if event is not None:
            if prompt.handle(event):
                for v in views:
                    v.update(prompt)
            seen.append((x["msg"]["type"], prompt.progress.node, prompt.progress.step, prompt.progress.fill))
    return prompt, seen


@pytest.mark.parametrize("name", TRACES)
def test_fill_only_moves_forward_and_is_full_only_at_the_end_on_the_real_traces(name):
    prompt, seen = replay(name)
    fills = [fill for _, _, _, fill in seen]
    assert all(b >= a for a, b in zip(fills, fills[1:])), fills
    assert prompt.status == tr.SUCCESS and prompt.progress.fill == 1.0
    end = next(i for i, (kind, *_rest) in enumerate(seen) if kind == "execution_success")
    assert all(fill < 1.0 for fill in fills[:end])  # 100% only at the end


def test_cold_run_means_the_whole_prompt():
    # The run: 57% before the first step, 17% when steps start, 100% at the last step,
    # 71% for VAEDecode. Now: the four nodes before KSampler, then its steps, then the last two.
    _, seen = replay("default_cold")
    at = {}
    for kind, node, step, fill in seen:
        at.setdefault((node, step), fill)
    assert at[("4", None)] == 0.0  # the checkpoint loads: nothing done yet
    assert at[("3", None)] == pytest.approx(4 / 7)
    assert at[("3", (1, 3))] == pytest.approx((4 + 1 / 3) / 7)
    assert at[("3", (3, 3))] == pytest.approx(5 / 7)
    assert at[("8", None)] == pytest.approx(5 / 7)  # VAEDecode: where the sampler left it
    assert at[("9", None)] == pytest.approx(6 / 7)


def test_cached_nodes_count_as_done():
    _, seen = replay("default_warm")
    first = next(fill for kind, node, step, fill in seen if node == "3")
    assert first == pytest.approx(4 / 7)  # loader, encoders and latent came from the cache


def test_a_node_that_starts_its_steps_again_does_not_pull_the_fill_back():
    wf = Workflow("w.json", "w", {"1": {"class_type": "KSampler", "inputs": {}}, "2": {"class_type": "Save",
                                                                                      "inputs": {}}})
    p = tr.Prompt("p", wf)
    fills = []
    for e in [ev.Started(0, "p", None), ev.Executing(0, "p", "1", "1")] + \
            [ev.Progress(0, "p", "1", i, 4) for i in range(1, 5)] + [ev.Progress(0, "p", "1", i, 4) for i in (1, 2)]:
        p.handle(e)
        fills.append(p.progress.fill)
    assert fills[-1] == fills[-3] == pytest.approx(0.5)
    assert fills == sorted(fills)


def test_an_end_other_than_success_keeps_the_fill():
    wf = Workflow("w.json", "w", {"1": {"class_type": "KSampler", "inputs": {}}, "2": {"class_type": "Save",
                                                                                      "inputs": {}}})
    for end in (lambda p: p.handle(ev.Interrupted(1, "p", "1", "KSampler", None)),
                lambda p: p.give_up(tr.CANCELLED, 1, "cancelled by you"),
                lambda p: p.give_up(tr.DETACHED, 1, "left running"),
                lambda p: p.handle(ev.Failed(1, "p", "1", "KSampler", "boom", "RuntimeError", (), None))):
        p = tr.Prompt("p", wf)
        for e in (ev.Started(0, "p", None), ev.Executing(0, "p", "1", "1"), ev.Progress(0, "p", "1", 3, 4)):
            p.handle(e)
        end(p)
        assert p.ended and p.progress.fill == pytest.approx(3 / 8)


def test_share_stays_below_full_until_the_end_and_takes_junk_steps():
    assert progress.share(7, 7) == progress.ALMOST
    assert progress.share(0, 0) == 0.0
    assert progress.step_share((5, 0)) is None and progress.step_share(("x", 3)) is None
    assert progress.step_share((float("nan"), 3)) is None and progress.step_share((9, 3)) == 1.0


def test_lines_and_bars_show_the_same_figure():
    # One view of each kind, driven by the same real trace; the bar is drawn at the first step.
    err_lines, err_bars = io.StringIO(), io.StringIO()
    lv = view.LinesView(err_lines, io.StringIO())
    bv = view.BarsView(err_bars, io.StringIO(), name_width=1, columns=120)
    drawn = []

    class AtFirstStep:
        def added(self, prompt):
            pass

        def update(self, prompt):
            if prompt.progress.node == "3" and prompt.progress.step == (1, 3):
                bv._draw(prompt.prompt_id)
                drawn.append(str(bv.bars[prompt.prompt_id]))

    replay("default_cold", lv, bv, AtFirstStep())
    bv.close()
    assert drawn and " 61%|" in drawn[0]  # (4 + 1/3) / 7
    said = err_lines.getvalue().splitlines()
    assert "default: KSampler 1/3 (61%)" in said and "default: node 8 VAE Decode (71%)" in said
    percents = [int(line.rsplit("(", 1)[1].rstrip("%)")) for line in said if line.endswith("%)")]
    assert percents == sorted(percents)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_long_model_load_shows_the_node_and_how_long_it_has_been_busy():
    clock = Clock()
    v = view.BarsView(io.StringIO(), io.StringIO(), name_width=1, columns=120, clock=clock)
    p = tr.Prompt("p", Workflow("default.json", "default", GRAPH))
    v.added(p)
    for e in (ev.Started(100.0, "p", None), ev.Cached(100.0, "p", ()), ev.Executing(100.0, "p", "4", "4")):
        if p.handle(e):
            v.update(p)
    clock.now = 109.2  # no message for 9 s: the checkpoint loads
    v.tick()
    assert "| 0/7 nodes, Load Checkpoint, busy 00:09" in str(v.bars["p"])
    lines_err = io.StringIO()
    lv = view.LinesView(lines_err, io.StringIO(), quiet=30.0, clock=clock)
    lv.added(p)
    lv.update(p)
    clock.now = 140.2
    lv.tick()
    assert lines_err.getvalue().splitlines()[-1] == "default: node 4 Load Checkpoint still running (00:40, 0%)"


def test_events_do_not_repeat_a_nodes_last_progress():
    # The real server sends `progress_state` after the last step; it changes the prompt (the node is
    # finished) but not the step: the last step was said once.
    out = io.StringIO()
    replay("default_warm", EventStream(out, 0.0))
    said = [json.loads(line) for line in out.getvalue().splitlines()]
    progress = [(d["node"], d["value"], d["max"]) for d in said if d["event"] == "progress"]
    assert ("3", 3, 3) in progress and len(progress) == len(set(progress)), progress


# ---- the real recordings through the simulator, to the real comfy-cli ---------------------------------

def cli(*args, timeout=40):
    env = dict(os.environ)
    env.pop("COMFY_URL", None)
    return subprocess.run([sys.executable, "-m", "comfy_cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("name", ["default_cold", "default_warm", "default_20_steps"])
def test_replayed_real_run_events_and_lines_move_only_forward(name, tmp_path):
    with SimServer(script=Script.load(REAL / f"{name}.ndjson", speed=0.05)) as sim:
        proc = cli("run", str(REAL / "default_api.json"), "--url", sim.url, "--events")
        assert proc.returncode == 0, proc.stderr
        said = [json.loads(line) for line in proc.stdout.splitlines()]
        fills = [d["fill"] for d in said if "fill" in d]
        assert fills == sorted(fills) and fills[-1] == 1.0 and max(fills[:-1]) < 1.0
        steps = [(d["node"], d["value"]) for d in said if d["event"] == "progress"]
        assert len(steps) == len(set(steps))  # no step said twice
        proc = cli("run", str(REAL / "default_api.json"), "--url", sim.url, "--progress", "lines")
        assert proc.returncode == 0, proc.stderr
        percents = [int(line.rsplit("(", 1)[1].rstrip("%)")) for line in proc.stderr.splitlines()
                    if line.endswith("%)")]
        assert percents and percents == sorted(percents) and max(percents) < 100


def test_replayed_run_cancelled_keeps_its_fill(tmp_path):
    with SimServer(script=Script.load(REAL / "default_20_steps.ndjson", speed=0.5)) as sim:
        env = dict(os.environ)
        env.pop("COMFY_URL", None)
        proc = subprocess.Popen([sys.executable, "-m", "comfy_cli", "run", str(REAL / "default_api.json"), "--url",
                                 sim.url, "--events"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            said = []
            for line in proc.stdout:  # until a few sampler steps were shown
                said.append(json.loads(line))
                if said[-1]["event"] == "progress" and said[-1]["value"] >= 3:
                    break
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
        assert proc.returncode == 130, err
        said += [json.loads(line) for line in out.splitlines()]
        last_progress = [d["fill"] for d in said if d["event"] == "progress"][-1]
        finished = next(d for d in said if d["event"] == "finished")
        assert finished["status"] == "cancelled" and finished["fill"] >= last_progress > 0.5
