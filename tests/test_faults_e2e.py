"""Network and server faults, end to end: the real comfy-cli process against the simulator.

Each test checks the final status of every prompt, the exit code, that no output was lost
(every file the server's history names is reported) and that nothing was submitted twice.
"""

import contextlib
import json
import signal
import threading
import time

import pytest
import requests
from aiohttp import web

from comfy_cli.sim import Faults, SimServer
from netproxy import Proxy, close
from test_run_e2e import cli, start, workflow

pytestmark = pytest.mark.timeout(60)

FAST = ["--poll-interval", "0.2", "--silence-check", "1"]


@contextlib.contextmanager
def cut_off_while_running(tmp_path, steps, *args):
    """A `run` of one `steps`-step prompt through a proxy, cut off (proxy down) once the prompt
    runs: yields (sim, proxy, proc); the process is killed and the proxy closed after."""
    with SimServer() as sim:
        proxy = Proxy(sim.port).up()
        proc = start("run", workflow(tmp_path, "steps", **{"1__steps": steps}), "--url", proxy.url, "--json",
                     *args, *FAST)
        try:
            assert sim.wait_for(lambda s: s.running() is not None, 15)
            proxy.down()
            yield sim, proxy, proc
        finally:
            proc.kill()
            close(proxy)


def run_json(proc_or_args, **kw):
    proc = cli(*proc_or_args, **kw) if isinstance(proc_or_args, (list, tuple)) else proc_or_args
    return proc, json.loads(proc.stdout)


def check_outputs(sim, doc):
    """Every prompt the server finished reports exactly the files its history names."""
    for p in doc["prompts"]:
        pid = p["prompt_id"]
        if p["status"] in ("success", "failed", "interrupted"):
            assert sim.wait_for(lambda s: pid in s.history_ids(), 10)  # it lands just after the end
        entry = sim.history_entry(pid)
        if entry is None:
            continue
        names = sorted(i["filename"] for out in entry["outputs"].values() for i in out.get("images", [])
                       if i["type"] == "output")
        assert sorted(o["filename"] for o in p["outputs"]) == names


def check_submitted_once(sim, doc):
    ids = [p["prompt_id"] for p in doc["prompts"] if p["status"] != "rejected"]
    assert sorted(sim.submissions) == sorted(ids)


class DropSocket(Faults):
    """Cut the client's socket (no close frame) at the given frame counts."""

    def __init__(self, at):
        self.at = set(at)
        self.count = 0

    def on_ws_send(self, client_id, payload):
        self.count += 1
        return "abort" if self.count in self.at else "send"


def test_socket_dropped_several_times(tmp_path):
    faults = DropSocket([20, 60, 110])
    with SimServer(faults=faults) as sim:
        proc, doc = run_json(["run", workflow(tmp_path, "steps", **{"1__steps": 150}),
                              workflow(tmp_path, "two_samplers"), "--url", sim.url, "--json", *FAST])
        assert proc.returncode == 0, proc.stderr
        assert [p["status"] for p in doc["prompts"]] == ["success", "success"]
        assert proc.stderr.count("websocket lost") >= 2 and "reconnected" in proc.stderr
        check_outputs(sim, doc)
        check_submitted_once(sim, doc)


class RefuseSocketUntil(Faults):
    def __init__(self):
        self.open = threading.Event()

    def on_ws_connect(self, request):
        return self.open.is_set()


def test_socket_refused_while_http_works(tmp_path):
    faults = RefuseSocketUntil()
    with SimServer(faults=faults) as sim:
        proc = start("run", workflow(tmp_path, "steps"), workflow(tmp_path, "two_samplers"), "--url", sim.url,
                     "--json", *FAST)
        try:
            assert sim.wait_for(lambda s: len(s.history_ids()) >= 1, 20)  # finished while we only poll
            faults.open.set()
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
        doc = json.loads(out)
        assert proc.returncode == 0, err
        assert "websocket unavailable (websocket refused: HTTP 403)" in err
        assert [p["status"] for p in doc["prompts"]] == ["success", "success"]
        assert doc["prompts"][0]["nodes"] == {"total": 2, "executed": 2, "cached": 0}  # known from /history
        check_outputs(sim, doc)
        check_submitted_once(sim, doc)


class StallSocket(Faults):
    """After `after` frames, stop sending anything on the socket without closing it (it stays
    open and answers pings: a deaf socket). A fresh connection is served normally."""

    def __init__(self, after):
        self.after = after
        self.count = 0
        self.stalled = False

    def on_ws_connect(self, request):
        if self.stalled:
            self.after = None
        return True

    def on_ws_send(self, client_id, payload):
        self.count += 1
        if self.after is not None and self.count > self.after:
            self.stalled = True
            return "drop"
        return "send"


