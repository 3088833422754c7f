"""--journal: a batch taken up again after the CLI was killed with SIGKILL (issue J)."""

import json
import os
import random
import signal
import subprocess
import sys

from comfy_cli import manifest
from comfy_cli.sim import SimServer
from test_run_e2e import cli, workflow


def seeds_run(*sims):
    """Every prompt each simulator ran: the seed of its sampler (one per batch item)."""
    found = []
    for s in sims:
        for pid in s.history_ids():
            found.append(s.history_entry(pid)["prompt"][2]["1"]["inputs"]["seed"])
    return found


def test_killed_at_random_points_then_resumed_runs_every_prompt_exactly_once(tmp_path):
    rng = random.Random(7)
    path = workflow(tmp_path, "steps", **{"1__steps": 8})
    journal, out = tmp_path / "batch.journal", tmp_path / "out"
    with SimServer() as a, SimServer() as b:
        args = [sys.executable, "-m", "comfy_cli", "run", path, "--count", "50", "--url", a.url, "--url", b.url,
                "--journal", str(journal), "--output-dir", str(out), "--json", "--progress", "none"]
        done = 0
        for _ in range(3):
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                target = done + rng.randint(3, 12)
                assert a.wait_for(lambda s: len(s.history_ids()) + len(b.history_ids()) >= target
                                  or proc.poll() is not None, 30)
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            done = len(a.history_ids()) + len(b.history_ids())
        final = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stderr
        doc = json.loads(final.stdout)
        assert len({p["name"] for p in doc["prompts"]}) == 50
        assert all(p["status"] == "success" for p in doc["prompts"])
        assert a.wait_for(lambda s: len(s.history_ids()) + len(b.history_ids()) >= 50, 10)
        seeds = seeds_run(a, b)
        assert len(seeds) == 50 and len(set(seeds)) == 50, "a prompt ran twice, or not at all"
        # One file per prompt, and no temporary file a killed run left behind mid-download.
        files = set(os.listdir(out)) - {"manifest.jsonl"}
        assert len(files) == 50, sorted(files)
        # The last run's summary lists every prompt's file, those saved by the killed runs too.
        paths = {os.path.basename(o["path"]) for p in doc["prompts"] for o in p["outputs"]}
        assert paths == files
        # The manifest: one line per prompt over the four runs (each appended only what it
        # added), every file in it by its path in the folder.
        lines = manifest.read(out / "manifest.jsonl")
        assert sorted(line["index"] for line in lines) == list(range(50))
        assert {o["path"] for line in lines for o in line["outputs"]} == files
        assert all(line["status"] == "success" for line in lines)


def test_a_journal_of_another_batch_is_refused(sim, tmp_path):
    journal = tmp_path / "j"
    first = cli("run", workflow(tmp_path, "steps", **{"1__steps": 1}), "--url", sim.url, "--journal", str(journal))
    assert first.returncode == 0, first.stderr
    other = cli("run", workflow(tmp_path, "steps", **{"1__steps": 2}), "--url", sim.url, "--journal", str(journal))
    assert other.returncode == 2
    assert other.stderr.strip() == (f"comfy-cli: error: --journal {journal}: it records another batch (other files, "
                                    "options or servers); use a new journal file")
    assert len(sim.submissions) == 1


def test_a_journal_that_cannot_be_written_is_refused_before_anything_is_sent(sim, tmp_path):
    for bad, message in ((tmp_path, "is a directory"), (tmp_path / "no" / "j", "cannot write")):
        proc = cli("run", workflow(tmp_path, "steps"), "--url", sim.url, "--journal", str(bad))
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert sim.submissions == []


