"""`submit`, `wait`, `cancel` and `queue`: real processes against the real simulator."""

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from comfy_cli import manifest
from comfy_cli.sim import Faults, SimServer
from test_run_e2e import EXAMPLES, cli, no_traceback, start, workflow

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def state(tmp_path, monkeypatch):
    """Each test has its own record of handles (the processes inherit the environment)."""
    folder = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(folder))
    monkeypatch.delenv("COMFY_TOKEN", raising=False)
    return folder


def submit(sim, *args):
    proc = cli("submit", *args, "--url", sim.url, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["prompts"]


def block(sim, tmp_path):
    """Another client's long prompt, so the ones queued after it wait (however slowly the machine
    starts the `wait` that is to follow them); `release()` interrupts it."""
    graph = json.loads(open(long_workflow(tmp_path, steps=6000, seed=99)).read())
    blocker = requests.post(sim.url + "/prompt", json={"prompt": graph, "client_id": "other"},
                            timeout=5).json()["prompt_id"]
    return lambda: requests.post(sim.url + "/interrupt", json={"prompt_id": blocker}, timeout=5)


def decode(handle):
    body = handle.split(":", 2)[2]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def history_status(sim, pid):
    entry = sim.history_entry(pid)
    return entry["status"]["status_str"] if entry else None


def long_workflow(tmp_path, steps=300, seed=1):
    return workflow(tmp_path, "steps", **{"1__steps": steps, "1__seed": seed})


def test_submit_then_wait_in_another_process_with_live_progress(sim, tmp_path):
    release = block(sim, tmp_path)
    started = time.monotonic()
    proc = cli("submit", long_workflow(tmp_path, steps=500), "--url", sim.url)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 10  # it does not wait for the prompt
    handles = proc.stdout.split()
    assert len(handles) == 1 and handles[0].startswith("comfy-cli:v1:")
    info = decode(handles[0])
    assert info["url"] == sim.url and info["name"] == "steps" and info["prompt_id"] in sim.submissions
    assert proc.stderr == f"1 prompt submitted to {sim.url}\n"
    waiting = start("wait", handles[0], "--progress", "lines")
    try:
        assert sim.wait_for(lambda s: info["client_id"] in s.clients(), 30)
        release()
        out, err = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
    waited = subprocess.CompletedProcess(waiting.args, waiting.returncode, out, err)
    assert waited.returncode == 0, waited.stderr
    assert "step progress is not available" not in waited.stderr
    assert "steps: Sampler 500/500 (50%)" in waited.stderr  # live step messages, on the handle's client id
    assert "steps: done" in waited.stderr
    assert waited.stdout.strip().startswith(sim.url + "/view?filename=steps_")
    no_traceback(waited)


def test_wait_after_the_prompt_ended_answers_from_history_at_once(sim, tmp_path):
    p, = submit(sim, workflow(tmp_path, "steps"))
    assert sim.wait_for(lambda s: history_status(s, p["prompt_id"]) == "success", 20)
    started = time.monotonic()
    proc = cli("wait", p["handle"], "--json", "--silence-check", "60")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 10  # not after the 60 s silence check
    doc = json.loads(proc.stdout)
    q, = doc["prompts"]
    assert q["status"] == "success" and q["prompt_id"] == p["prompt_id"] and q["name"] == "steps"
    assert q["nodes"]["total"] == 2  # the graph came from the server's history
    assert q["outputs"][0]["filename"].startswith("steps_")


def test_wait_saves_outputs_and_writes_junit(sim, tmp_path):
    p, = submit(sim, workflow(tmp_path, "steps"))
    out, report = tmp_path / "out", tmp_path / "junit.xml"
    proc = cli("wait", p["handle"], "--output-dir", str(out), "--junit", str(report))
    assert proc.returncode == 0, proc.stderr
    saved = proc.stdout.split()
    assert len(saved) == 1 and saved[0].startswith(str(out)) and open(saved[0], "rb").read(4) == b"\x89PNG"
    assert p["prompt_id"] in report.read_text()
    # Its manifest line, and an HTML report when asked for.
    (line,) = manifest.read(out / "manifest.jsonl")
    assert (line["index"], line["prompt_id"], line["status"]) == (0, p["prompt_id"], "success")
    assert line["outputs"][0]["path"] == os.path.basename(saved[0])
    page = tmp_path / "report.html"
    again = cli("wait", p["handle"], "--output-dir", str(tmp_path / "out2"), "--report", str(page))
    assert again.returncode == 0, again.stderr
    assert "1 succeeded" in page.read_text() and 'src="out2/' in page.read_text()


@pytest.mark.parametrize("how", ["prompt-id", "handle"])
def test_wait_on_an_unknown_prompt_is_lost(sim, how):
    pid = "00000000-0000-4000-8000-000000000000"
    arg = pid
    if how == "handle":
        doc = {"url": sim.url, "prompt_id": pid, "client_id": "11111111-1111-4111-8111-111111111111", "name": "x"}
        arg = "comfy-cli:v1:" + base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")
    proc = cli("wait", arg, "--url", sim.url, "--poll-interval", "0.2")
    assert proc.returncode == 4, proc.stderr
    assert "lost: the prompt is in neither the server's queue nor its history" in proc.stderr
    no_traceback(proc)


def test_wait_with_a_bare_prompt_id_polls(sim, tmp_path):
    p, = submit(sim, long_workflow(tmp_path, steps=100))
    proc = cli("wait", p["prompt_id"], "--url", sim.url, "--progress", "lines", "--poll-interval", "0.2")
    assert proc.returncode == 0, proc.stderr
    assert "step progress is not available (prompt ids carry no client id)" in proc.stderr
    assert "Sampler 75/100" not in proc.stderr and "steps: done" not in proc.stderr
    assert f"{p['prompt_id']}: done" in proc.stderr


def test_cancel_a_pending_prompt(sim, tmp_path):
    first, second = submit(sim, long_workflow(tmp_path, steps=2000), long_workflow(tmp_path, steps=2000, seed=2))
    assert sim.wait_for(lambda s: (s.running() or (None,))[0] == first["prompt_id"], 10)
    proc = cli("cancel", second["handle"])
    assert proc.returncode == 0, proc.stderr
    # (two files named steps.json: names are unique within a run, the second is steps(2))
    assert proc.stdout == f"steps(2) ({second['prompt_id']}): removed from the queue\n"
    assert requests.get(sim.url + "/queue", timeout=5).json()["queue_pending"] == []
    assert sim.running()[0] == first["prompt_id"]  # the running one was not touched
    again = cli("cancel", first["prompt_id"], "--url", sim.url)
    assert again.returncode == 0 and "interrupted on the server" in again.stdout
    assert sim.wait_for(lambda s: history_status(s, first["prompt_id"]) == "error", 10)


def test_cancel_a_running_prompt_leaves_another_clients_prompt_to_run(sim, tmp_path):
    mine, = submit(sim, long_workflow(tmp_path, steps=2000))
    assert sim.wait_for(lambda s: (s.running() or (None,))[0] == mine["prompt_id"], 10)
    other = start("run", workflow(tmp_path, "steps", **{"1__seed": 5}), "--url", sim.url, "--json")
    try:
        assert sim.wait_for(lambda s: len(s.submissions) == 2, 10)
        proc = cli("cancel", mine["handle"])
        assert proc.returncode == 0, proc.stderr
        assert "interrupted on the server" in proc.stdout
        out, err = other.communicate(timeout=30)
    finally:
        other.kill()
    assert other.returncode == 0, err
    assert json.loads(out)["prompts"][0]["status"] == "success"
    assert history_status(sim, mine["prompt_id"]) == "error"  # interrupted
    told = cli("cancel", mine["handle"])
    assert told.returncode == 1 and "nothing to cancel: it had already ended (interrupted)" in told.stdout


class HeldAtTheEnd(Faults):
    """A prompt that has run its last node (execution_success is sent) stays `running` in
    /queue until the test lets it write its history: the window in which an interrupt comes
    too late to stop it."""

    def __init__(self):
        self.at_end = threading.Event()
        self.interrupted = threading.Event()
        self.release = threading.Event()

    def after_http(self, request, response):
        if request.method == "POST" and request.path.endswith("/interrupt"):
            self.interrupted.set()
        return None

    async def history_delay(self, prompt_id):
        self.at_end.set()
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
        return 0


def _cancel_at_the_end(tmp_path, *args, release_after_interrupt=True):
    faults = HeldAtTheEnd()
    with SimServer(faults=faults) as sim:
        p, = submit(sim, workflow(tmp_path, "steps"))
        try:
            assert faults.at_end.wait(20)  # its last node is done; /queue still shows it running
            proc = start("cancel", p["handle"], *args)
            assert faults.interrupted.wait(20)  # the interrupt was sent: too late to take effect
            if release_after_interrupt:
                faults.release.set()
            out, err = proc.communicate(timeout=20)
        finally:
            faults.release.set()
            proc.kill()
        assert sim.wait_for(lambda s: history_status(s, p["prompt_id"]) == "success", 10)  # it was not cancelled
        return p, sim.url, proc, out, err


def test_cancel_of_a_prompt_that_ends_first_reports_its_real_end(tmp_path):
    p, url, proc, out, err = _cancel_at_the_end(tmp_path)
    assert proc.returncode == 1, err
    said = f"steps ({p['prompt_id']}): not cancelled: it ended before the interrupt took effect (success); outputs: "
    assert out.startswith(said + f"{url}/view?filename=steps_00001_.png") and out.count("\n") == 1, out
    assert "interrupted" not in out


def test_cancel_says_interrupt_sent_until_the_server_confirms(tmp_path):
    p, url, proc, out, err = _cancel_at_the_end(tmp_path, "--timeout", "0.3", release_after_interrupt=False)
    assert proc.returncode == 3, err
    assert out == (f"steps ({p['prompt_id']}): interrupt sent, not confirmed within 0.3 s (it is still in the "
                   "server's queue)\n")


def test_cancel_an_unknown_prompt(sim):
    proc = cli("cancel", "0b8f9a52-1c1e-4f57-9f0a-3a7e2a1d2c11", "--url", sim.url)
    assert proc.returncode == 4 and "not known to the server" in proc.stdout


def test_submit_piped_into_wait(sim, tmp_path):
    cmd = (f"{sys.executable} -m comfy_cli submit {workflow(tmp_path, 'steps')} {workflow(tmp_path, 'two_samplers')} "
           f"--url {sim.url} | {sys.executable} -m comfy_cli wait - --json")
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=40)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [(p["name"], p["status"]) for p in doc["prompts"]] == [("steps", "success"), ("two_samplers", "success")]


