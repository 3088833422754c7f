"""Tests for the ComfyUI simulator (comfy_cli.sim) against the real-server traces.

The websocket message *types* the simulator sends for each shared scenario are
compared with what a real ComfyUI 0.3.64 sent (tests/data/traces).  Sleep
times are shortened; nothing waits blindly: every wait is on a condition with a
bound.
"""

import copy
import json
import os
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
import websocket

from comfy_cli.sim import Faults, SimServer
from traces import load_trace

pytestmark = pytest.mark.timeout(30)

PROGRESS = ("progress", "progress_state")


def trace(name):
    return load_trace(name)


def trace_types(name, sock="main"):
    out = []
    for rec in trace(name):
        if rec.get("sock") == sock and "ws" in rec:
            w = rec["ws"]
            out.append(f"bin{w['event_type']}" if w.get("binary") else w["type"])
    return out


def trace_requests(name):
    return [rec["http"] for rec in trace(name) if rec.get("http", {}).get("path") == "/prompt"]


def trace_prompt(name, index=0, seconds=0.001):
    """The graph the capture POSTed, with shorter sleeps."""
    prompt = copy.deepcopy(trace_requests(name)[index]["request"]["prompt"])
    for node in prompt.values():
        if seconds is not None and "seconds_per_step" in node["inputs"]:
            node["inputs"]["seconds_per_step"] = seconds
    return prompt


def types_of(frames):
    return [f"bin{struct.unpack('>I', f[:4])[0]}" if isinstance(f, bytes) else f["type"] for f in frames]


def without_progress(types):
    return [t for t in types if t not in PROGRESS]


def graph(steps=3, seconds=0.001, seed=1, prefix="t", node="TestSteps"):
    return {"1": {"class_type": node, "inputs": {"steps": steps, "seconds_per_step": seconds, "seed": seed}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}}}


class WS:
    """A websocket-client connection with a reader thread collecting frames."""

    def __init__(self, base_url, client_id=None, flags=None, path="/ws"):
        url = base_url.replace("http", "ws", 1) + path + (f"?clientId={client_id}" if client_id else "")
        self.ws = websocket.create_connection(url, timeout=5)
        self.ws.settimeout(None)
        if flags is not None:
            self.ws.send(json.dumps({"type": "feature_flags", "data": flags}))
        self.frames, self.closed = [], False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while True:
                op, data = self.ws.recv_data()
                if op == websocket.ABNF.OPCODE_CLOSE:
                    break
                frame = json.loads(data.decode()) if op == websocket.ABNF.OPCODE_TEXT else bytes(data)
                with self.cond:
                    self.frames.append(frame)
                    self.cond.notify_all()
        except Exception:
            pass
        finally:
            with self.cond:
                self.closed = True
                self.cond.notify_all()

    def wait(self, predicate, timeout=10, what="condition"):
        with self.cond:
            ok = self.cond.wait_for(lambda: predicate(self.frames), timeout)
        assert ok, f"timed out waiting for {what}; got {types_of(self.frames)}"

    def wait_done(self, prompt_id, timeout=10):
        self.wait(lambda fs: any(isinstance(f, dict) and f["type"] == "executing" and f["data"]["node"] is None
                                 and f["data"].get("prompt_id") == prompt_id for f in fs),
                  timeout, f"executing null for {prompt_id}")

    def wait_type(self, kind, count=1, timeout=10):
        self.wait(lambda fs: types_of(fs).count(kind) >= count, timeout, f"{count} x {kind}")

    def progress_count(self):
        return types_of(self.frames).count("progress")

    def of_type(self, kind):
        return [f for f in self.frames if isinstance(f, dict) and f["type"] == kind]

    def close(self):
        try:
            self.ws.send_close()
        except Exception:
            pass
        self.thread.join(3)
        try:
            self.ws.shutdown()
        except Exception:
            pass


