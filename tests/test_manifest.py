"""--output-dir DIR/manifest.jsonl: one line per prompt, appended as each ends (issue 18, item 8)."""

import json
import os

import pytest

from comfy_cli import events as ev
from comfy_cli import manifest
from comfy_cli import tracker as tr
from comfy_cli.dispatch import Attempt
from comfy_cli.errors import UsageError
from comfy_cli.workflow import Workflow
from test_run_e2e import cli, start, workflow

pytestmark = pytest.mark.timeout(60)

GRAPH = {"1": {"class_type": "KSampler", "inputs": {"cfg": 6, "seed": 12}, "_meta": {"title": "Sampler"}},
         "2": {"class_type": "SaveImage", "inputs": {}}}


def ended(status=tr.SUCCESS, values=None, name="txt2img[cfg=6]"):
    p = tr.Prompt("pid-1", Workflow("flows/txt2img.json", name, GRAPH, values=values or {}))
    for e in [ev.Started(1.0, "pid-1", 1000), ev.Executing(1.0, "pid-1", "1", None),
              ev.Executing(3.5, "pid-1", "2", None),
              ev.Executed(3.75, "pid-1", "2", None, {"images": [{"filename": "a.png", "subfolder": "x",
                                                                "type": "output"}]})]:
        p.handle(e)
    if status == tr.SUCCESS:
        p.handle(ev.Succeeded(4.0, "pid-1", 4000))
    else:
        p.handle(ev.Failed(4.0, "pid-1", "2", "SaveImage", "disk <full>", "OSError", (), 4000))
    return p


ATTEMPT = Attempt(7, 1, "http://gpu:8188")


def view_url(prompt, item):
    return f"{ATTEMPT.server}/view?filename={item['filename']}"


def test_a_line_holds_what_made_the_prompt_and_what_came_of_it(tmp_path):
    out = str(tmp_path / "out")
    key = ("2", "a.png", "x", "output")
    doc = manifest.record(ended(values={"KSampler.cfg": 6, "KSampler.seed": 12}), 7, "run-1",
                          {key: os.path.join(out, "x", "a.png")}, out, view_url, attempt=ATTEMPT)
    assert doc["schema"] == "comfy-cli.manifest/1" and doc["run"] == "run-1"
    assert (doc["index"], doc["name"], doc["workflow"]) == (7, "txt2img[cfg=6]", "flows/txt2img.json")
    assert doc["values"] == {"KSampler.cfg": 6, "KSampler.seed": 12}
    assert (doc["prompt_id"], doc["server"], doc["status"], doc["message"]) == \
        ("pid-1", "http://gpu:8188", "success", None)
    assert doc["timings"]["run_s"] == 3.0 and doc["timings"]["server_run_ms"] == 3000
    assert [(t["node"], t["title"], t["seconds"]) for t in doc["node_timings"]] == [("1", "Sampler", 2.5),
                                                                                   ("2", "SaveImage", 0.25)]
    assert doc["outputs"] == [{"node": "2", "filename": "a.png", "subfolder": "x", "type": "output",
                               "url": "http://gpu:8188/view?filename=a.png", "path": "x/a.png"}]
    json.dumps(doc)  # plain JSON


def test_a_failed_prompt_has_its_message_without_the_name_and_its_error_object():
    doc = manifest.record(ended(tr.FAILED), 0, "r", {}, None, view_url)
    assert doc["status"] == "failed"
    assert doc["message"] == "failed at node 2 (SaveImage): OSError: disk <full>"
    assert doc["error"]["exception_type"] == "OSError" and doc["error"]["node_id"] == "2"
    assert doc["outputs"][0]["path"] is None  # not saved


def test_the_file_is_appended_to_and_a_line_cut_short_by_a_kill_is_dropped(tmp_path):
    path = tmp_path / manifest.NAME
    path.write_bytes(b'{"prompt_id": "a", "index": 0}\n{"prompt_id": "b", "ind')
    m = manifest.Manifest(str(tmp_path))
    assert set(m.earlier) == {"a"}
    m.write({"prompt_id": "c", "index": 2, "values": {"x": "<é>"}})
    m.close()
    assert [d["prompt_id"] for d in manifest.read(path)] == ["a", "c"]
    assert path.read_bytes().endswith(b"\n") and m.problem is None


def test_a_write_that_fails_is_kept_as_the_problem_and_nothing_more_is_tried(tmp_path):
    m = manifest.Manifest(str(tmp_path))
    m._fh.close()  # as a full disk would: the next write raises
    m.write({"prompt_id": "a"})
    assert m.problem and m.problem.startswith(f"cannot write {tmp_path / manifest.NAME}")
    first = m.problem
    m.write({"prompt_id": "b"})
    assert m.problem == first


def test_a_folder_where_it_cannot_be_written_is_a_usage_error(tmp_path):
    (tmp_path / manifest.NAME).mkdir()
    with pytest.raises(UsageError, match="cannot write manifest.jsonl"):
        manifest.Manifest(str(tmp_path))
    other = tmp_path / "other"
    other.mkdir()
    (other / manifest.NAME).symlink_to("/dev/null")  # (never read from a device: /dev/zero would never end)
    with pytest.raises(UsageError, match="manifest.jsonl is not a regular file"):
        manifest.Manifest(str(other))


def test_a_run_writes_one_line_per_prompt_with_its_files(sim, tmp_path):
    out = tmp_path / "out"
    ok = workflow(tmp_path, "two_samplers")
    bad = workflow(tmp_path, "fail")
    proc = cli("run", ok, bad, "--url", sim.url, "--output-dir", str(out), "--json")
    assert proc.returncode == 1, proc.stderr
    lines = manifest.read(out / "manifest.jsonl")
    summary = json.loads(proc.stdout)["prompts"]
    assert sorted((d["index"], d["name"], d["workflow"], d["status"]) for d in lines) == \
        [(0, "two_samplers", ok, "success"), (1, "fail", bad, "failed")]
    by_name = {d["name"]: d for d in lines}
    good = by_name["two_samplers"]
    assert good["prompt_id"] == summary[0]["prompt_id"] and good["server"] == sim.url
    assert good["values"] == {} and good["run"] and good["run"] == by_name["fail"]["run"]
    (output,) = good["outputs"]
    assert output["path"] == "two_samplers_00001_.png" and (out / output["path"]).is_file()
    assert [t["title"] for t in good["node_timings"]] == ["First pass", "Refiner", "SaveImage"]
    assert by_name["fail"]["message"].startswith("failed at node 1 (TestFail): RuntimeError: TestFail")


def test_each_line_is_written_as_its_prompt_ends_not_at_the_end_of_the_run(sim, tmp_path):
    out = tmp_path / "out"
    quick = workflow(tmp_path, "steps", **{"1__steps": 1})
    slow = workflow(tmp_path, "steps", **{"1__steps": 100000, "1__seconds_per_step": 0.01})
    proc = start("run", quick, slow, "--url", sim.url, "--output-dir", str(out), "--progress", "none")
    try:
        path = out / "manifest.jsonl"
        assert sim.wait_for(lambda s: path.exists() and path.read_bytes().endswith(b"\n"), 30)
        assert proc.poll() is None  # still running the slow one
        (line,) = manifest.read(path)
        assert line["name"] == "steps" and line["status"] == "success"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    # Cancelled on SIGTERM: the slow one's line says so.
    assert [d["status"] for d in manifest.read(out / "manifest.jsonl")] == ["success", "cancelled"]
