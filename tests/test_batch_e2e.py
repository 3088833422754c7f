"""Batch use from scripts and CI: overrides, sweeps, downloads, uploads, events, JUnit."""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import requests

from test_run_e2e import EXAMPLES, cli, no_traceback, start, workflow

pytestmark = pytest.mark.timeout(60)


def graph_of(sim, pid):
    """The graph the server ran (its history entry lands a moment after the client is done)."""
    assert sim.wait_for(lambda s: pid in s.history_ids(), 10)
    return sim.history_entry(pid)["prompt"][2]


def test_batch_of_three_files_times_four(sim, tmp_path):
    junit = tmp_path / "report.xml"
    files = [workflow(tmp_path, "steps"), workflow(tmp_path, "two_samplers"), workflow(tmp_path, "fail")]
    proc = cli("run", *files, "--count", "4", "--url", sim.url, "--json", "--junit", str(junit))
    assert proc.returncode == 1, proc.stderr
    prompts = json.loads(proc.stdout)["prompts"]
    assert len(prompts) == 12 and len(set(sim.submissions)) == 12
    statuses = [p["status"] for p in prompts]
    assert statuses.count("success") == 8 and statuses.count("failed") == 4
    assert [p["name"] for p in prompts[:4]] == ["steps#1", "steps#2", "steps#3", "steps#4"]
    # Seeds moved apart: nothing was served from the cache, every copy wrote its own file.
    assert all(p["nodes"]["cached"] == 0 for p in prompts)
    assert len({o["filename"] for p in prompts for o in p["outputs"]}) == 8
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "12" and suite.get("failures") == "4" and suite.get("errors") == "0"
    cases = suite.findall("testcase")
    for case, p in zip(cases, prompts):
        assert case.get("name") == p["name"]
        assert case.find("properties/property").get("value") == p["prompt_id"]
        failure = case.find("failure")
        assert (failure is None) == (p["status"] == "success")
        if failure is not None:
            assert "TestFail: deliberate failure" in failure.get("message")
        assert float(case.get("time")) > 0


def test_same_seed_keeps_copies_equal(sim, tmp_path):
    proc = cli("run", workflow(tmp_path, "steps"), "--count", "3", "--same-seed", "--url", sim.url, "--json")
    assert proc.returncode == 0
    prompts = json.loads(proc.stdout)["prompts"]
    assert [p["nodes"]["cached"] for p in prompts] == [0, 2, 2]  # the server's cache answered the copies


def test_set_by_id_title_and_class(sim, tmp_path):
    path = workflow(tmp_path, "two_samplers")
    proc = cli("run", path, "--url", sim.url, "--json",
               "--set", "1.steps=3",  # by id
               "--set", "Refiner.steps=4",  # by _meta.title
               "--set", "SaveImage.filename_prefix=swept",  # by a class_type that occurs once
               "--set", "Refiner.seed=abc")  # not JSON: passed on as the string "abc"
    assert proc.returncode == 2  # the server cannot make an INT of "abc"
    assert "node 2 (Refiner) input 'seed'" in proc.stderr
    proc = cli("run", path, "--url", sim.url, "--json", "--set", "1.steps=3", "--set", "Refiner.steps=4",
               "--set", "SaveImage.filename_prefix=swept")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["prompts"][0]["outputs"][0]["filename"] == "swept_00001_.png"
    graph = graph_of(sim, sim.submissions[-1])
    assert graph["1"]["inputs"]["steps"] == 3 and graph["2"]["inputs"]["steps"] == 4


