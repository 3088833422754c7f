"""Replay every real trace through the tracker and check the end state, outputs and progress."""

import copy
import json

import pytest

from comfy_cli import events as ev
from comfy_cli import report
from comfy_cli import tracker as tr
from comfy_cli.poller import history_events
from comfy_cli.workflow import Workflow

from traces import load_trace

pytestmark = pytest.mark.timeout(10)


class Replay:
    """A Board fed with one trace's frames, recording every visible step on the way."""

    def __init__(self, name, sockets=("main",)):
        self.lines = load_trace(name)
        self.board = tr.Board()
        self.steps = {}  # prompt_id -> [(node, value, max)]
        self.histories = {}
        requests = [x["http"] for x in self.lines if "http" in x and x["http"]["path"] == "/prompt"]
        for req in requests:
            graph = req["request"]["prompt"]
            wf = Workflow(path=f"{name}.json", name=name, graph=graph)
            if req["status"] == 200:
                self.board.add(tr.Prompt(req["response"]["prompt_id"], wf, submitted_at=0.0))
            else:
                self.rejected = tr.Prompt("rejected", wf, submitted_at=0.0)
                self.rejected.reject(0.0, {"message": req["response"]["error"]["message"],
                                           "details": req["response"]["error"]["details"],
                                           "node_errors": req["response"]["node_errors"]})
        for line in self.lines:
            if "history" in line:
                self.histories[line["history"]["prompt_id"]] = line["history"]["body"]
            if line.get("note") == "ws_closed_by_client_for_reconnect":
                for p in list(self.board.open_prompts):
                    p.gap()
            if line.get("sock") not in sockets or "ws" not in line:
                continue
            frame = line["ws"]
            if frame.get("binary"):
                continue  # the listener drops binary frames before they become events
            event = ev.parse(json.dumps(frame).encode(), line["t_rel"])
            if event is None:
                continue
            prompt = self.board.feed(event)
            if prompt is not None and prompt.progress.step is not None:
                seen = self.steps.setdefault(prompt.prompt_id, [])
                step = (prompt.progress.node,) + tuple(prompt.progress.step)
                if not seen or seen[-1] != step:
                    seen.append(step)

    @property
    def prompts(self):
        return list(self.board.prompts.values())

    @property
    def only(self):
        (p,) = self.prompts
        return p


def files(prompt, include_temp=False):
    return [item["filename"] for _node, item in report.output_files(prompt, include_temp)]


def test_steps_ok_success_with_every_step():
    r = Replay("steps_ok")
    p = r.only
    assert p.status == tr.SUCCESS
    assert files(p) == ["steps_ok_00001_.png"]
    assert p.progress.ran == {"1", "2"} and p.progress.cached == set()
    assert p.progress.done_count == p.progress.total == 2
    assert [s[1:] for s in r.steps[p.prompt_id]] == [(i, 20) for i in range(1, 21)]
    assert not p.needs_history
    assert p.started_at is not None and p.ended_at > p.started_at
    # Ended on execution_success, not on the `executing null` that came 330 ms later.
    end = next(x["t_rel"] for x in r.lines if x.get("ws", {}).get("type") == "execution_success")
    assert p.ended_at == end


def test_cached_rerun_counts_cached_nodes_as_done():
    p = Replay("steps_ok_cached").only
    assert p.status == tr.SUCCESS
    assert p.progress.cached == {"1", "2"} and p.progress.ran == set()
    assert p.progress.done_count == 2
    assert files(p) == ["steps_ok_00001_.png"]


def test_two_samplers_steps_per_node():
    r = Replay("two_samplers")
    p = r.only
    assert p.status == tr.SUCCESS
    steps = r.steps[p.prompt_id]
    assert max(v for n, v, m in steps if n == "1") == 10
    assert max(v for n, v, m in steps if n == "2") == 15
    assert {m for n, v, m in steps if n == "2"} == {15}
    assert files(p) == ["two_samplers_00001_.png"]


def test_fail_reports_node_and_message():
    r = Replay("fail")
    p = r.only
    assert p.status == tr.FAILED
    assert p.error["node_id"] == "1" and p.error["node_type"] == "TestFail"
    assert p.error["message"] == "TestFail: deliberate failure (at step 3 of 10)"
    assert p.error["exception_type"] == "RuntimeError" and p.error["traceback"]
    assert r.steps[p.prompt_id][-1] == ("1", 3, 10)
    line = report.failure_lines(p)[0]
    assert "node 1 (TestFail)" in line and "RuntimeError" in line
    assert len(report.failure_lines(p, verbose=True)) > 3
    assert report.exit_code(p) == 1