@pytest.fixture
def sim():
    with SimServer(host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture
def http():
    session = requests.Session()
    session.trust_env = False  # never route loopback through a proxy
    yield session
    session.close()


def post(http, sim, prompt, client_id=None, **extra):
    body = {"prompt": prompt, **extra}
    if client_id is not None:
        body["client_id"] = client_id
    r = http.post(sim.url + "/prompt", json=body, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["prompt_id"]


def history(http, sim, prompt_id):
    return http.get(f"{sim.url}/history/{prompt_id}", timeout=5).json()


# --- sequences compared with the real traces -------------------------------------------------

@pytest.mark.parametrize("name", ["steps_ok", "two_samplers", "fail", "preview_binary"])
def test_sequence_matches_trace(sim, http, name):
    ws = WS(sim.url, "cid-" + name)
    ws.wait_type("status")
    pid = post(http, sim, trace_prompt(name), "cid-" + name)
    ws.wait_done(pid)
    assert types_of(ws.frames) == trace_types(name)
    h = history(http, sim, pid)[pid]
    assert list(h) == ["prompt", "outputs", "status", "meta"]
    assert h["prompt"][1] == pid and h["prompt"][3] == {"client_id": "cid-" + name}
    real = next(r["history"]["body"] for r in trace(name) if "history" in r)
    real = next(iter(real.values()))
    assert [m[0] for m in h["status"]["messages"]] == [m[0] for m in real["status"]["messages"]]
    assert h["status"]["status_str"] == real["status"]["status_str"]
    assert set(h["outputs"]) == set(real["outputs"]) and set(h["meta"]) == set(real["meta"])
    ws.close()


def test_steps_ok_details(sim, http):
    ws = WS(sim.url, "c1")
    pid = post(http, sim, trace_prompt("steps_ok"), "c1")
    ws.wait_done(pid)
    progress = ws.of_type("progress")
    assert [p["data"]["value"] for p in progress] == list(range(1, 21))
    assert all(p["data"] == {"value": p["data"]["value"], "max": 20, "prompt_id": pid, "node": "1"}
               for p in progress)
    states = ws.of_type("progress_state")
    assert states[0]["data"]["nodes"]["1"]["value"] == 0.0 and states[0]["data"]["nodes"]["1"]["max"] == 1.0
    assert states[-1]["data"]["nodes"]["1"]["state"] == "finished"
    assert states[-1]["data"]["nodes"]["2"] == {
        "value": 1.0, "max": 1.0, "state": "finished", "node_id": "2", "prompt_id": pid,
        "display_node_id": "2", "parent_node_id": None, "real_node_id": "2"}
    executed = ws.of_type("executed")[0]["data"]
    assert executed == {"node": "2", "display_node": "2", "prompt_id": pid, "output": {
        "images": [{"filename": "steps_ok_00001_.png", "subfolder": "", "type": "output"}]}}
    assert ws.of_type("executing")[0]["data"] == {"node": "1", "display_node": "1", "prompt_id": pid}
    assert set(ws.of_type("execution_start")[0]["data"]) == {"prompt_id", "timestamp"}
    h = history(http, sim, pid)[pid]
    assert h["meta"] == {"2": {"node_id": "2", "display_node": "2", "parent_node": None, "real_node_id": "2"}}
    assert h["prompt"][4] == ["2"] and h["status"]["completed"] is True
    assert (sim.output_dir / "steps_ok_00001_.png").is_file()
    ws.close()


def test_cached_rerun_matches_trace(sim, http):
    prompt = trace_prompt("steps_ok")
    ws = WS(sim.url, "c1")
    first = post(http, sim, prompt, "c1")
    ws.wait_done(first)
    ws.close()
    files = sorted(os.listdir(sim.output_dir))
    ws2 = WS(sim.url, "c2")
    second = post(http, sim, prompt, "c2")
    ws2.wait_done(second)
    assert types_of(ws2.frames) == trace_types("steps_ok_cached")
    assert ws2.of_type("execution_cached")[0]["data"]["nodes"] == ["1", "2"]
    assert ws2.of_type("executed")[0]["data"]["output"]["images"][0]["filename"] == "steps_ok_00001_.png"
    assert sorted(os.listdir(sim.output_dir)) == files  # nothing new written
    h = history(http, sim, second)[second]
    assert h["outputs"] == history(http, sim, first)[first]["outputs"]
    assert [m[0] for m in h["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    ws2.close()


def test_cache_keeps_only_last_prompt_and_partial_hits(sim, http):
    ws = WS(sim.url, "c")
    a = post(http, sim, graph(seed=1), "c")
    b = post(http, sim, graph(seed=2), "c")
    a2 = post(http, sim, graph(seed=1), "c")           # evicted by b: runs again
    part = post(http, sim, graph(seed=1, prefix="other"), "c")  # node 1 cached only
    ws.wait_done(part)

    def cached(pid):
        return next(f["data"]["nodes"] for f in ws.of_type("execution_cached") if f["data"]["prompt_id"] == pid)

    assert cached(a) == [] and cached(b) == [] and cached(a2) == [] and cached(part) == ["1"]
    ran = [f["data"]["node"] for f in ws.of_type("executing") if f["data"]["prompt_id"] == part]
    assert ran == ["2", None]
    assert not [f for f in ws.of_type("progress") if f["data"]["prompt_id"] == part]
    ws.close()


def test_free_memory_drops_cache(sim, http):
    ws = WS(sim.url, "c")
    first = post(http, sim, graph(), "c")
    ws.wait_done(first)
    assert http.post(sim.url + "/free", json={"free_memory": True}, timeout=5).status_code == 200
    again = post(http, sim, graph(), "c")
    ws.wait_done(again)
    assert ws.of_type("execution_cached")[-1]["data"]["nodes"] == []
    ws.close()


def test_fail_error_payload(sim, http):
    ws = WS(sim.url, "c")
    pid = post(http, sim, trace_prompt("fail"), "c")
    ws.wait_done(pid)
    err = ws.of_type("execution_error")[0]["data"]
    real = next(r["ws"]["data"] for r in trace("fail") if r.get("ws", {}).get("type") == "execution_error")
    assert set(err) == set(real)
    assert err["exception_message"] == real["exception_message"] == "TestFail: deliberate failure (at step 3 of 10)\n"
    assert err["exception_type"] == "RuntimeError" and err["node_id"] == "1" and err["node_type"] == "TestFail"
    assert err["executed"] == [] and sorted(err["current_outputs"]) == ["1", "2"]
    assert err["current_inputs"] == {"steps": [10], "fail_at": [3], "seconds_per_step": [0.001],
                                     "message": ["TestFail: deliberate failure"], "seed": [0]}
    assert err["traceback"] and all(isinstance(line, str) for line in err["traceback"])
    h = history(http, sim, pid)[pid]
    assert h["status"]["status_str"] == "error" and h["status"]["completed"] is False
    assert h["status"]["messages"][-1][0] == "execution_error" and h["outputs"] == {} and h["meta"] == {}
    ws.close()


def test_queued_two_matches_trace(sim, http):
    ws = WS(sim.url, "c")
    first = post(http, sim, trace_prompt("queued_two", 0, seconds=0.02), "c")
    second = post(http, sim, trace_prompt("queued_two", 1, seconds=0.001), "c")
    ws.wait_done(second)
    ws.wait_done(first)

    def strip_second_enqueue(types, frames):
        # Where the second enqueue status lands depends on HTTP timing.
        idx = [i for i, f in enumerate(frames) if f["type"] == "status"
               and f["data"]["status"]["exec_info"]["queue_remaining"] == 2]
        assert len(idx) == 1
        return types[:idx[0]] + types[idx[0] + 1:], idx[0]

    ours, at = strip_second_enqueue(types_of(ws.frames), ws.frames)
    real_frames = [r["ws"] for r in trace("queued_two") if r.get("sock") == "main" and "ws" in r]
    real, _ = strip_second_enqueue(trace_types("queued_two"), real_frames)
    assert ours == real
    done_first = next(i for i, f in enumerate(ws.frames) if f["type"] == "executing"
                      and f["data"]["node"] is None)
    assert at < done_first
    assert sim.submissions == [first, second] and sim.history_ids() == [first, second]
    ws.close()


def test_preview_binary_frames(sim, http):
    ws = WS(sim.url, "c")
    pid = post(http, sim, trace_prompt("preview_binary"), "c")
    ws.wait_done(pid)
    bins = [f for f in ws.frames if isinstance(f, bytes)]
    previews = [f for f in bins if struct.unpack(">I", f[:4])[0] == 1]
    assert len(previews) == 4
    for f in previews:
        assert struct.unpack(">II", f[:8]) == (1, 1) and f[8:10] == b"\xff\xd8" and f[-2:] == b"\xff\xd9"
    text = next(f for f in bins if struct.unpack(">I", f[:4])[0] == 3)
    (n,) = struct.unpack(">I", text[4:8])
    assert text[8:8 + n] == b"2" and text[8 + n:] == b"hello from TestLog"
    log = ws.of_type("executed")[0]["data"]["output"]["text"]
    assert log[0] == "hello from TestLog" and log[1].startswith("mean=0.")
    preview = ws.of_type("executed")[1]["data"]["output"]["images"][0]
    assert preview["type"] == "temp" and preview["filename"].startswith("ComfyUI_temp_")
    r = http.get(sim.url + "/view", params={"filename": preview["filename"], "type": "temp", "subfolder": ""})
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    ws.close()


def test_preview_feature_flags_type4(sim, http):
    ws = WS(sim.url, "c", flags={"supports_preview_metadata": True})
    ws.wait_type("feature_flags")
    assert ws.frames[1]["data"] == {"supports_preview_metadata": True, "max_upload_size": 104857600}
    pid = post(http, sim, trace_prompt("preview_binary_feature_flags"), "c")
    ws.wait_done(pid)
    assert types_of(ws.frames) == trace_types("preview_binary_feature_flags")
    for f in (f for f in ws.frames if isinstance(f, bytes) and f[:4] == b"\0\0\0\4"):
        (m,) = struct.unpack(">I", f[4:8])
        assert json.loads(f[8:8 + m]) == {"node_id": "1", "prompt_id": pid, "display_node_id": "1",
                                          "parent_node_id": None, "real_node_id": "1",
                                          "image_type": "image/jpeg"}
        assert f[8 + m:8 + m + 2] == b"\xff\xd8"
    assert http.get(sim.url + "/features", timeout=5).json() == ws.frames[1]["data"]
    ws.close()


def test_later_feature_flags_ignored(sim, http):
    ws = WS(sim.url, "c")
    ws.wait_type("status")
    ws.ws.send("not json")  # invalid JSON does not use up the first-frame slot
    ws.ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
    ws.ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
    ws.wait_type("feature_flags")
    pid = post(http, sim, trace_prompt("preview_binary"), "c")
    ws.wait_done(pid)
    assert len(ws.of_type("feature_flags")) == 1
    assert "bin4" in types_of(ws.frames)
    ws.close()


# --- validation -------------------------------------------------------------------

def test_invalid_bodies_match_trace_and_nothing_on_socket(sim, http):
    ws = WS(sim.url, "c")
    ws.wait_type("status")
    for name in ("invalid", "invalid_unknown_node", "invalid_no_output"):
        real = trace_requests(name)[0]
        r = http.post(sim.url + "/prompt", json={"prompt": real["request"]["prompt"], "client_id": "c"})
        assert r.status_code == real["status"] == 400
        assert r.json() == real["response"]
    # A later valid prompt's enqueue status is the next thing on the socket.
    r = http.post(sim.url + "/prompt", json={"prompt": graph(), "client_id": "c"}).json()
    assert r["number"] == 3  # rejected prompts used up numbers 0..2
    ws.wait_done(r["prompt_id"])
    assert ws.frames[1] == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}}}
    assert sim.submissions == [r["prompt_id"]]
    ws.close()


def _errors(http, sim, prompt):
    r = http.post(sim.url + "/prompt", json={"prompt": prompt})
    return r.status_code, r.json()


def test_validation_error_shapes(sim, http):
    bad = graph()
    bad["1"]["inputs"]["steps"] = "abc"
    status, body = _errors(http, sim, bad)
    err = body["node_errors"]["1"]["errors"][0]
    assert status == 400 and body["error"]["type"] == "prompt_outputs_failed_validation"
    assert err["type"] == "invalid_input_type" and err["extra_info"]["input_name"] == "steps"
    assert err["message"] == "Failed to convert an input value to a INT value"

    low = graph()
    low["1"]["inputs"]["steps"] = -1
    err = _errors(http, sim, low)[1]["node_errors"]["1"]["errors"][0]
    assert err["type"] == "value_smaller_than_min" and err["extra_info"]["received_value"] == -1

    dangling = graph()
    dangling["2"]["inputs"]["images"] = ["9", 0]
    status, body = _errors(http, sim, dangling)
    err = body["node_errors"]["2"]["errors"][0]
    assert err["type"] == "bad_linked_input" and body["node_errors"]["2"]["dependent_outputs"] == ["2"]
    assert body["error"]["details"].startswith("Bad linked input")  # output's own error is in details

    wrong_slot = graph()
    wrong_slot["2"]["inputs"]["images"] = ["1", 5]
    assert _errors(http, sim, wrong_slot)[1]["node_errors"]["2"]["errors"][0]["type"] == "bad_linked_input"

    status, body = _errors(http, sim, {"1": {"inputs": {}}})
    assert status == 400 and body == {"error": {
        "type": "invalid_prompt", "message": "Cannot execute because a node is missing the class_type property.",
        "details": "Node ID '#1'", "extra_info": {}}, "node_errors": {}}

    r = http.post(sim.url + "/prompt", json={"client_id": "x"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "no_prompt"
    r = http.post(sim.url + "/prompt", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 500
    assert sim.submissions == []


def test_partial_validation_runs_passing_outputs(sim, http):
    prompt = graph()
    prompt["3"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "broken"}}
    prompt["1"]["inputs"]["steps"] = "4"  # converted in place, like the real server
    r = http.post(sim.url + "/prompt", json={"prompt": prompt, "client_id": "c"})
    body = r.json()
    assert r.status_code == 200
    assert body["node_errors"]["3"]["errors"][0]["type"] == "required_input_missing"
    assert sim.wait_for(lambda s: body["prompt_id"] in s.history_ids(), 10)
    h = history(http, sim, body["prompt_id"])[body["prompt_id"]]
    assert h["prompt"][4] == ["2"] and list(h["outputs"]) == ["2"]
    assert h["prompt"][2]["1"]["inputs"]["steps"] == 4


# --- sockets ------------------------------------------------------------------------

def test_reconnect_gets_executing_without_prompt_id(sim, http):
    prompt = trace_prompt("reconnect", seconds=0.02)
    ws = WS(sim.url, "rc")
    pid = post(http, sim, prompt, "rc")
    ws.wait(lambda fs: types_of(fs).count("progress") >= 3, what="progress")
    ws.close()
    assert sim.wait_for(lambda s: "rc" not in s.clients(), 5)
    ws2 = WS(sim.url, "rc")
    ws2.wait_done(pid)
    assert ws2.frames[0] == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}},
                                                        "sid": "rc"}}
    assert ws2.frames[1] == {"type": "executing", "data": {"node": "1"}}
    assert without_progress(types_of(ws2.frames)) == without_progress(trace_types("reconnect", "main#2"))
    assert "execution_start" not in types_of(ws2.frames)
    ws2.close()


