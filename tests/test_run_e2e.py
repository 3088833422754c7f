"""The real `comfy-cli` process against the real simulator on a loopback port."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.timeout(40)


def cli(*args, stdin=None, timeout=30, env=None):
    """Run comfy-cli as a separate process; return CompletedProcess (text)."""
    full_env = dict(os.environ)
    full_env.pop("COMFY_URL", None)  # only what a test sets
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "comfy_cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def start(*args, sigint=None):
    """Start comfy-cli in the background; `sigint`, if given, is the SIGINT disposition it starts with
    (else it inherits pytest's, which is SIG_IGN when pytest itself runs as a shell's background job)."""
    env = dict(os.environ)
    env.pop("COMFY_URL", None)
    preexec = None if sigint is None else (lambda: signal.signal(signal.SIGINT, sigint))
    return subprocess.Popen([sys.executable, "-m", "comfy_cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=preexec)


def workflow(tmp_path, name, **changes):
    """A copy of an example with faster steps (and any input changes: node__input=value)."""
    graph = json.loads((EXAMPLES / f"{name}.json").read_text())
    for node in graph.values():
        if "seconds_per_step" in node["inputs"]:
            node["inputs"]["seconds_per_step"] = 0.01
    for key, value in changes.items():
        node, inp = key.split("__")
        graph[node]["inputs"][inp] = value
    folder = tmp_path / f"w{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    path = folder / f"{name}.json"
    path.write_text(json.dumps(graph))
    return str(path)


def no_traceback(proc):
    assert "Traceback" not in proc.stderr, proc.stderr


def test_success_prints_output_urls(sim, tmp_path):
    proc = cli("run", workflow(tmp_path, "steps"), "--url", sim.url)
    assert proc.returncode == 0, proc.stderr
    urls = proc.stdout.split()
    assert len(urls) == 1 and urls[0].startswith(sim.url + "/view?filename=steps_00001_.png")
    body = requests.get(urls[0], timeout=5).content
    assert body.startswith(b"\x89PNG\r\n\x1a\n")
    # Progress went to stderr as lines (stderr is not a terminal here).
    assert "steps: started" in proc.stderr
    assert "steps: Sampler 20/20 (50%)" in proc.stderr  # the whole prompt: 1 node of 2 done
    assert "steps: done" in proc.stderr
    no_traceback(proc)


def test_json_summary(sim, tmp_path):
    proc = cli("run", workflow(tmp_path, "two_samplers"), workflow(tmp_path, "fail"), "--url", sim.url, "--json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)  # stdout is exactly one JSON document
    assert doc["schema"] == "comfy-cli.run/1" and doc["exit_code"] == 1
    ok, bad = doc["prompts"]
    assert ok["status"] == "success" and ok["nodes"] == {"total": 3, "executed": 3, "cached": 0}
    assert ok["outputs"][0]["filename"] == "two_samplers_00001_.png"
    assert ok["timings"]["run_s"] > 0 and ok["error"] is None
    # Per-node timings, the client's view: every node ran, none longer than the whole run.
    assert [(t["node"], t["class_type"], t["title"], t["cached"]) for t in ok["node_timings"]] == [
        ("1", "TestSteps", "First pass", False), ("2", "TestSteps", "Refiner", False),
        ("3", "SaveImage", "SaveImage", False)]
    assert all(0 <= t["seconds"] <= ok["timings"]["run_s"] for t in ok["node_timings"])
    assert [t["node"] for t in bad["node_timings"]] == ["1"]
    assert bad["status"] == "failed" and bad["error"]["node_id"] == "1"
    assert bad["error"]["message"] == "TestFail: deliberate failure (at step 3 of 10)"
    assert sim.submissions == [ok["prompt_id"], bad["prompt_id"]]


def test_failing_node(sim, tmp_path):
    proc = cli("run", workflow(tmp_path, "fail"), "--url", sim.url)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "failed at node 1 (TestFail): RuntimeError: TestFail: deliberate failure (at step 3 of 10)" in proc.stderr
    assert "File " not in proc.stderr  # the server's traceback only with --verbose
    verbose = cli("run", workflow(tmp_path, "fail", **{"1__seed": 9}), "--url", sim.url, "-v")
    assert verbose.returncode == 1 and "File " in verbose.stderr


def test_rejected_by_validation(sim, tmp_path):
    graph = json.loads((EXAMPLES / "steps.json").read_text())
    del graph["1"]["inputs"]["steps"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(graph))
    proc = cli("run", str(path), "--url", sim.url)
    assert proc.returncode == 2
    assert "rejected by the server: Prompt outputs failed validation" in proc.stderr
    assert "node 1 (Sampler) input 'steps': Required input is missing" in proc.stderr
    no_traceback(proc)


def test_unknown_node_type_rejected(sim, tmp_path):
    path = tmp_path / "unknown.json"
    path.write_text(json.dumps({"1": {"class_type": "NoSuchNode", "inputs": {}}}))
    proc = cli("run", str(path), "--url", sim.url)
    assert proc.returncode == 2
    assert "NoSuchNode does not exist" in proc.stderr


def test_rejected_and_good_in_one_run(sim, tmp_path):
    path = tmp_path / "unknown.json"
    path.write_text(json.dumps({"1": {"class_type": "NoSuchNode", "inputs": {}}}))
    proc = cli("run", str(path), workflow(tmp_path, "steps"), "--url", sim.url, "--json")
    assert proc.returncode == 2  # rejected (2) outranks success (0)
    statuses = [p["status"] for p in json.loads(proc.stdout)["prompts"]]
    assert statuses == ["rejected", "success"]


def test_cached_rerun(sim, tmp_path):
    path = workflow(tmp_path, "steps")
    first = cli("run", path, "--url", sim.url, "--json")
    second = cli("run", path, "--url", sim.url, "--json")
    assert first.returncode == second.returncode == 0
    a, b = json.loads(first.stdout)["prompts"][0], json.loads(second.stdout)["prompts"][0]
    assert b["nodes"] == {"total": 2, "executed": 0, "cached": 2}
    assert [o["filename"] for o in b["outputs"]] == [o["filename"] for o in a["outputs"]]


def test_two_prompts_queued_at_once(sim, tmp_path):
    proc = cli("run", workflow(tmp_path, "steps"), workflow(tmp_path, "steps", **{"1__seed": 7}), "--url", sim.url,
               "--json")
    assert proc.returncode == 0, proc.stderr
    prompts = json.loads(proc.stdout)["prompts"]
    assert [p["status"] for p in prompts] == ["success", "success"]
    names = [p["outputs"][0]["filename"] for p in prompts]
    assert names == ["steps_00001_.png", "steps_00002_.png"]
    assert len(set(sim.submissions)) == 2


def test_interrupt_from_outside(sim, tmp_path):
    path = workflow(tmp_path, "steps", **{"1__steps": 500})
    proc = start("run", path, "--url", sim.url)
    try:
        assert sim.wait_for(lambda s: s.running() is not None, 25)  # (a starved machine starts slowly)
        requests.post(sim.url + "/interrupt", json={}, timeout=5)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert "interrupted on the server at node 1" in err


def test_binary_preview_frames_are_skipped(sim, tmp_path):
    proc = cli("run", workflow(tmp_path, "preview"), "--url", sim.url, "--json", "--include-temp")
    assert proc.returncode == 0, proc.stderr
    p = json.loads(proc.stdout)["prompts"][0]
    assert p["ui"]["2"]["text"][0] == "hello from TestLog"
    assert p["outputs"][0]["type"] == "temp"
    plain = cli("run", workflow(tmp_path, "preview"), "--url", sim.url)
    assert plain.returncode == 0 and plain.stdout == ""  # temp previews are not listed by default


def test_stdin_workflow(sim):
    graph = (EXAMPLES / "steps.json").read_text().replace("0.05", "0.01")
    proc = cli("run", "-", "--url", sim.url, stdin=graph)
    assert proc.returncode == 0, proc.stderr
    assert "stdin: done" in proc.stderr


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("", "the file is empty"),
    ('{"1": {"class_type": "A", "inputs": {}},\n "2": }', "invalid JSON at line 2 column"),
    ("[1, 2]", "expected a JSON object of nodes, got an array"),
    ('{"nodes": [], "links": []}', "UI-format workflow has no nodes"),
    ('{"1": {"inputs": {}}}', "node '1': missing 'class_type'"),
    ('{"1": {"class_type": "A", "inputs": []}}', "'inputs' must be an object"),
    ('{"1": {"class_type": "A", "inputs": {"x": ["9", 0]}}}', "links to node '9'"),
])
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "wf.json"
    if content is not None:
        path.write_text(content)
    started = time.monotonic()
    proc = cli("run", str(path), "--url", "http://127.0.0.1:9")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and message in lines[0], proc.stderr
    no_traceback(proc)
    assert time.monotonic() - started < 10


def test_unreachable_server(tmp_path):
    with socket.socket() as s:  # a loopback port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = cli("run", workflow(tmp_path, "steps"), "--url", f"http://127.0.0.1:{port}")
    assert proc.returncode == 4
    assert proc.stderr.strip().splitlines() == [f"comfy-cli: error: cannot connect to http://127.0.0.1:{port}: is "
                                                "ComfyUI running there? set --url or COMFY_URL"]
    status = cli("status", "--url", f"http://127.0.0.1:{port}")
    assert status.returncode == 4 and "cannot connect" in status.stderr


def test_bad_url_is_usage_error(tmp_path):
    proc = cli("run", workflow(tmp_path, "steps"), "--url", "ftp://x")
    assert proc.returncode == 2 and "--url" in proc.stderr
    no_traceback(proc)


def test_deadline(sim, tmp_path):
    proc = cli("run", workflow(tmp_path, "steps", **{"1__steps": 1000}), "--url", sim.url, "--deadline", "1",
               "--json")
    assert proc.returncode == 3
    p = json.loads(proc.stdout)["prompts"][0]
    assert p["status"] == "timeout" and "deadline" in p["error"]["message"]
    # Our prompt was interrupted on the server, not left running.
    assert sim.wait_for(lambda s: s.running() is None, 10)


@pytest.mark.parametrize("sigint", [signal.SIG_DFL, signal.SIG_IGN], ids=["default", "ignored-by-the-shell"])
def test_sigint_cancels_our_prompts(sim, tmp_path, sigint):
    # SIG_IGN: how a shell script's `comfy-cli run x &` starts it; `kill -INT` must still cancel.
    long = workflow(tmp_path, "steps", **{"1__steps": 1000})
    queued = workflow(tmp_path, "steps", **{"1__steps": 1000, "1__seed": 3})
    proc = start("run", long, queued, "--url", sim.url, "--json", sigint=sigint)
    try:
        assert sim.wait_for(lambda s: s.running() is not None and len(s.submissions) == 2, 25)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert [p["status"] for p in json.loads(out)["prompts"]] == ["cancelled", "cancelled"]
    assert sim.wait_for(lambda s: s.running() is None, 10)
    assert requests.get(sim.url + "/queue", timeout=5).json()["queue_pending"] == []


def test_sigterm_exit_code(sim, tmp_path):
    proc = start("run", workflow(tmp_path, "steps", **{"1__steps": 1000}), "--url", sim.url, "--no-cancel")
    try:
        assert sim.wait_for(lambda s: s.running() is not None, 25)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 143
    assert "left running on the server" in err
    assert sim.running() is not None  # --no-cancel left it alone


def test_status_command(sim):
    proc = cli("status", "--url", sim.url)
    assert proc.returncode == 0
    assert "reachable, ComfyUI 0.3.64" in proc.stdout and "queue: 0 running, 0 pending" in proc.stdout


def test_simulate_flag_needs_no_server(tmp_path):
    proc = cli("run", "--simulate", workflow(tmp_path, "steps"))
    assert proc.returncode == 0, proc.stderr
    assert "/view?filename=steps_00001_.png" in proc.stdout


def test_url_path_prefix_is_kept(sim, tmp_path):
    # The simulator serves every route under /api too, like ComfyUI behind a proxy prefix.
    proc = cli("run", workflow(tmp_path, "steps"), "--url", sim.url + "/api/", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["prompts"][0]["outputs"][0]["url"].startswith(sim.url + "/api/view?")


def test_version_and_help():
    assert cli("--version").stdout.strip().startswith("comfy-cli ")
    helptext = cli("run", "--help").stdout
    assert "Exit codes" in helptext and "--deadline" in helptext


def test_partly_invalid_workflow_is_a_warning(sim, tmp_path):
    # Two outputs, one fed by a node missing an input: the server drops that output, runs the other.
    graph = json.loads((EXAMPLES / "steps.json").read_text())
    graph["3"] = {"class_type": "TestSteps", "inputs": {"seconds_per_step": 0.0, "seed": 1}, "_meta": {"title": "Broken"}}
    graph["4"] = {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "never"}}
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(graph).replace("0.05", "0.01"))
    proc = cli("run", str(path), "--url", sim.url, "--json")
    assert proc.returncode == 0, proc.stderr
    assert "warning: the server dropped some outputs that failed validation" in proc.stderr
    assert "node 3 (Broken) input 'steps': Required input is missing" in proc.stderr
    p = json.loads(proc.stdout)["prompts"][0]
    assert p["warnings"][0]["type"] == "node_errors" and "3" in p["warnings"][0]["node_errors"]
    assert [o["filename"] for o in p["outputs"]] == ["steps_00001_.png"]


def test_local_file_in_a_load_node_is_uploaded(sim):
    # examples/load_image.json names examples/input.png, a file on this machine: it is uploaded.
    proc = subprocess.run([sys.executable, "-m", "comfy_cli", "run", "examples/load_image.json", "--url", sim.url,
                           "--set", "Sampler.seconds_per_step=0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "uploaded examples/input.png as input.png" in proc.stderr
    assert (sim.input_dir / "input.png").read_bytes() == (EXAMPLES / "input.png").read_bytes()