@pytest.mark.parametrize("name, expect", [
    ("invalid", ["Prompt outputs failed validation", "node 1 (TestSteps) input 'steps'", "Required input is missing"]),
    ("invalid_unknown_node", ["Cannot execute because node NoSuchNodeType does not exist.", "Node ID '#1'"]),
    ("invalid_no_output", ["Prompt has no outputs"]),
])
def test_rejections_print_every_node_error(name, expect):
    r = Replay(name)
    assert r.prompts == []  # nothing was accepted, so nothing is awaited
    text = "\n".join(report.rejection_lines(r.rejected))
    for bit in expect:
        assert bit in text
    assert report.exit_code(r.rejected) == 2


@pytest.mark.parametrize("name", ["interrupt", "interrupt_targeted"])
def test_interrupt(name):
    p = Replay(name).only
    assert p.status == tr.INTERRUPTED
    assert p.error["node_id"] == "1"
    assert report.exit_code(p) == 1


def test_interrupt_without_client_id_is_still_seen():
    # The prompt had no client_id: only broadcasts (progress, execution_interrupted) arrive.
    p = Replay("interrupt_no_client_id_observer").only
    assert p.status == tr.INTERRUPTED
    assert p.needs_history  # it never saw execution_start


def test_no_client_id_prompt_needs_history_to_end():
    r = Replay("no_client_id_observer")
    p = r.only
    assert p.status == tr.RUNNING and p.needs_history
    for event in history_events(p.prompt_id, r.histories[p.prompt_id][p.prompt_id], 9.0):
        r.board.feed(event)
    assert p.status == tr.SUCCESS
    assert len(files(p)) == 1


def test_reconnect_resend_without_prompt_id_is_attributed():
    r = Replay("reconnect", sockets=("main", "main#2"))
    p = r.only
    assert p.status == tr.SUCCESS
    assert p.needs_history  # the gap: frames were lost, so outputs are checked over HTTP
    assert files(p) == ["long_00001_.png"]
    # Progress before the gap reached 10 of 40; nothing came during the gap.
    values = [v for _n, v, _m in r.steps[p.prompt_id]]
    assert values[:10] == list(range(1, 11))


def test_reconnect_resend_routes_to_running_prompt():
    board = tr.Board()
    wf = Workflow("w.json", "w", {"1": {"class_type": "A", "inputs": {}}, "2": {"class_type": "B", "inputs": {}}})
    p = board.add(tr.Prompt("p1", wf))
    board.feed(ev.Started(1.0, "p1", None))
    board.feed(ev.Executing(1.1, "p1", "1", "1"))
    assert board.feed(ev.Executing(2.0, None, "2", None)) is p
    assert p.progress.node == "2" and "1" in p.progress.done
    other = tr.Board()
    other.add(tr.Prompt("p2", wf))
    assert other.feed(ev.Executing(2.0, None, "2", None)) is None  # nothing of ours is running


def test_duplicate_socket_goes_silent():
    p = Replay("dup_client_id").only
    assert p.status == tr.RUNNING  # the first socket never hears the end: polling must
    p2 = Replay("dup_client_id", sockets=("main", "dup")).only
    assert p2.status == tr.SUCCESS and files(p2) == ["long_00002_.png"]


def test_observer_socket_sees_nothing_of_ours():
    r = Replay("observer", sockets=("observer",))
    assert r.only.status == tr.SUBMITTED
    assert Replay("observer").only.status == tr.SUCCESS


@pytest.mark.parametrize("name", ["preview_binary", "preview_binary_feature_flags"])
def test_previews(name):
    p = Replay(name).only
    assert p.status == tr.SUCCESS
    assert files(p) == []  # PreviewImage writes temp files
    assert len(files(p, include_temp=True)) == 1
    assert p.outputs["2"]["text"][0] == "hello from TestLog"