def test_stalled_socket_is_noticed_and_replaced(tmp_path):
    faults = StallSocket(after=12)
    with SimServer(faults=faults) as sim:
        proc, doc = run_json(["run", workflow(tmp_path, "steps", **{"1__steps": 150}), "--url", sim.url,
                              "--json", *FAST])
        assert proc.returncode == 0, proc.stderr
        assert doc["prompts"][0]["status"] == "success"
        assert "went quiet while the server moved on" in proc.stderr
        check_outputs(sim, doc)
        check_submitted_once(sim, doc)


def test_server_down_and_back(tmp_path):
    with cut_off_while_running(tmp_path, 250) as (sim, proxy, proc):
        # It finished while we were cut off, and the client has knocked in vain a few times.
        assert sim.wait_for(lambda s: len(s.history_ids()) == 1 and proxy.refused >= 4, 20)
        proxy.up()
        out, err = proc.communicate(timeout=30)
        doc = json.loads(out)
        assert proc.returncode == 0, err
        assert "server not answering since" in err and "server answering again" in err
        assert doc["prompts"][0]["status"] == "success"
        check_outputs(sim, doc)
        check_submitted_once(sim, doc)


def test_server_down_until_deadline_is_exit_4(tmp_path):
    with cut_off_while_running(tmp_path, 5000, "--deadline", "3") as (_, _, proc):
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 4, err
    p = json.loads(out)["prompts"][0]
    # Down before or after the answer to POST /prompt got through: either way an error, exit 4.
    assert p["status"] == "error"
    assert "not answering since" in p["error"]["message"] or "could not submit" in p["error"]["message"]


def test_restart_with_empty_queue_is_a_lost_prompt(tmp_path):
    first = SimServer().start()
    port = first.port
    proc = start("run", workflow(tmp_path, "steps", **{"1__steps": 5000}), "--url", first.url, "--json", *FAST)
    second = None
    try:
        assert first.wait_for(lambda s: s.running() is not None, 15)
        first.stop()  # a restart: history and queue are in memory only
        second = SimServer(port=port).start()
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        first.stop()
        if second:
            second.stop()
    assert proc.returncode == 4, err
    p = json.loads(out)["prompts"][0]
    assert p["status"] == "lost" and "neither the server's queue nor its history" in p["error"]["message"]
    assert second.submissions == []  # it was not sent again to the new server


class LostFirstAnswer(Faults):
    """The first POST /prompt is queued, but its answer is lost on the way back (a 502)."""

    posts = 0

    def after_http(self, request, response):
        if request.method == "POST" and request.path == "/prompt":
            self.posts += 1
            if self.posts == 1:
                return web.Response(status=502, text="<html>Bad Gateway</html>", content_type="text/html")
        return None


class FlakyHttp(LostFirstAnswer):
    """The first POST's answer lost, 503/500 on some GETs; the socket is dropped once so the
    client has to poll."""

    def __init__(self):
        self.gets = 0
        self.frames = 0

    def on_http(self, request):
        if request.method == "GET" and request.path in ("/queue", "/history") or \
                request.method == "GET" and request.path.startswith("/history/"):
            self.gets += 1
            if self.gets % 3 == 0:
                return web.Response(status=503, text="<html>busy</html>", content_type="text/html")
            if self.gets % 7 == 0:
                return web.Response(status=500, text="oops")
        return None

    def on_ws_send(self, client_id, payload):
        self.frames += 1
        return "abort" if self.frames == 15 else "send"


def test_http_errors_and_a_lost_post_answer(tmp_path):
    faults = FlakyHttp()
    with SimServer(faults=faults) as sim:
        proc, doc = run_json(["run", workflow(tmp_path, "steps", **{"1__steps": 60}), workflow(tmp_path, "fail"),
                              "--url", sim.url, "--json", *FAST])
        assert proc.returncode == 1, proc.stderr  # the second workflow fails on purpose
        assert [p["status"] for p in doc["prompts"]] == ["success", "failed"]
        assert "the answer to POST /prompt was lost, but the server has the prompt" in proc.stderr
        assert faults.posts == 2  # one per workflow: the lost answer was not re-sent
        check_outputs(sim, doc)
        check_submitted_once(sim, doc)


class LateHistory(Faults):
    """The socket dies right before the terminal event, and history lags it by 1.5 s."""

    def on_ws_send(self, client_id, payload):
        return "abort" if isinstance(payload, str) and '"execution_success"' in payload else "send"

    def history_delay(self, prompt_id):
        return 1.5