def test_reconnect_after_finish_gets_nothing_extra(sim, http):
    ws = WS(sim.url, "c")
    pid = post(http, sim, graph(), "c")
    ws.wait_done(pid)
    ws.close()
    assert sim.wait_for(lambda s: "c" not in s.clients(), 5)
    ws2 = WS(sim.url, "c")
    ws2.wait_type("status")
    observer = WS(sim.url, "o")
    post(http, sim, graph(seed=9), "someone-else")
    observer.wait_type("status", 4)
    ws2.wait_type("status", 4)
    assert types_of(ws2.frames) == ["status"] * 4
    ws2.close()
    observer.close()


def test_duplicate_client_id_silences_old_and_bug_16010(sim, http):
    old = WS(sim.url, "dup")
    pid = post(http, sim, trace_prompt("dup_client_id", seconds=0.02), "dup")
    old.wait(lambda fs: types_of(fs).count("progress") >= 3, what="progress")
    new = WS(sim.url, "dup")
    new.wait_type("executing")
    seen_by_old = len(old.frames)
    new.wait_done(pid)
    assert new.frames[1] == {"type": "executing", "data": {"node": "1"}}
    assert without_progress(types_of(new.frames)) == without_progress(trace_types("dup_client_id", "dup"))
    assert len(old.frames) - seen_by_old <= 2  # at most frames already in flight
    assert "execution_success" not in types_of(old.frames) and not old.closed
    # Closing the old socket unregisters the clientId, taking the new socket with it.
    old.close()
    assert sim.wait_for(lambda s: "dup" not in s.clients(), 5)
    count = len(new.frames)
    observer = WS(sim.url, "obs")
    post(http, sim, graph(), "dup")
    observer.wait_type("status", 4)
    assert len(new.frames) == count and not new.closed
    new.close()
    observer.close()