def _wait_in_background(sim, tmp_path, *args):
    release = block(sim, tmp_path)
    p, = submit(sim, long_workflow(tmp_path, steps=600))
    proc = start("wait", p["handle"], "--json", *args, sigint=signal.SIG_DFL)
    client_id = decode(p["handle"])["client_id"]
    # Its socket is open (so it is following), then ours runs.
    assert sim.wait_for(lambda s: client_id in s.clients(), 30)
    release()
    assert sim.wait_for(lambda s: (s.running() or ("",))[0] == p["prompt_id"], 15)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    return p, proc, out, err


def test_ctrl_c_during_wait_leaves_the_prompt_running(sim, tmp_path):
    p, proc, out, err = _wait_in_background(sim, tmp_path)
    assert proc.returncode == 130, err
    q, = json.loads(out)["prompts"]
    assert q["status"] == "detached" and "stopped waiting: left running on the server" in err
    assert sim.running() is not None and sim.running()[0] == p["prompt_id"]
    assert sim.wait_for(lambda s: history_status(s, p["prompt_id"]) == "success", 30)


def test_wait_cancel_and_ctrl_c_cancels(sim, tmp_path):
    p, proc, out, err = _wait_in_background(sim, tmp_path, "--cancel")
    assert proc.returncode == 130, err
    q, = json.loads(out)["prompts"]
    assert q["status"] == "cancelled" and "interrupted on the server" in q["error"]["message"]
    assert sim.wait_for(lambda s: history_status(s, p["prompt_id"]) == "error", 10)