def test_late_history_entry(tmp_path):
    with SimServer(faults=LateHistory()) as sim:
        proc, doc = run_json(["run", workflow(tmp_path, "steps"), "--url", sim.url, "--json", *FAST])
        assert proc.returncode == 0, proc.stderr
        p = doc["prompts"][0]
        assert p["status"] == "success" and [o["filename"] for o in p["outputs"]] == ["steps_00001_.png"]
        check_outputs(sim, doc)


def test_prompt_deleted_by_someone_else(sim, tmp_path):
    # No --silence-check: the `status` broadcast of the shrunk queue is what must reveal it, while
    # the other prompt still streams progress.
    proc = start("run", workflow(tmp_path, "steps", **{"1__steps": 300}),
                 workflow(tmp_path, "steps", **{"1__seed": 5}), "--url", sim.url, "--json", "--poll-interval", "0.2")
    try:
        assert sim.wait_for(lambda s: s.running() is not None and len(s.submissions) == 2, 15)
        requests.post(sim.url + "/queue", json={"delete": [sim.submissions[1]]}, timeout=5)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    doc = json.loads(out)
    assert proc.returncode == 4, err
    assert [p["status"] for p in doc["prompts"]] == ["success", "lost"]
    running, lost = doc["prompts"]
    assert lost["timings"]["total_s"] < running["timings"]["total_s"]  # noticed before the other ended
    check_outputs(sim, doc)
    check_submitted_once(sim, doc)


def test_proxy_cuts_connections_mid_frame(tmp_path):
    with SimServer() as sim:
        proxy = Proxy(sim.port, cut_ws=3, cut_after=2000).up()
        try:
            proc, doc = run_json(["run", workflow(tmp_path, "steps", **{"1__steps": 300}),
                                  workflow(tmp_path, "two_samplers"), "--url", proxy.url, "--json", *FAST])
        finally:
            close(proxy)
        assert proc.returncode == 0, proc.stderr
        assert proxy.cuts == 3
        assert [p["status"] for p in doc["prompts"]] == ["success", "success"]
        check_outputs(sim, doc)
        check_submitted_once(sim, doc)


def test_timeout_does_not_fire_while_progress_arrives(sim, tmp_path):
    started = time.monotonic()
    # A step every 10 ms for 4 s; the 1.5 s silence limit leaves room for a loaded machine.
    proc, doc = run_json(["run", workflow(tmp_path, "steps", **{"1__steps": 400}), "--url", sim.url, "--json",
                          "--timeout", "1.5"])
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started > 3.0  # it ran twice as long as the timeout, and was not stopped


def test_silence_timeout(tmp_path):
    faults = StallSocket(after=8)
    with SimServer(faults=faults) as sim:
        proc, doc = run_json(["run", workflow(tmp_path, "steps", **{"1__steps": 5000}), "--url", sim.url,
                              "--json", "--timeout", "1.5"])
        assert proc.returncode == 3, proc.stderr
        assert doc["prompts"][0]["status"] == "timeout"
        assert "nothing new from the server for 1.5 s" in doc["prompts"][0]["error"]["message"]


class CutAtFirstOutput(Faults):
    def __init__(self):
        self.done = False

    def on_ws_send(self, client_id, payload):
        if not self.done and isinstance(payload, str) and '"executed"' in payload:
            self.done = True
            return "abort"  # that `executed` never reaches the client
        return "send"


def test_outputs_missed_in_a_gap_come_from_history(tmp_path):
    graph = {"1": {"class_type": "TestSteps", "inputs": {"steps": 2, "seconds_per_step": 0.01, "seed": 1}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "a"}},
             "3": {"class_type": "TestSteps", "inputs": {"steps": 60, "seconds_per_step": 0.01, "seed": 2}},
             "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "b"}}}
    path = tmp_path / "two_outputs.json"
    path.write_text(json.dumps(graph))
    with SimServer(faults=CutAtFirstOutput()) as sim:
        proc, doc = run_json(["run", str(path), "--url", sim.url, "--json", *FAST])
        assert proc.returncode == 0, proc.stderr
        assert sorted(o["filename"] for o in doc["prompts"][0]["outputs"]) == ["a_00001_.png", "b_00001_.png"]
        check_outputs(sim, doc)


class NoSuccessMessage(Faults):
    def on_ws_send(self, client_id, payload):
        return "drop" if isinstance(payload, str) and '"execution_success"' in payload else "send"