def test_observer_sees_only_status(sim, http):
    main, observer = WS(sim.url, "m"), WS(sim.url, "observer-1")
    observer.wait_type("status")
    pid = post(http, sim, trace_prompt("observer"), "m")
    main.wait_done(pid)
    observer.wait_type("status", 4)
    assert types_of(main.frames) == trace_types("observer", "main")
    assert types_of(observer.frames) == trace_types("observer", "observer")
    main.close()
    observer.close()


def test_no_client_id_prompt(sim, http):
    main, observer = WS(sim.url, "m"), WS(sim.url, "o")
    main.wait_type("status")
    observer.wait_type("status")
    pid = post(http, sim, trace_prompt("no_client_id_observer"))
    for ws, sock in ((main, "main"), (observer, "observer")):
        ws.wait_type("status", 4)
        assert types_of(ws.frames) == trace_types("no_client_id_observer", sock)
    h = history(http, sim, pid)[pid]
    assert h["prompt"][3] == {} and h["status"]["status_str"] == "success" and "2" in h["outputs"]
    main.close()
    observer.close()


# --- interrupts ---------------------------------------------------------------------

def _long(seed=1, steps=200, seconds=0.02):
    return graph(steps=steps, seconds=seconds, seed=seed, prefix="long")


def test_interrupt_global(sim, http):
    ws = WS(sim.url, "c")
    pid = post(http, sim, _long(), "c")
    ws.wait(lambda fs: types_of(fs).count("progress") >= 2, what="progress")
    assert http.post(sim.url + "/interrupt", timeout=5).status_code == 200  # no body
    ws.wait_done(pid)
    assert without_progress(types_of(ws.frames)) == without_progress(trace_types("interrupt"))
    data = ws.of_type("execution_interrupted")[0]["data"]
    assert set(data) == {"prompt_id", "node_id", "node_type", "executed", "timestamp"}
    assert (data["node_id"], data["node_type"], data["executed"]) == ("1", "TestSteps", [])
    h = history(http, sim, pid)[pid]
    assert h["status"]["status_str"] == "error" and h["status"]["messages"][-1][0] == "execution_interrupted"
    assert h["outputs"] == {} and h["meta"] == {}
    ws.close()