@pytest.mark.parametrize("spec, message", [
    ("Nope.steps=3", "no node 'Nope' in any workflow; candidates:"),
    ("TestSteps.steps=3", "class_type 'TestSteps' matches nodes 1, 2; name one by id"),
    ("Refiner.stepz=3", "node 2 (Refiner) has no input 'stepz'; it has: image, seconds_per_step, seed, steps"),
    ("steps=3", "expected NODE.INPUT=VALUE"),
    ("1.steps", "expected NODE.INPUT=VALUE"),
])
def test_set_errors_refuse_the_whole_batch(sim, tmp_path, spec, message):
    proc = cli("run", workflow(tmp_path, "two_samplers"), workflow(tmp_path, "steps"), "--url", sim.url,
               "--set", spec)
    assert proc.returncode == 2
    assert message in proc.stderr and "--set" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    no_traceback(proc)
    assert sim.submissions == []  # nothing was submitted


def test_set_applies_to_every_workflow_that_has_the_node(sim, tmp_path):
    proc = cli("run", workflow(tmp_path, "steps"), workflow(tmp_path, "fail"), "--url", sim.url, "--json",
               "--set", "Save.filename_prefix=x", "--set", "SaveImage.filename_prefix=y")
    assert proc.returncode == 1
    graphs = [graph_of(sim, pid) for pid in sim.submissions]
    # "Save" is a title in steps.json only; class SaveImage occurs once in each file.
    assert graphs[0]["2"]["inputs"]["filename_prefix"] == "y"
    assert graphs[1]["2"]["inputs"]["filename_prefix"] == "y"
    proc = cli("run", workflow(tmp_path, "steps", **{"1__seed": 9}), workflow(tmp_path, "fail", **{"1__seed": 9}),
               "--url", sim.url, "--json", "--set", "Save.filename_prefix=x")
    graphs = [graph_of(sim, pid) for pid in sim.submissions[2:]]
    assert graphs[0]["2"]["inputs"]["filename_prefix"] == "x"
    assert graphs[1]["2"]["inputs"]["filename_prefix"] == "fail"


def test_downloads_match_view_and_never_overwrite(sim, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "steps_00001_.png").write_bytes(b"precious")
    path = workflow(tmp_path, "steps")
    # Three copies with the same seed: the server reports the same file name three times.
    proc = cli("run", path, "--count", "3", "--same-seed", "--url", sim.url, "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    saved = proc.stdout.split()
    assert saved == [str(out / "steps_00001__1.png"), str(out / "steps_00001__2.png"),
                     str(out / "steps_00001__3.png")]
    assert (out / "steps_00001_.png").read_bytes() == b"precious"  # never overwritten
    view = requests.get(sim.url + "/view", params={"filename": "steps_00001_.png", "type": "output"}).content
    for name in saved:
        assert open(name, "rb").read() == view
    assert not [f for f in os.listdir(out) if f.endswith(".part")]  # no temporary files left
    again = cli("run", path, "--url", sim.url, "--output-dir", str(out), "--overwrite")
    assert again.stdout.split() == [str(out / "steps_00001_.png")]
    assert (out / "steps_00001_.png").read_bytes() == view


def test_hostile_output_names_write_nothing_outside(sim, tmp_path):
    out = tmp_path / "deep" / "out"
    absolute = str(tmp_path / "abs-comfy.png")  # an absolute name the server might send (this test's own)
    proc = start("run", workflow(tmp_path, "steps", **{"1__steps": 300}), "--url", sim.url, "--output-dir",
                 str(out), "--json")
    try:
        assert sim.wait_for(lambda s: s.running() is not None and s.clients(), 15)
        pid, client = sim.submissions[0], sim.clients()[0]
        for name, sub in [("../../x.png", ""), ("x.png", "../.."), (absolute, ""),
                          ("ok\x00.png", ""), ("a" * 5000 + ".png", "")]:
            sim.inject(json.dumps({"type": "executed", "data": {
                "node": "2", "prompt_id": pid, "output": {"images": [
                    {"filename": name, "subfolder": sub, "type": "output"}]}}}), client)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 4  # asked-for files could not be saved
    assert "tries to leave the folder" in stderr and "is an absolute path" in stderr
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "deep" / "x.png").exists()
    assert not os.path.exists(absolute)
    for root, _dirs, files in os.walk(tmp_path):
        for f in files:
            full = os.path.join(root, f)
            assert full.startswith(str(out)) or full.endswith(".json"), full
    summary = json.loads(stdout)["prompts"][0]
    assert summary["status"] == "success"
    assert any(o["path"] and o["path"].endswith("steps_00001_.png") for o in summary["outputs"])


