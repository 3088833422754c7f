"""UI-format files from the command line: run, convert, --dry-run, against the simulator."""

import json
import shutil
from pathlib import Path

import pytest

from comfy_cli.sim import SimServer
from comfy_cli.sim.faults import Faults
from test_run_e2e import EXAMPLES, cli, no_traceback, workflow

pytestmark = pytest.mark.timeout(60)

DATA = Path(__file__).resolve().parent / "data" / "ui"
INFO_FILE = str(DATA / "object_info.json")


def ui_example(tmp_path, **widgets):
    """A copy of examples/ui_steps.json with quick steps (and any node's widgets_values replaced)."""
    doc = json.loads((EXAMPLES / "ui_steps.json").read_text())
    for node in doc["nodes"]:
        if node["type"] == "TestSteps":
            node["widgets_values"][1] = 0.01
        if str(node["id"]) in widgets:
            node["widgets_values"] = widgets[str(node["id"])]
    path = tmp_path / "ui_steps.json"
    path.write_text(json.dumps(doc))
    return str(path)


def graph_of(sim, pid):
    """The graph the server ran (its history entry lands a moment after the client is done)."""
    assert sim.wait_for(lambda s: pid in s.history_ids(), 10)
    return sim.history_entry(pid)["prompt"][2]


def test_run_a_ui_file_on_the_simulator(sim, tmp_path):
    proc = cli("run", ui_example(tmp_path), "--url", sim.url, "--json", "--set", "Sampler.steps=3")
    assert proc.returncode == 0, proc.stderr
    p = json.loads(proc.stdout)["prompts"][0]
    assert p["status"] == "success" and p["nodes"] == {"total": 2, "executed": 2, "cached": 0}
    assert p["outputs"][0]["filename"].startswith("ui_steps_")
    ran = graph_of(sim, p["prompt_id"])
    assert ran["1"]["inputs"] == {"steps": 3, "seconds_per_step": 0.01, "seed": 42}  # seed from the primitive
    assert ran["2"]["inputs"]["images"] == ["1", 0]  # through the reroute
    assert ran["2"]["_meta"]["title"] == "Save Image"


def test_count_and_set_work_on_the_converted_graph(sim, tmp_path):
    proc = cli("run", ui_example(tmp_path), "--url", sim.url, "--json", "--count", "2",
               "--set", "Sampler.steps=2", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    prompts = json.loads(proc.stdout)["prompts"]
    seeds = [graph_of(sim, p["prompt_id"])["1"]["inputs"]["seed"] for p in prompts]
    assert seeds == [42, 43] and [p["name"] for p in prompts] == ["ui_steps#1", "ui_steps#2"]


def test_simulate_runs_the_example_as_shipped():
    proc = cli("run", "--simulate", str(EXAMPLES / "ui_steps.json"), "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    assert "ui_steps_00001_.png" in proc.stdout


class CountingFaults(Faults):
    """Counts GET /object_info (the hook runs on the simulator's thread; a list append is safe)."""

    def __init__(self):
        self.object_info = []

    def on_http(self, request):
        if request.path.endswith("/object_info"):
            self.object_info.append(request.path)
        return None


def test_object_info_is_fetched_once_and_only_for_ui_files(tmp_path):
    faults = CountingFaults()
    with SimServer(faults=faults) as server:
        ui = ui_example(tmp_path)
        api = workflow(tmp_path, "steps")
        assert cli("run", ui, ui, api, "--url", server.url, "--progress", "none").returncode == 0
        assert len(faults.object_info) == 1
        assert cli("run", api, "--url", server.url, "--progress", "none", "--count", "2").returncode == 0
        assert len(faults.object_info) == 1  # API-format only: never asked


def test_missing_node_types_are_refused_before_anything_is_sent(sim, tmp_path):
    path = tmp_path / "audio.json"
    shutil.copy(DATA / "workflows" / "audio_stable_audio_example.json", path)
    proc = cli("run", str(path), "--url", sim.url)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"comfy-cli: error: {path}: node types not on the server: ")
    assert "CLIPLoader (node 10)" in lines[0]  # the simulator has no such node either
    assert sim.submissions == []
    no_traceback(proc)


def test_unreachable_server_for_object_info(tmp_path):
    proc = cli("run", ui_example(tmp_path), "--url", "http://127.0.0.1:9")
    assert proc.returncode == 4 and "cannot connect" in proc.stderr
    no_traceback(proc)


# -- convert -------------------------------------------------------------------------------------

def test_convert_to_stdout_from_a_server(sim, tmp_path):
    proc = cli("convert", ui_example(tmp_path), "--url", sim.url)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "1": {"inputs": {"steps": 20, "seconds_per_step": 0.01, "seed": 42}, "class_type": "TestSteps",
              "_meta": {"title": "Sampler"}},
        "2": {"inputs": {"filename_prefix": "ui_steps", "images": ["1", 0]}, "class_type": "SaveImage",
              "_meta": {"title": "Save Image"}}}
    assert proc.stderr == ""


def test_convert_a_reference_file_with_a_saved_object_info():
    proc = cli("convert", str(DATA / "workflows" / "default.json"), "--object-info", INFO_FILE)
    assert proc.returncode == 0, proc.stderr
    expected = json.loads((DATA / "expected" / "default.api.json").read_text())
    assert json.loads(proc.stdout) == expected