def test_interrupt_targeted_and_lost_interrupts(sim, http):
    ws = WS(sim.url, "c")
    ws.wait_type("status")
    http.post(sim.url + "/interrupt", json={})  # nothing running: lost
    pid = post(http, sim, _long(), "c")
    ws.wait(lambda fs: types_of(fs).count("progress") >= 2, what="progress")
    http.post(sim.url + "/interrupt", json={"prompt_id": "not-running"})
    n = ws.progress_count()
    ws.wait(lambda fs: types_of(fs).count("progress") >= n + 3, what="more progress")
    assert sim.running() == (pid, "1")
    http.post(sim.url + "/interrupt", json={"prompt_id": pid})
    ws.wait_done(pid)
    assert without_progress(types_of(ws.frames)) == without_progress(trace_types("interrupt_targeted"))
    ws.close()


def test_interrupt_no_client_id_is_broadcast(sim, http):
    main, observer = WS(sim.url, "m"), WS(sim.url, "o")
    main.wait_type("status")
    observer.wait_type("status")
    pid = post(http, sim, _long())
    observer.wait(lambda fs: types_of(fs).count("progress") >= 2, what="progress")
    http.post(sim.url + "/interrupt")
    for ws, sock in ((main, "main"), (observer, "observer")):
        ws.wait_type("execution_interrupted")
        ws.wait(lambda fs: types_of(fs)[-1] == "status", what="final status")
        assert without_progress(types_of(ws.frames)) == \
            without_progress(trace_types("interrupt_no_client_id_observer", sock))
    assert sim.wait_for(lambda s: pid in s.history_ids(), 5)
    main.close()
    observer.close()