def test_done_marker_without_a_terminal_event(tmp_path):
    # `executing {node: null}` arrives, `execution_success` never does: the history says how it
    # ended, at once (not after the quiet-socket check, and without replacing the socket).
    with SimServer(faults=NoSuccessMessage()) as sim:
        proc, doc = run_json(["run", workflow(tmp_path, "steps"), "--url", sim.url, "--json"])
        assert proc.returncode == 0, proc.stderr
        assert doc["prompts"][0]["status"] == "success"
        assert "went quiet" not in proc.stderr and "websocket lost" not in proc.stderr
        check_outputs(sim, doc)


def test_post_forwarded_late_by_a_gateway_is_not_sent_twice(tmp_path):
    with SimServer() as sim:
        proxy = Proxy(sim.port, late_post=1.5).up()
        try:
            proc, doc = run_json(["run", workflow(tmp_path, "steps"), "--url", proxy.url, "--json", *FAST])
        finally:
            close(proxy)
        assert proc.returncode == 0, proc.stderr
        assert "the answer to POST /prompt was lost, but the server has the prompt" in proc.stderr
        assert doc["prompts"][0]["status"] == "success"
        check_submitted_once(sim, doc)


def test_transport_changes_in_the_event_stream(tmp_path):
    with SimServer(faults=DropSocket([20])) as sim:
        # Long enough to outlast the reconnect's first backoff (about 0.5 s).
        proc = cli("run", workflow(tmp_path, "steps", **{"1__steps": 250}), "--url", sim.url, "--events", *FAST)
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(line) for line in proc.stdout.splitlines()]
        transport = [line for line in lines if line["event"] == "transport"]
        assert [t["polling"] for t in transport] == [True, False]
        assert "websocket lost" in transport[0]["message"] and "reconnected" in transport[1]["message"]


class SlowPrompt(Faults):
    async def on_http(self, request):
        if request.path == "/prompt" and request.method == "POST":
            import asyncio

            await asyncio.sleep(0.4)
        return None


def test_deadline_during_submission(tmp_path):
    with SimServer(faults=SlowPrompt()) as sim:
        files = [workflow(tmp_path, "steps", **{"1__seed": i}) for i in range(8)]
        proc, doc = run_json(["run", *files, "--url", sim.url, "--json", "--deadline", "1"])
        assert proc.returncode == 3, proc.stderr
        statuses = [p["status"] for p in doc["prompts"]]
        assert statuses.count("timeout") >= 5
        unsent = [p for p in doc["prompts"] if "not submitted" in (p["error"] or {}).get("message", "")]
        assert unsent and len(sim.submissions) + len(unsent) == 8


def test_a_resent_post_answered_409_by_a_newer_server_is_accepted(tmp_path):
    # The first POST's answer is lost (a gateway's 504) and the gateway forwards it only when
    # the client, having not found the prompt for a while, sends it again: the server then
    # holds that prompt_id and, as newer ComfyUI servers do, answers the second POST 409.
    # Another client's prompt runs meanwhile, so nothing but that answer can tell the client
    # the server has ours.
    with SimServer(conflict=True) as sim:
        graph = json.loads(open(workflow(tmp_path, "steps", **{"1__steps": 6000, "1__seed": 99})).read())
        blocker = requests.post(sim.url + "/prompt", json={"prompt": graph, "client_id": "other"},
                                timeout=5).json()["prompt_id"]
        proxy = Proxy(sim.port, hold_post=True).up()
        proc = start("run", workflow(tmp_path, "steps"), "--url", proxy.url, "--json", *FAST)
        try:
            assert sim.wait_for(lambda s: s.conflicts, 30)  # the resend was answered 409
            requests.post(sim.url + "/interrupt", json={"prompt_id": blocker}, timeout=5)
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
            close(proxy)
        assert proxy.held is None and not proxy.hold_post  # the late copy went first, the resend after it
        assert proc.returncode == 0, err
        p, = json.loads(out)["prompts"]
        assert p["status"] == "success" and p["error"] is None, p
        assert [o["filename"] for o in p["outputs"]] == ["steps_00001_.png"]
        assert sim.conflicts == [p["prompt_id"]]
        assert sim.submissions == [blocker, p["prompt_id"]]  # queued once


def test_sigterm_while_the_server_is_down_exits_143(tmp_path):
    # The signal is what ended the run, even though the server could not be told to cancel.
    with cut_off_while_running(tmp_path, 5000) as (sim, proxy, proc):
        assert sim.wait_for(lambda s: proxy.refused >= 2, 20)  # the client has noticed
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    p = json.loads(out)["prompts"][0]
    assert p["status"] == "cancelled" and p["error"]["message"] == "cancelled by you (terminated)"
    assert "could not cancel on the server: cannot connect" in err  # told it may still run there