@pytest.mark.parametrize("bad", ["comfy-cli:v1:!!!", "comfy-cli:v1:e30", "comfy-cli:v9:abc", "has space", "../x",
                                 "steps.json", "not-a-known-prompt", "12345",
                                 "comfy-cli:v1:" + base64.urlsafe_b64encode(json.dumps(
                                     {"url": "http://u:pw@h:1", "prompt_id": "a", "client_id": "b"}).encode())
                                 .decode()])
@pytest.mark.parametrize("command", ["wait", "cancel"])
def test_malformed_handles_are_refused(bad, command):
    proc = cli(command, bad, "--url", "http://127.0.0.1:9")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and bad[:40] in lines[0], proc.stderr
    no_traceback(proc)


def test_handles_carry_no_secret(tmp_path):
    from comfy_cli.sim import SimServer

    token = "tok-very-secret-123"
    with SimServer(token=token) as server:
        proc = cli("submit", workflow(tmp_path, "steps"), "--url", server.url, "--token", token, "--json")
        assert proc.returncode == 0, proc.stderr
        assert token not in proc.stdout + proc.stderr
        p, = json.loads(proc.stdout)["prompts"]
        assert token not in json.dumps(decode(p["handle"]))
        record = (tmp_path / "state" / "comfy-cli" / "handles").read_text()
        assert token not in record and p["handle"] in record
        denied = cli("wait", p["handle"])
        assert denied.returncode == 4 and "access denied" in denied.stderr
        waited = cli("wait", p["handle"], env={"COMFY_TOKEN": token})
        assert waited.returncode == 0, waited.stderr
        assert token not in waited.stdout + waited.stderr