# --- queue, priorities, history -----------------------------------------------------------

def test_queue_listing_and_delete_pending(sim, http):
    ws = WS(sim.url, "c")
    a = post(http, sim, _long(), "c")
    assert sim.wait_for(lambda s: s.running() == (a, "1"), 5)
    b = post(http, sim, graph(), "c")
    q = http.get(sim.url + "/queue").json()
    assert [item[1] for item in q["queue_running"]] == [a] and [item[1] for item in q["queue_pending"]] == [b]
    assert q["queue_pending"][0][3:] == [{"client_id": "c"}, ["2"]] and len(q["queue_pending"][0]) == 5
    assert http.get(sim.url + "/prompt").json() == {"exec_info": {"queue_remaining": 2}}
    # b's own enqueue broadcast may still be on its way: wait for the one the delete sends.
    ws.wait(lambda fs: [f["data"]["status"]["exec_info"]["queue_remaining"] for f in fs
                        if isinstance(f, dict) and f["type"] == "status"][-1:] == [2], 10, "b's status")
    n = len(ws.of_type("status"))
    assert http.post(sim.url + "/queue", json={"delete": [b]}).status_code == 200
    ws.wait_type("status", n + 1)
    assert ws.of_type("status")[n]["data"]["status"]["exec_info"]["queue_remaining"] == 1
    assert http.get(sim.url + "/queue").json()["queue_pending"] == []
    http.post(sim.url + "/interrupt")
    ws.wait_done(a)
    assert sim.history_ids() == [a] and history(http, sim, b) == {}
    assert not [f for f in ws.frames if isinstance(f, dict) and f["data"].get("prompt_id") == b]
    ws.close()


def test_priorities_front_and_number(sim, http):
    ws = WS(sim.url, "c")
    a = post(http, sim, _long(), "c")
    assert sim.wait_for(lambda s: s.running() == (a, "1"), 5)
    b = post(http, sim, graph(seed=2), "c")
    c = post(http, sim, graph(seed=3), "c", front=True)
    r = http.post(sim.url + "/prompt", json={"prompt": graph(seed=4), "client_id": "c", "number": -100,
                                             "prompt_id": "my-own-id"}).json()
    assert r["number"] == -100.0 and isinstance(r["number"], float) and r["prompt_id"] == "my-own-id"
    http.post(sim.url + "/interrupt")
    ws.wait_done(b)
    starts = [f["data"]["prompt_id"] for f in ws.of_type("execution_start")]
    assert starts == [a, "my-own-id", c, b]
    ws.close()


def test_history_routes(sim, http):
    ids = []
    for seed in range(3):
        ids.append(post(http, sim, graph(seed=seed)))
    assert sim.wait_for(lambda s: len(s.history_ids()) == 3, 10)
    assert list(http.get(sim.url + "/history").json()) == ids
    assert list(http.get(sim.url + "/history", params={"max_items": 2}).json()) == ids[1:]
    assert list(http.get(sim.url + "/history", params={"max_items": 1, "offset": 0}).json()) == ids[:1]
    assert history(http, sim, "nope") == {}
    http.post(sim.url + "/history", json={"delete": [ids[0]]})
    assert sim.history_ids() == ids[1:]
    http.post(sim.url + "/history", json={"clear": True})
    assert http.get(sim.url + "/history").json() == {}