def test_queued_two_each_prompt_ends_on_its_own_events():
    a, b = Replay("queued_two").prompts
    assert a.status == tr.SUCCESS and files(a) == ["steps_ok_00004_.png"]
    assert b.status == tr.FAILED and b.error["message"].startswith("TestFail")
    assert a.ended_at < b.started_at


@pytest.mark.parametrize("name", ["steps_ok", "steps_ok_cached", "two_samplers", "fail", "interrupt",
                                  "interrupt_targeted", "reconnect", "dup_client_id", "observer",
                                  "preview_binary", "queued_two", "no_client_id_observer"])
def test_history_replay_agrees_with_the_socket(name):
    r = Replay(name, sockets=("main", "main#2", "dup"))
    for pid, body in r.histories.items():
        fresh = tr.Prompt(pid, r.board.prompts[pid].workflow)
        for event in history_events(pid, body[pid], 5.0):
            fresh.handle(event)
        live = r.board.prompts[pid]
        if live.ended:
            assert fresh.status == live.status
            assert fresh.outputs == live.outputs or name == "preview_binary"
        assert fresh.ended


def state(prompt):
    """Everything a Prompt knows (its Progress's too), as a comparable copy."""
    known = {k: copy.deepcopy(v) for k, v in vars(prompt).items() if k not in ("on_end", "progress")}
    known["progress"] = {k: copy.deepcopy(getattr(prompt.progress, k)) for k in type(prompt.progress).__slots__
                         if k != "workflow"}
    return known


JUNK = [b"", b"nope", b"[]", b'{"type": 5}', b'{"type":"progress","data":{"value":"x","max":2}}',
        b'{"type":"progress","data":{"value":"x","max":2,"prompt_id":"r","node":"1"}}',
        b'{"type":"executed","data":[]}', b'{"type":"progress_state","data":{"nodes":7,"prompt_id":"p"}}',
        b'{"type":"progress_state","data":{"nodes":[1],"prompt_id":"r"}}',
        b'{"type":"execution_error","data":{"prompt_id":"p","traceback":"x","exception_message":3}}']


def test_duplicates_and_junk_change_nothing():
    wf = Workflow("w.json", "w", {"1": {"class_type": "A", "inputs": {}}, "2": {"class_type": "B", "inputs": {}}})
    board = tr.Board()
    p = board.add(tr.Prompt("p", wf))
    for event, visible in [(ev.Started(1, "p", 5), True), (ev.Started(1, "p", 5), False),
                           (ev.Progress(2, "p", "1", 1, 4), True), (ev.Progress(2, "p", "1", 1, 4), False),
                           (ev.Succeeded(3, "p", 9), True), (ev.Failed(4, "p", "1", "A", "late", None, (), None), False),
                           (ev.Succeeded(5, "p", 10), False)]:
        before = state(p)
        assert p.handle(event) is visible, event
        if not visible:
            assert state(p) == before, event  # a duplicate or a late event changes nothing at all
    assert p.status == tr.SUCCESS and p.ended_at == 3 and p.server_end_ms == 9
    # A second prompt still running, so junk has something it could damage.
    r = board.add(tr.Prompt("r", wf))
    for event in [ev.Started(6, "r", 11), ev.Executing(6, "r", "1", "1"), ev.Progress(7, "r", "1", 2, 4)]:
        board.feed(event)
    before = {"p": state(p), "r": state(r)}
    running = board.running_id
    for junk in JUNK:
        event = ev.parse(junk, 8.0)
        assert event is None or isinstance(event, tuple), junk
        if event is not None:
            assert board.feed(event) is None, junk
        assert {"p": state(p), "r": state(r)} == before, junk
        assert board.running_id == running == "r"
    assert r.status == tr.RUNNING and r.progress.step == (2, 4) and p.status == tr.SUCCESS


def test_executing_with_a_junk_node_is_not_the_done_marker():
    wf = Workflow("w.json", "w", {"1": {"class_type": "A", "inputs": {}}})
    r = tr.Prompt("r", wf)
    r.handle(ev.Started(1, "r", None))
    r.handle(ev.Executing(1, "r", "1", "1"))
    before = state(r)
    event = ev.parse(b'{"type":"executing","data":{"node":["x"],"prompt_id":"r"}}', 2.0)
    assert event is None or not r.handle(event)
    assert state(r) == before