def test_queue_json_marks_prompts_submitted_here(sim, tmp_path):
    mine = submit(sim, long_workflow(tmp_path, steps=2000), long_workflow(tmp_path, steps=2000, seed=2))
    assert sim.wait_for(lambda s: (s.running() or (None,))[0] == mine[0]["prompt_id"], 10)
    graph = json.loads(open(workflow(tmp_path, "steps", **{"1__seed": 9})).read())
    theirs = requests.post(sim.url + "/prompt", json={"prompt": graph, "client_id": "someone-else"},
                           timeout=5).json()["prompt_id"]
    proc = cli("queue", "--url", sim.url, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "comfy-cli.queue/1" and doc["server"] == sim.url
    running, = doc["running"]
    assert running["prompt_id"] == mine[0]["prompt_id"] and running["submitted_here"]
    assert running["handle"] == mine[0]["handle"] and running["name"] == "steps"
    assert [(r["prompt_id"], r["submitted_here"]) for r in doc["pending"]] == \
        [(mine[1]["prompt_id"], True), (theirs, False)]
    assert "someone-else" not in proc.stdout  # other clients' ids are not shown
    text = cli("queue", "--url", sim.url)
    assert text.returncode == 0 and "queue: 1 running, 2 pending" in text.stdout
    assert f"pending  {theirs}  2 nodes\n" in text.stdout
    cli("cancel", *(p["handle"] for p in mine))
    requests.post(sim.url + "/queue", json={"clear": True}, timeout=5)


def test_submit_with_a_rejected_workflow_prints_the_others_handles(sim, tmp_path):
    bad = tmp_path / "unknown.json"
    bad.write_text(json.dumps({"1": {"class_type": "NoSuchNode", "inputs": {}}}))
    proc = cli("submit", str(bad), workflow(tmp_path, "steps"), "--url", sim.url)
    assert proc.returncode == 2
    assert "NoSuchNode does not exist" in proc.stderr
    handle, = proc.stdout.split()
    assert decode(handle)["prompt_id"] == sim.submissions[0]


def test_wait_never_uploads_local_files_named_in_the_servers_graph(sim, tmp_path):
    # The graph `wait` reads from the server names examples/input.png, which exists here: only
    # `submit` (which sends the workflow) may upload it, never `wait`.
    root = Path(__file__).resolve().parents[1]
    run = [sys.executable, "-m", "comfy_cli"]
    sent = subprocess.run(run + ["submit", "examples/load_image.json", "--url", sim.url, "--set",
                                 "Sampler.seconds_per_step=0"], cwd=root, capture_output=True, text=True, timeout=30)
    assert sent.returncode == 0, sent.stderr
    assert "uploaded examples/input.png as input.png" in sent.stderr
    pid = decode(sent.stdout.strip())["prompt_id"]
    assert sim.wait_for(lambda s: history_status(s, pid) == "success", 20)
    (sim.input_dir / "input.png").unlink()
    # The server's graph says "input.png"; in examples/ that names a local file.
    waited = subprocess.run(run + ["wait", sent.stdout.strip()], cwd=root / "examples", capture_output=True,
                            text=True, timeout=30)
    assert waited.returncode == 0, waited.stderr
    assert "uploaded" not in waited.stderr and not (sim.input_dir / "input.png").exists()


def test_titles_from_the_servers_graph_are_printed_without_control_characters(sim, tmp_path):
    from comfy_cli import handles

    # A title line is only seen live, not in /history: ours waits until `wait` is connected.
    release = block(sim, tmp_path)
    graph = json.loads(open(long_workflow(tmp_path, steps=20)).read())
    graph["1"]["_meta"]["title"] = "Evil\x1b[2J\x07title"
    pid = requests.post(sim.url + "/prompt", json={"prompt": graph, "client_id": "someone"},
                        timeout=5).json()["prompt_id"]
    waiting = start("wait", handles.Handle(sim.url, pid, "someone", "evil").text(), "--progress", "lines")
    try:
        assert sim.wait_for(lambda s: "someone" in s.clients(), 30)
        release()
        _, err = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
    proc = subprocess.CompletedProcess(waiting.args, waiting.returncode, "", err)
    assert proc.returncode == 0, proc.stderr
    assert "evil: node 1 Evil?[2J?title" in proc.stderr
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr


def test_submit_converts_ui_format_files_and_applies_set_and_count(sim, tmp_path):
    root = Path(__file__).resolve().parents[1]
    proc = cli("submit", str(root / "examples" / "ui_steps.json"), "--url", sim.url, "--count", "2",
               "--set", "Sampler.seconds_per_step=0", "--json")
    assert proc.returncode == 0, proc.stderr
    prompts = json.loads(proc.stdout)["prompts"]
    assert [p["name"] for p in prompts] == ["ui_steps#1", "ui_steps#2"]
    assert len({p["client_id"] for p in prompts}) == 1  # one submit, one client id: one socket for `wait`
    waited = cli("wait", *(p["handle"] for p in prompts), "--json")
    assert waited.returncode == 0, waited.stderr
    assert [p["status"] for p in json.loads(waited.stdout)["prompts"]] == ["success", "success"]


@pytest.mark.parametrize("args, stdin, message", [
    (["-"], "", "'-': no handles or prompt ids on stdin"),
    (["-", "-"], "abc", "'-' (stdin) can be given only once"),
    (["comfy-cli:v1:" + base64.urlsafe_b64encode(b'{"url":"http://a:1","prompt_id":"p","client_id":"c"}').decode(),
      "comfy-cli:v1:" + base64.urlsafe_b64encode(b'{"url":"http://b:1","prompt_id":"q","client_id":"c"}').decode()],
     None, "the handles name different servers (http://a:1, http://b:1)"),
])
def test_wait_refuses_what_it_cannot_follow(args, stdin, message):
    proc = cli("wait", *args, stdin=stdin)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"comfy-cli: error: {message}: give each server's handles to a "
                                                "separate command" if "servers" in message
                                                else f"comfy-cli: error: {message}"]