def test_history_delay_fault_shows_the_11540_race(http):
    class Late(Faults):
        def history_delay(self, prompt_id):
            return 0.5

    with SimServer(faults=Late()) as sim:
        ws = WS(sim.url, "c")
        pid = post(http, sim, graph(), "c")
        ws.wait_type("execution_success")
        assert history(http, sim, pid) == {}  # success is out, history is not yet
        ws.wait_done(pid)
        assert pid in history(http, sim, pid)
        ws.close()


# --- files ---------------------------------------------------------------------------

def test_view_serves_png_and_checks_paths(sim, http):
    pid = post(http, sim, graph(prefix="view"))
    assert sim.wait_for(lambda s: pid in s.history_ids(), 10)
    image = history(http, sim, pid)[pid]["outputs"]["2"]["images"][0]
    r = http.get(sim.url + "/view", params=image)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n" and r.content[12:16] == b"IHDR"
    assert struct.unpack(">II", r.content[16:24]) == (64, 64)
    view = sim.url + "/view"
    assert http.get(view, params={"filename": "../x.png"}).status_code == 400
    assert http.get(view, params={"filename": "/etc/passwd"}).status_code == 400
    assert http.get(view, params={"filename": image["filename"], "type": "bogus"}).status_code == 400
    assert http.get(view, params={"filename": image["filename"], "subfolder": "../.."}).status_code == 403
    assert http.get(view, params={"filename": "missing.png"}).status_code == 404
    assert http.get(view, params={"filename": image["filename"] + " [output]", "type": "temp"}).status_code == 200


def test_upload_image_dedupe_and_rename(sim, http):
    url = sim.url + "/upload/image"

    def up(data, **fields):
        return http.post(url, files={"image": ("cat.png", data, "image/png")}, data=fields)

    assert up(b"one").json() == {"name": "cat.png", "subfolder": "", "type": "input"}
    assert up(b"one").json()["name"] == "cat.png"          # same content: same name, nothing written
    assert up(b"two").json()["name"] == "cat (1).png"
    assert up(b"three").json()["name"] == "cat (2).png"
    assert up(b"two").json()["name"] == "cat (1).png"
    assert up(b"four", overwrite="true").json()["name"] == "cat.png"
    assert (sim.input_dir / "cat.png").read_bytes() == b"four"
    assert up(b"x", subfolder="pets", type="temp").json() == {"name": "cat.png", "subfolder": "pets",
                                                             "type": "temp"}
    assert up(b"x", subfolder="../../escape").status_code == 400
    assert http.post(url, data={"type": "input"}).status_code == 400
    r = http.get(sim.url + "/view", params={"filename": "cat (2).png", "type": "input"})
    assert r.content == b"three"


# --- odds and ends --------------------------------------------------------------------------

def test_api_prefix_and_descriptive_routes(sim, http):
    stats = http.get(sim.url + "/api/system_stats").json()
    assert stats["system"]["comfyui_version"] == "0.3.64" and stats["system"]["argv"] == ["comfy-cli", "sim"]
    info = http.get(sim.url + "/api/object_info/TestSteps").json()["TestSteps"]
    assert info["input"]["required"]["steps"][0] == "INT" and info["output"] == ["IMAGE"]
    assert info["output_node"] is False and "image" in info["input"]["optional"]
    assert http.get(sim.url + "/object_info").json()["SaveImage"]["output_node"] is True
    assert http.get(sim.url + "/api/object_info/NoSuchNode").json() == {}
    ws = WS(sim.url, "api", path="/api/ws")
    r = http.post(sim.url + "/api/prompt", json={"prompt": graph(), "client_id": "api"}).json()
    ws.wait_done(r["prompt_id"])
    assert r["prompt_id"] in http.get(f"{sim.url}/api/history/{r['prompt_id']}").json()
    assert http.get(sim.url + "/api/queue").json() == {"queue_running": [], "queue_pending": []}
    ws.close()


def test_generated_client_id_and_origin_check(sim, http):
    ws = WS(sim.url)
    ws.wait_type("status")
    sid = ws.frames[0]["data"]["sid"]
    assert len(sid) == 32 and int(sid, 16) >= 0
    assert http.get(sim.url + "/prompt", headers={"Origin": "http://evil.example"}).status_code == 403
    ws.close()


