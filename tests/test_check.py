"""--dry-run's check: the problems a server's validation would find, in the shape of its 400."""

import json
from pathlib import Path

from comfy_cli import check, report, uiformat
from comfy_cli.sim.nodes import NODES
from comfy_cli.workflow import Workflow

DATA = Path(__file__).resolve().parent / "data" / "ui"
REAL_INFO = json.loads((DATA / "object_info.json").read_text())
MODEL_FILES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin", ".gguf")
SIM_INFO = {name: node.info(["cat.png"]) for name, node in NODES.items()}


def graph(**changes):
    g = {"1": {"class_type": "TestSteps", "inputs": {"steps": 5, "seconds_per_step": 0.0, "seed": 1},
               "_meta": {"title": "Sampler"}},
         "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    for key, value in changes.items():
        nid, name = key.split("__")
        if value is None:
            del g[nid]["inputs"][name]
        else:
            g[nid]["inputs"][name] = value
    return g


def lines(g, info=SIM_INFO):
    problems = check.check(g, info)
    return [problems["error"]["message"]] + report.node_error_lines(Workflow("wf.json", "wf", g),
                                                                   problems["node_errors"])


def test_a_good_graph_has_no_problems():
    assert check.check(graph(), SIM_INFO) == {}


def test_missing_required_input():
    assert lines(graph(**{"1__steps": None})) == [
        "Prompt outputs failed validation", "  node 1 (Sampler) input 'steps': Required input is missing"]


def test_numbers_outside_min_max_and_not_numbers():
    assert lines(graph(**{"1__steps": -1}))[1] == "  node 1 (Sampler) input 'steps': Value -1 smaller than min of 0"
    assert lines(graph(**{"1__seconds_per_step": 1e6}))[1] == \
        "  node 1 (Sampler) input 'seconds_per_step': Value 1000000.0 bigger than max of 3600.0"
    assert "Failed to convert an input value to a INT value: 'many'" in lines(graph(**{"1__steps": "many"}))[1]
    assert check.check(graph(**{"1__steps": "7"}), SIM_INFO) == {}  # the server converts it


def test_combo_value_not_in_choices():
    g = {"3": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "nope"}},
         "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}}}
    out = lines(g, REAL_INFO)
    assert out[1].startswith("  node 3 (KSamplerSelect) input 'sampler_name': Value not in list: 'nope' not in "
                             "['euler', ")
    g["3"]["inputs"]["sampler_name"] = "euler"
    assert check.check(g, REAL_INFO) == {}


def test_an_upload_input_is_left_to_the_server():
    g = {"1": {"class_type": "LoadImage", "inputs": {"image": "local.png"}},
         "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    assert check.check(g, SIM_INFO) == {}


def test_links_to_a_missing_node_a_missing_slot_or_the_wrong_type():
    assert lines(graph(**{"2__images": ["9", 0]}))[1] == \
        "  node 2 (SaveImage) input 'images': Bad linked input, node 9 does not exist"
    assert lines(graph(**{"2__images": ["1", 3]}))[1] == \
        "  node 2 (SaveImage) input 'images': Bad linked input, node 1 has no output 3"
    g = graph()
    g["3"] = {"class_type": "LoadImage", "inputs": {"image": "cat.png"}}
    g["2"]["inputs"]["images"] = ["3", 1]
    assert lines(g)[1] == ("  node 2 (SaveImage) input 'images': Return type mismatch between linked nodes: "
                           "received MASK, the input wants IMAGE")


def test_unknown_types_and_no_outputs():
    g = graph()
    g["5"] = {"class_type": "Mystery", "inputs": {}}
    assert lines(g) == ["node type not on the server: Mystery", "  node 5 (Mystery): Node type Mystery is not on "
                                                                 "the server"]
    del g["2"], g["5"]
    assert check.check(g, SIM_INFO)["error"]["message"] == "Prompt has no outputs"


def test_every_converted_reference_file_checks_only_model_files():
    # The reference server had no model files, so its combos of models are (nearly) empty; nothing
    # else the frontend built should be flagged, but for one node whose saved values the frontend
    # itself sent shifted by one (the file predates a new first input).
    for path in sorted((DATA / "expected").glob("*.api.json")):
        g = json.loads(path.read_text())
        for nid, info in check.check(g, REAL_INFO).get("node_errors", {}).items():
            if (path.name, nid) == ("api_rodin_gen2.api.json", "67"):
                assert [e["extra_info"]["input_name"] for e in info["errors"]] == \
                       ["Seed", "Material_Type", "Polygon_count"]
                continue
            for e in info["errors"]:
                model_file = str(e["details"]).split("'")[1]
                assert e["type"] == "value_not_in_list" and model_file.endswith(MODEL_FILES), (path.name, nid, e)
    doc = json.loads((DATA / "workflows" / "default.json").read_text())
    problems = check.check(uiformat.to_api(doc, REAL_INFO, "default"), REAL_INFO)
    assert list(problems["node_errors"]) == ["4"]  # the checkpoint: not on that server