def _closed_port():
    with socket.socket() as s:  # a loopback port with nobody listening
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_submit_to_an_unreachable_server_ends_at_once_as_run_does(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    path = workflow(tmp_path, "steps")
    started = time.monotonic()
    cli("submit", "--help")
    startup = time.monotonic() - started  # what the machine takes to start the command at all
    started = time.monotonic()
    proc = cli("submit", path, "--url", url, timeout=10)
    took = time.monotonic() - started
    ran = cli("run", path, "--url", url)
    assert proc.returncode == 4 and ran.returncode == 4, proc.stderr
    assert proc.stderr == ran.stderr and proc.stderr.startswith(f"comfy-cli: error: cannot connect to {url}")
    assert proc.stderr.count("\n") == 1  # that one line
    assert proc.stdout == ""  # no handle: nothing was sent
    assert took < startup + 1.0


def test_sigterm_during_submit_exits_143():
    # A server that takes the connection and never answers: `submit` is stuck checking it.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(25)  # a starved machine may take long to start the command
        proc = start("submit", str(EXAMPLES / "steps.json"), "--url", f"http://127.0.0.1:{server.getsockname()[1]}")
        try:
            conn, _ = server.accept()  # it is talking to the server now
            with conn:
                proc.send_signal(signal.SIGTERM)
                out, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert proc.returncode == 143, err
    assert out == "" and "Traceback" not in err