def test_upload_round_trip(sim, tmp_path):
    image = tmp_path / "cat.png"
    image.write_bytes((EXAMPLES / "input.png").read_bytes())
    graph = json.loads((EXAMPLES / "load_image.json").read_text())
    graph["1"]["inputs"]["image"] = "placeholder.png"
    path = tmp_path / "load.json"
    path.write_text(json.dumps(graph))
    proc = cli("run", str(path), "--url", sim.url, "--json", "--input", f"Load.image={image}")
    assert proc.returncode == 0, proc.stderr
    assert (sim.input_dir / "cat.png").read_bytes() == image.read_bytes()
    assert graph_of(sim, sim.submissions[0])["1"]["inputs"]["image"] == "cat.png"
    missing = cli("run", str(path), "--url", sim.url, "--input", "Load.image=/nope/cat.png")
    assert missing.returncode == 2 and "/nope/cat.png: no such file" in missing.stderr


def test_events_stream(sim, tmp_path):
    proc = cli("run", workflow(tmp_path, "steps"), workflow(tmp_path, "fail"), "--url", sim.url, "--events")
    assert proc.returncode == 1
    lines = [json.loads(line) for line in proc.stdout.splitlines()]  # every line is JSON
    kinds = [line["event"] for line in lines]
    assert kinds[-1] == "summary" and kinds.count("summary") == 1
    assert lines[-1]["schema"] == "comfy-cli.run/1" and lines[-1]["exit_code"] == 1
    for kind in ("submitted", "started", "node", "progress", "output", "finished"):
        assert kind in kinds, kind
    finished = {line["name"]: line["status"] for line in lines if line["event"] == "finished"}
    assert finished == {"steps": "success", "fail": "failed"}
    timed = {line["name"]: [(t["node"], t["title"]) for t in line["node_timings"]]
             for line in lines if line["event"] == "finished"}
    assert timed == {"steps": [("1", "Sampler"), ("2", "Save")], "fail": [("1", "TestFail")]}
    first = [line["event"] for line in lines if line.get("name") == "steps"]
    assert first.index("output") < first.index("finished")
    times = [line["t"] for line in lines]
    assert times == sorted(times)


def test_json_and_events_conflict(tmp_path):
    proc = cli("run", workflow(tmp_path, "steps"), "--json", "--events")
    assert proc.returncode == 2 and "--json and --events" in proc.stderr


def test_junit_refuses_to_overwrite(tmp_path):
    report = tmp_path / "r.xml"
    report.write_text("keep")
    proc = cli("run", workflow(tmp_path, "steps"), "--junit", str(report))
    assert proc.returncode == 2 and "exists; add --overwrite" in proc.stderr
    assert report.read_text() == "keep"


def test_many_prompts_in_lines_mode(sim, tmp_path):
    proc = cli("run", workflow(tmp_path, "steps", **{"1__steps": 2}), "--count", "25", "--url", sim.url)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.split()) == 25
    assert proc.stderr.count(": done") == 25


def test_sweep_example_script(tmp_path):
    env = dict(os.environ, SIMULATE="1", COUNT="3", OUT=str(tmp_path / "sweep"),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    env.pop("COMFY_URL", None)
    proc = subprocess.run(["bash", str(EXAMPLES / "sweep.sh"), str(EXAMPLES / "steps.json"),
                           "--set", "Sampler.seconds_per_step=0.01"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = (tmp_path / "sweep" / "manifest.tsv").read_text().splitlines()
    assert len(rows) == 4 and len({row.split("\t")[1] for row in rows[1:]}) == 3  # three different images