def test_blocked_execution_is_a_warning_not_the_end():
    wf = Workflow("w.json", "w", {"1": {"class_type": "A", "inputs": {}}})
    p = tr.Prompt("p", wf)
    p.handle(ev.Started(1, "p", None))
    p.handle(ev.Failed(2, "p", "1", "A", "Execution Blocked: no", "ExecutionBlocked", (), None))
    assert p.status == tr.RUNNING and p.warnings
    p.handle(ev.Succeeded(3, "p", None))
    assert p.status == tr.SUCCESS


def test_frame_parsing_edges():
    ok = {"type": "execution_start", "data": {"prompt_id": "p", "timestamp": 5}}
    text = json.dumps(ok)
    for frame in (text, text.encode(), f"  {text}\n", f"{text} \r\n".encode()):
        assert ev.parse(frame, 1.0) == ev.Started(1.0, "p", 5), frame
    for frame in (text + " {}", text + "x", b"\xff" + text.encode(), "[" * 100000 + "]" * 100000, text[:-1]):
        assert ev.parse(frame, 1.0) is None, frame[:40]
    state = {"type": "progress_state", "data": {"prompt_id": "p", "nodes": {
        "1": {"state": "finished", "display_node_id": "1"}, "5:3": {"state": "finished", "display_node_id": "5"},
        "2": {"state": "running"}, "7": "junk", "8": {"state": "finished", "display_node_id": 8}}}}
    assert ev.parse(json.dumps(state), 2.0) == ev.ProgressState(2.0, "p", ("1", "5", "8"))


def test_outputs_after_the_end_are_taken_until_the_prompt_is_settled():
    wf = Workflow("w.json", "w", {"1": {"class_type": "SaveImage", "inputs": {}}})
    p = tr.Prompt("p", wf)
    image = {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}
    assert p.handle(ev.Started(1.0, "p", 1)) and p.handle(ev.Succeeded(2.0, "p", 2))
    assert p.handle(ev.Executed(2.1, "p", "1", None, image))  # missed in a gap, from /history
    assert not p.handle(ev.Failed(2.2, "p", "1", "X", "late", None, (), None))  # the first end wins
    p.settle()
    later = {"images": [{"filename": "b.png", "subfolder": "", "type": "output"}]}
    assert not p.handle(ev.Executed(3.0, "p", "1", None, later))  # reported: it stays as reported
    assert p.outputs == {"1": image}


# ---- per-node timings: the client's view, from the events' receive times ----------------
def _frame_time(r, kind, **match):
    return next(x["t_rel"] for x in r.lines if x.get("ws", {}).get("type") == kind
                and all(x["ws"]["data"].get(k) == v for k, v in match.items()))


def test_node_timings_of_a_real_trace_follow_the_executing_messages():
    r = Replay("two_samplers")
    p = r.only
    timings = report.node_timings(p)
    assert [t["node"] for t in timings] == ["1", "2", "3"]
    start1 = _frame_time(r, "executing", node="1")
    # Node 1 is done at the first of: a progress_state saying so, node 2's executing.
    done1 = min(_frame_time(r, "executing", node="2"), next(
        x["t_rel"] for x in r.lines if x.get("ws", {}).get("type") == "progress_state"
        and x["ws"]["data"]["nodes"].get("1", {}).get("state") == "finished"))
    assert timings[0]["seconds"] == round(done1 - start1, 4) > 0
    assert timings[0]["class_type"] == p.workflow.graph["1"]["class_type"]
    assert timings[0]["title"] == p.workflow.title("1")
    assert not any(t["cached"] for t in timings)
    # The output node ends with its `executed`, before the prompt's end.
    assert timings[2]["seconds"] == round(_frame_time(r, "executed", node="3") - _frame_time(r, "executing", node="3"), 4)


def test_node_timings_of_a_cached_rerun_are_cached_and_take_no_time():
    p = Replay("steps_ok_cached").only
    assert report.node_timings(p) == [
        {"node": n, "class_type": p.workflow.graph[n]["class_type"], "title": p.workflow.title(n), "seconds": 0.0,
         "cached": True} for n in ("1", "2")]


def test_the_failing_node_runs_until_the_error():
    r = Replay("fail")
    p = r.only
    (t,) = report.node_timings(p)
    assert t["node"] == "1" and t["seconds"] == round(_frame_time(r, "execution_error") -
                                                       _frame_time(r, "executing", node="1"), 4)