def test_a_finished_batch_run_again_with_its_journal_sends_nothing(sim, tmp_path):
    journal = tmp_path / "j"
    args = ["run", workflow(tmp_path, "steps", **{"1__steps": 1}), "--count", "3", "--url", sim.url, "--journal",
            str(journal), "--json"]
    first = cli(*args, "--output-dir", str(tmp_path / "out"))
    assert first.returncode == 0, first.stderr
    again = cli(*args, "--output-dir", str(tmp_path / "out"))
    assert again.returncode == 0, again.stderr
    assert [p["status"] for p in json.loads(again.stdout)["prompts"]] == ["success"] * 3
    assert len(sim.submissions) == 3
    # The summary of the run that sent nothing still lists every output and where it was saved.
    for before, after in zip(json.loads(first.stdout)["prompts"], json.loads(again.stdout)["prompts"]):
        assert after["outputs"] == before["outputs"] and after["ui"] == before["ui"]
        assert after["outputs"][0]["path"] and os.path.exists(after["outputs"][0]["path"])
    assert again.stderr.strip().splitlines()[-1].startswith("3 prompts: 3 succeeded, 3 files")
    assert sorted(os.listdir(tmp_path / "out")) == ["manifest.jsonl", "steps_00001_.png", "steps_00002_.png",
                                                    "steps_00003_.png"]
    # The manifest got its three lines from the first run; the second added nothing.
    assert [line["index"] for line in manifest.read(tmp_path / "out" / "manifest.jsonl")] == [0, 1, 2]


def test_a_manifest_line_the_killed_run_did_not_write_is_written_by_the_resumed_run(sim, tmp_path):
    journal, out = tmp_path / "j", tmp_path / "out"
    args = ["run", workflow(tmp_path, "steps", **{"1__steps": 1}), "--count", "3", "--url", sim.url, "--journal",
            str(journal), "--output-dir", str(out)]
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    path = out / "manifest.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[2][:40])  # killed: line 2 never written, line 3 cut short
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert len(sim.submissions) == 3
    after = manifest.read(path)
    assert sorted(line["index"] for line in after) == [0, 1, 2]
    assert path.read_bytes().startswith(lines[0]) and path.read_bytes().endswith(b"\n")
    assert all(line["status"] == "success" and line["outputs"][0]["path"] for line in after)



def test_the_journal_never_holds_a_token_the_server_echoes(tmp_path):
    from aiohttp import web

    from comfy_cli.sim import Faults

    token = "s3cret-token-for-the-journal"

    class Echo(Faults):
        # A hostile server that echoes the Authorization header back in its error message.
        def on_http(self, request):
            if request.path == "/prompt" and request.method == "POST":
                return web.json_response({"error": {"type": "x", "message": "bad " + request.headers.get(
                    "Authorization", ""), "details": request.headers.get("Authorization", ""), "extra_info": {}},
                    "node_errors": {}}, status=400)
            return None

    journal = tmp_path / "batch.journal"
    with SimServer(token=token, faults=Echo()) as sim:
        proc = cli("run", workflow(tmp_path, "steps"), "--url", sim.url, "--token", token, "--journal", str(journal))
    assert proc.returncode == 2 and "rejected by the server: bad ***" in proc.stderr
    text = journal.read_text()
    assert token not in text
    end = [json.loads(line) for line in text.splitlines() if '"end"' in line]
    assert end[0]["status"] == "rejected" and end[0]["error"]["message"] == "bad ***"


def test_each_attempt_is_journaled_with_its_item_try_and_server_and_a_resumed_run_keeps_them(sim, tmp_path):
    # (the dispatcher's Attempt record, not the prompt, carries the item, the try and the server)
    journal = tmp_path / "j"
    args = ("run", workflow(tmp_path, "flaky"), "--url", sim.url, "--retry", "1", "--journal", str(journal), "--json")
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    lines = [json.loads(text) for text in journal.read_text().splitlines()[1:]]
    said = {(x["event"], x["item"], x["attempt"], x["server"]) for x in lines if x["event"] != "output"}
    assert said == {(event, 0, n, sim.url) for event in ("submit", "end") for n in (1, 2)}
    assert len(lines) - sum(x["event"] == "output" for x in lines) == 4
    again = cli(*args)  # taken up: the item ended in the first run, on its second attempt
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert [(p["attempt"], p["server"], p["status"]) for p in doc["prompts"]] == [(2, sim.url, "success")]
    assert len(sim.submissions) == 2
