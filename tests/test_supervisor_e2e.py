"""End to end, the wrong results of the old runner that the supervisor fixes (issue H)."""

import asyncio
import json
import os

import pytest
from aiohttp import web

from comfy_cli import manifest
from comfy_cli.sim import Faults, SimServer
from test_faults_e2e import FAST, LostFirstAnswer, check_outputs, check_submitted_once, run_json
from test_run_e2e import cli, workflow


class LostAnswerWhileFlapping(LostFirstAnswer):
    """The first POST's answer lost, and the socket cut every few frames, so the catch-up
    rounds run while that submission is being resolved."""

    def __init__(self, every=7):
        self.frames = 0
        self.every = every

    def on_ws_send(self, client_id, payload):
        self.frames += 1
        return "abort" if self.frames % self.every == 0 else "send"


def test_a_lost_post_answer_while_the_socket_flaps_runs_once_and_succeeds(tmp_path):
    faults = LostAnswerWhileFlapping()
    with SimServer(faults=faults) as sim:
        files = [workflow(tmp_path, "steps", **{"1__steps": 40}) for _ in range(3)]
        proc, doc = run_json(["run", *files, "--url", sim.url, "--json", *FAST], timeout=90)
        assert proc.returncode == 0, proc.stderr
        assert [p["status"] for p in doc["prompts"]] == ["success"] * 3
        assert "websocket lost" in proc.stderr
        assert faults.posts == 3  # the lost answer was not sent again
        check_submitted_once(sim, doc)
        check_outputs(sim, doc)


class SlowView(Faults):
    """Every /view download takes `seconds`."""

    def __init__(self, seconds):
        self.seconds = seconds

    async def on_http(self, request):
        if request.path.endswith("/view"):
            await asyncio.sleep(self.seconds)
        return None


def test_slow_downloads_do_not_make_a_timeout_while_progress_arrives(tmp_path):
    with SimServer(faults=SlowView(2.5)) as sim:
        quick = workflow(tmp_path, "steps", **{"1__steps": 2})
        slow = workflow(tmp_path, "steps", **{"1__steps": 300})  # about 3 s of steady progress
        out = tmp_path / "out"
        proc, doc = run_json(["run", quick, slow, "--url", sim.url, "--json", "--timeout", "1.5",
                              "--output-dir", str(out)], timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert [p["status"] for p in doc["prompts"]] == ["success", "success"]
        assert all(o["path"] for p in doc["prompts"] for o in p["outputs"])
        assert len(saved_files(out)) == 2


class FailingView(Faults):
    """The first `fails` /view downloads answer 502 (a gateway hiccup)."""

    def __init__(self, fails):
        self.fails = fails
        self.views = 0

    status = 502

    def on_http(self, request):
        if request.path.endswith("/view"):
            self.views += 1
            if self.views <= self.fails:
                return web.Response(status=self.status, text="no")
        return None


class CutView(FailingView):
    """The first `fails` /view answers promise 100 kB and break off after 1 kB."""

    async def on_http(self, request):
        if request.path.endswith("/view"):
            self.views += 1
            if self.views <= self.fails:
                resp = web.StreamResponse(headers={"Content-Length": "100000", "Content-Type": "image/png"})
                await resp.prepare(request)
                await resp.write(b"x" * 1000)
                request.transport.abort()
                return resp
        return None


class MissingView(FailingView):
    status = 404


def saved_files(out):
    """What --output-dir holds besides its manifest."""
    return sorted(set(os.listdir(out)) - {"manifest.jsonl"})


def download_run(sim, tmp_path):
    """One short prompt with --output-dir: (the folder, the process, its --json document)."""
    out = tmp_path / "out"
    proc, doc = run_json(["run", workflow(tmp_path, "steps", **{"1__steps": 2}), "--url", sim.url, "--json",
                          "--output-dir", str(out)], timeout=60)
    return out, proc, doc


@pytest.mark.parametrize("faults", [FailingView(2), CutView(2)], ids=["502", "cut mid-way"])
def test_a_failed_download_is_tried_again_and_saved(tmp_path, faults):
    with SimServer(faults=faults) as sim:
        out, proc, doc = download_run(sim, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert sim.faults.views == 3
        (output,) = doc["prompts"][0]["outputs"]
        assert output["path"] and saved_files(out) == [os.path.basename(output["path"])]
        assert os.path.getsize(output["path"]) != 1000  # the whole file, not the part before the cut
        assert "download failed" not in proc.stderr


def test_a_missing_file_is_not_downloaded_again(tmp_path):
    with SimServer(faults=MissingView(100)) as sim:
        out, proc, doc = download_run(sim, tmp_path)
        assert proc.returncode == 4, proc.stderr
        assert sim.faults.views == 1  # a 404 will not change a moment later
        assert "HTTP 404" in proc.stderr and saved_files(out) == []


def test_a_download_that_keeps_failing_is_exit_4_with_the_reason(tmp_path):
    with SimServer(faults=FailingView(100)) as sim:
        out, proc, doc = download_run(sim, tmp_path)
        assert proc.returncode == 4, proc.stderr
        assert sim.faults.views == 3  # the first try and backoff.DOWNLOAD's two retries
        assert "steps: download failed: " in proc.stderr and "HTTP 502 Bad Gateway" in proc.stderr
        assert "0 files" in proc.stderr.splitlines()[-1]
        assert doc["prompts"][0]["outputs"][0]["path"] is None and saved_files(out) == []
        # The manifest says the file is missing.
        (line,) = manifest.read(out / "manifest.jsonl")
        assert line["outputs"][0]["path"] is None and line["status"] == "success"


def test_nan_in_a_workflow_file_is_refused_before_anything_is_sent(tmp_path, sim):
    path = tmp_path / "nan.json"
    path.write_text('{"1": {"class_type": "TestSteps", "inputs": {"steps": 2, "cfg": NaN}},'
                    ' "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}')
    proc = cli("run", str(path), "--url", sim.url)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"comfy-cli: error: {path}: node '1': input 'cfg' holds NaN or Infinity, which JSON does not allow"]
    assert sim.submissions == []


def test_nan_from_set_ends_that_prompt_at_once_and_never_loops(tmp_path, sim):
    proc, doc = run_json(["run", workflow(tmp_path, "steps"), "--set", "1.seed=NaN", "--url", sim.url, "--json"])
    assert proc.returncode == 2, proc.stderr
    prompt = doc["prompts"][0]
    assert prompt["status"] == "rejected" and prompt["error"]["type"] == "invalid_workflow"
    assert prompt["error"]["message"].endswith("steps.json: node '1': input 'seed' holds NaN or Infinity, "
                                               "which JSON does not allow")
    assert prompt["error"]["message"] in proc.stderr
    assert sim.submissions == []


def test_unreachable_server_lists_every_prompt_unsent_in_json(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = cli("run", workflow(tmp_path, "steps"), workflow(tmp_path, "fail"), "--url", f"http://127.0.0.1:{port}",
               "--json")
    assert proc.returncode == 4
    doc = json.loads(proc.stdout)
    assert [p["status"] for p in doc["prompts"]] == ["error", "error"]
    assert all(p["error"]["message"].startswith("not submitted: cannot connect") for p in doc["prompts"])
    assert proc.stderr.strip().splitlines() == [f"comfy-cli: error: cannot connect to http://127.0.0.1:{port}: is "
                                                "ComfyUI running there? set --url or COMFY_URL"]