def test_convert_to_a_file_and_refusing_to_overwrite(tmp_path):
    out = tmp_path / "api.json"
    src = str(DATA / "workflows" / "lora.json")
    assert cli("convert", src, "--object-info", INFO_FILE, "-o", str(out)).returncode == 0
    first = json.loads(out.read_text())
    assert {n["class_type"] for n in first.values()} >= {"LoraLoader", "KSampler", "SaveImage"}
    assert [p.name for p in tmp_path.iterdir()] == ["api.json"]  # no temporary file left
    out.write_text("mine")
    again = cli("convert", src, "--object-info", INFO_FILE, "-o", str(out))
    assert again.returncode == 2 and "the file exists; add --overwrite" in again.stderr
    assert out.read_text() == "mine"
    assert cli("convert", src, "--object-info", INFO_FILE, "-o", str(out), "--overwrite").returncode == 0
    assert json.loads(out.read_text()) == first


def test_convert_from_stdin_and_api_format_passes_through():
    doc = (DATA / "workflows" / "default.json").read_text()
    proc = cli("convert", "-", "--object-info", INFO_FILE, stdin=doc)
    assert proc.returncode == 0 and json.loads(proc.stdout)["3"]["class_type"] == "KSampler"
    api = (EXAMPLES / "steps.json").read_text()
    proc = cli("convert", "-", "--url", "http://127.0.0.1:9", stdin=api)  # no server needed
    assert proc.returncode == 0 and json.loads(proc.stdout) == json.loads(api)


@pytest.mark.parametrize("args, message", [
    (["--object-info", "/nonexistent.json"], "--object-info /nonexistent.json: no such file"),
    (["--object-info", INFO_FILE, "--url", "http://x"], "--url and --object-info cannot be used together"),
])
def test_convert_usage_errors(args, message):
    proc = cli("convert", str(DATA / "workflows" / "default.json"), *args)
    assert proc.returncode == 2 and message in proc.stderr
    no_traceback(proc)


def test_convert_refuses_a_malformed_file_in_one_line(tmp_path):
    doc = json.loads((DATA / "workflows" / "default.json").read_text())
    doc["links"][0][1] = 999
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(doc))
    proc = cli("convert", str(path), "--object-info", INFO_FILE)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"comfy-cli: error: {path}: node 3: input 'model' is linked to node 999, which is not in the file"]


# -- --dry-run -----------------------------------------------------------------------------------

def test_dry_run_good_submits_nothing(sim, tmp_path):
    proc = cli("run", ui_example(tmp_path), workflow(tmp_path, "steps"), "--url", sim.url, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "ui_steps: ok (2 nodes; dry run, not submitted)" in proc.stderr
    assert "steps: ok" in proc.stderr and proc.stdout == ""
    assert sim.submissions == []


def test_dry_run_bad_prints_like_a_rejection(sim, tmp_path):
    proc = cli("run", ui_example(tmp_path), "--url", sim.url, "--dry-run", "--set", "Sampler.steps=-5",
               "--set", "Sampler.seed=\"x\"")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "ui_steps: would be rejected: Prompt outputs failed validation",
        "  node 1 (Sampler) input 'steps': Value -5 smaller than min of 0",
        "  node 1 (Sampler) input 'seed': Failed to convert an input value to a INT value: 'x'"]
    assert sim.submissions == []
    # The real server says the same about it.
    real = cli("run", ui_example(tmp_path), "--url", sim.url, "--set", "Sampler.steps=-5")
    assert real.returncode == 2 and "node 1 (Sampler) input 'steps': Value -5 smaller than min of 0" in real.stderr


def test_dry_run_with_simulate():
    proc = cli("run", "--simulate", "--dry-run", str(EXAMPLES / "ui_steps.json"), str(EXAMPLES / "fail.json"))
    assert proc.returncode == 0, proc.stderr
    unknown = DATA.parent / "workflows" / "invalid_unknown_node.json"
    bad = cli("run", "--simulate", "--dry-run", str(unknown))
    assert bad.returncode == 2 and "would be rejected: node type not on the server: NoSuchNodeType" in bad.stderr


# -- what the current page sends ---------------------------------------------------------------------

DATA_2026 = Path(__file__).resolve().parent / "data" / "ui-2026"


def test_convert_keeps_the_first_widget_values_with_a_note(tmp_path):
    src = DATA_2026 / "workflows" / "api_tripo_text_to_model.json"
    proc = cli("convert", str(src), "--object-info", str(DATA_2026 / "object_info.json"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads((DATA_2026 / "expected" / "api_tripo_text_to_model.api.json").read_text())
    assert proc.stderr.splitlines() == [
        f"comfy-cli: note: {src}: node 3 (TripoTextToModelNode): 15 widget values for 12 widget slots; kept the "
        "first 12 and dropped the rest, as the page does (the file was saved for another version of the node?)"]


def test_a_required_input_left_empty_by_a_bypass_converts_with_a_warning_and_never_runs(sim, tmp_path):
    doc = json.loads((EXAMPLES / "ui_steps.json").read_text())
    next(n for n in doc["nodes"] if n["type"] == "TestSteps")["mode"] = 4  # bypassed, no IMAGE input to pass on
    path = tmp_path / "gap.json"
    path.write_text(json.dumps(doc))
    gap = ("node 2 (SaveImage): required input 'images' is left empty: its source, node 1 (TestSteps), is bypassed "
           "and has no IMAGE input to pass on")
    proc = cli("convert", str(path), "--url", sim.url)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"2": {"inputs": {"filename_prefix": "ui_steps"}, "class_type": "SaveImage",
                                             "_meta": {"title": "Save Image"}}}
    assert proc.stderr.splitlines() == [f"comfy-cli: warning: {path}: {gap}; this is what the page would send, and "
                                        "the server will refuse it"]
    run = cli("run", str(path), "--url", sim.url)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"comfy-cli: error: {path}: {gap}; un-bypass that node or link the input, "
                                       "then run it again"]
    assert sim.submissions == []
    no_traceback(run)