def _timed_prompt():
    graph = {"1": {"class_type": "Load", "inputs": {}}, "2": {"class_type": "Sample", "inputs": {}, "_meta": {"title": "S"}},
             "3": {"class_type": "Save", "inputs": {}}, "4": {"class_type": "Other", "inputs": {}}}
    return tr.Prompt("p", Workflow("w.json", "w", graph))


def test_node_timings_from_hand_made_events():
    p = _timed_prompt()
    for e in [ev.Started(10.0, "p", 1000), ev.Cached(10.0, "p", ("1",)), ev.Executing(10.5, "p", "2", None),
              ev.Progress(11.0, "p", "2", 1, 2), ev.Executing(12.25, "p", "3", None),
              ev.Executed(12.75, "p", "3", None, {"images": []}), ev.Succeeded(13.0, "p", 3000)]:
        p.handle(e)
    assert report.node_timings(p) == [
        {"node": "1", "class_type": "Load", "title": "Load", "seconds": 0.0, "cached": True},
        {"node": "2", "class_type": "Sample", "title": "S", "seconds": 1.75, "cached": False},
        {"node": "3", "class_type": "Save", "title": "Save", "seconds": 0.5, "cached": False},
    ]


def test_a_node_first_seen_by_its_progress_and_one_closed_by_progress_state():
    p = _timed_prompt()
    for e in [ev.Started(0.0, "p", None), ev.Progress(1.0, "p", "2", 1, 5), ev.ProgressState(1.5, "p", ("2",)),
              ev.Executing(4.0, "p", "3", None), ev.Succeeded(5.0, "p", None)]:
        p.handle(e)
    assert [(t["node"], t["seconds"]) for t in report.node_timings(p)] == [("2", 0.5), ("3", 1.0)]


def test_a_prompt_given_up_on_leaves_its_running_node_open_and_history_only_nodes_have_no_time():
    p = _timed_prompt()
    p.handle(ev.Executing(1.0, "p", "2", None))
    p.give_up(tr.LOST, 9.0, "lost")
    assert [(t["node"], t["seconds"]) for t in report.node_timings(p)] == [("2", None)]
    q = _timed_prompt()  # only /history: the end, with no node seen running
    q.handle(ev.Succeeded(3.0, "p", None))
    assert [(t["node"], t["seconds"], t["cached"]) for t in report.node_timings(q)] == \
        [(n, None, False) for n in ("1", "2", "3", "4")]


def test_node_timings_are_in_the_json_summary_and_the_finished_event():
    import io

    from comfy_cli.stream import EventStream

    p = _timed_prompt()
    for e in [ev.Started(0.0, "p", None), ev.Executing(1.0, "p", "2", None), ev.Succeeded(3.0, "p", None)]:
        p.handle(e)
    doc = report.prompt_summary(p, lambda prompt, item: "u")
    assert doc["node_timings"][0] == {"node": "2", "class_type": "Sample", "title": "S", "seconds": 2.0,
                                      "cached": False}
    out = io.StringIO()
    EventStream(out, 0.0).finished(p)
    assert json.loads(out.getvalue())["node_timings"] == doc["node_timings"]


def test_a_prompt_that_ended_before_is_kept_as_recorded():
    """A journal's or a shard manifest's end line: the server's messages now change nothing."""
    wf = Workflow(path="a.json", name="a", graph={"9": {"class_type": "SaveImage", "inputs": {}}})
    outputs = {"9": {"images": [{"filename": "a_00001_.png", "subfolder": "", "type": "output"}]}}
    p = tr.ended_before("p1", wf, tr.FAILED, {"message": "boom"}, outputs=outputs, number=7, times=(0.0, 1.5, 4.0))
    assert (p.status, p.error, p.outputs, p.number) == (tr.FAILED, {"message": "boom"}, outputs, 7)
    assert (p.submitted_at, p.started_at, p.ended_at, p.settled) == (0.0, 1.5, 4.0, True)
    assert not p.handle(ev.Succeeded(5.0, "p1", None))
    assert not p.handle(ev.Executed(5.0, "p1", "9", None, {"images": []}))
    assert p.status == tr.FAILED and p.outputs == outputs
    q = tr.ended_before("p2", wf, tr.SUCCESS, outputs="not a dict")
    assert q.outputs == {} and q.number is None