def test_faults_http_connect_and_send(http):
    class Broken(Faults):
        def __init__(self):
            self.sent = 0

        def on_http(self, request):
            if request.path == "/queue":
                from aiohttp import web
                return web.Response(status=503)
            return None

        def on_ws_connect(self, request):
            return request.query.get("clientId") != "refused"

        def on_ws_send(self, client_id, payload):
            if client_id == "dropper":
                self.sent += 1
                return "close" if self.sent >= 3 else "send"
            return "send"

    with SimServer(faults=Broken()) as sim:
        assert http.get(sim.url + "/queue").status_code == 503
        assert http.get(sim.url + "/prompt").status_code == 200
        with pytest.raises(websocket.WebSocketBadStatusException):
            WS(sim.url, "refused")
        ws = WS(sim.url, "dropper")
        post(http, sim, graph(), "dropper")
        ws.wait(lambda fs: ws.closed, what="server close")
        assert types_of(ws.frames) == ["status", "status"]
        assert sim.wait_for(lambda s: "dropper" not in s.clients(), 5)


def test_sim_api_helpers(sim):
    assert sim.url == f"http://127.0.0.1:{sim.port}" and sim.port > 0
    assert sim.running() is None and sim.history_ids() == [] and sim.submissions == []
    assert sim.wait_for(lambda s: False, 0.1) is False
    assert sim.output_dir.is_dir()


def test_stop_removes_temp_dirs():
    sim = SimServer().start()
    out = sim.output_dir
    assert out.is_dir()
    sim.stop()
    assert not out.exists()


def test_serve_foreground_process(tmp_path, http):
    proc = subprocess.Popen([sys.executable, "-m", "comfy_cli.sim", "--port", "0",
                             "--output-dir", str(tmp_path)],
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        line = proc.stderr.readline().strip()
        assert line.startswith("ComfyUI simulator listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        assert http.get(url + "/system_stats", timeout=5).json()["system"]["comfyui_version"] == "0.3.64"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()


NO_AIOHTTP = """
import runpy, sys
sys.modules["aiohttp"] = None  # as if aiohttp were not installed
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("argv, prog", [(["comfy_cli.sim", "--port", "0"], "python -m comfy_cli.sim"),
                                        (["comfy_cli", "sim", "--port", "0"], "comfy-cli"),
                                        (["comfy_cli", "run", "--simulate", "examples/steps.json"], "comfy-cli")],
                         ids=["python -m comfy_cli.sim", "comfy-cli sim", "comfy-cli run --simulate"])
def test_simulator_without_aiohttp_says_so_in_one_line(argv, prog):
    proc = subprocess.run([sys.executable, "-c", NO_AIOHTTP, *argv], capture_output=True, text=True, timeout=30,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"{prog}: error: the simulator needs aiohttp")
    assert "pip install 'comfy-run-cli[sim]'" in proc.stderr


def test_importing_the_simulator_without_aiohttp_raises_import_error():
    code = ("import sys; sys.modules['aiohttp'] = None\n"
            "from comfy_cli.sim import Faults\n"  # no aiohttp needed
            "try:\n    from comfy_cli.sim import SimServer\nexcept ImportError:\n    print('ImportError')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.stdout == "ImportError\n", proc.stderr


def test_object_info_has_the_real_servers_shape(sim, http):
    real = json.loads((Path(__file__).resolve().parent / "data" / "ui" / "object_info.json").read_text())
    info = http.get(sim.url + "/object_info").json()
    keys = {"input", "input_order", "output", "output_is_list", "output_name", "name", "display_name",
            "description", "python_module", "category", "output_node"}
    for name, entry in info.items():
        assert set(entry) == keys, name
        for section, specs in entry["input"].items():
            assert entry["input_order"][section] == list(specs)
            if section != "hidden":
                assert all(isinstance(s, list) and (isinstance(s[0], list) or isinstance(s[0], str)) for s in
                           specs.values())
    for name in ("SaveImage", "LoadImage", "PreviewImage"):  # the real nodes it plays, as the real one has them
        mine, theirs = info[name], real[name]
        for field in ("input_order", "output", "output_name", "display_name", "category", "output_node"):
            assert mine[field] == theirs[field], (name, field)
        for section in ("required", "optional"):
            assert {k: (type(v[0]), v[1:] and sorted(set(v[1]) - {"tooltip"})) for k, v in
                    mine["input"].get(section, {}).items()} == \
                   {k: (type(v[0]), v[1:] and sorted(set(v[1]) - {"tooltip"})) for k, v in
                    theirs["input"].get(section, {}).items()}, (name, section)
    assert info["TestSteps"]["input"]["required"]["seed"][1]["control_after_generate"] is True
    # LoadImage's choices are the input folder's files, as on the real server.
    assert info["LoadImage"]["input"]["required"]["image"][0] == []
    http.post(sim.url + "/upload/image", files={"image": ("cat.png", b"png")}, data={"type": "input"})
    http.post(sim.url + "/upload/image", files={"image": ("dog.png", b"png")}, data={"type": "input",
                                                                                     "subfolder": "pets"})
    choices = http.get(sim.url + "/object_info/LoadImage").json()["LoadImage"]["input"]["required"]["image"][0]
    assert choices == ["cat.png", "pets/dog.png"]
