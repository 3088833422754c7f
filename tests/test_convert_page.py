"""UI-format conversion as the current page (frontend 1.58.1) does it: its own results, exactly,
then one test per rule that changed since 1.27 (titles, _meta, subgraph ids, extra values, gaps)."""

import copy
import json
from pathlib import Path

import pytest

from comfy_cli import batch, uiformat, workflow
from comfy_cli.errors import UsageError
from comfy_cli.uilabels import builtin_label
from test_convert import INFO, INNER, OUTER, Doc, _patch_subgraph, _type, chain, convert, refused

DATA = Path(__file__).resolve().parent / "data" / "ui-2026"
INFO_2026 = json.loads((DATA / "object_info.json").read_text())
GIVEN = [line for line in (DATA / "GIVEN.txt").read_text().splitlines() if line.strip()]


def test_every_template_is_here():
    assert len(GIVEN) == 45
    assert sorted(p.name for p in (DATA / "workflows").glob("*.json")) == sorted(f"{n}.json" for n in GIVEN)


@pytest.mark.parametrize("name", GIVEN)
def test_matches_what_the_page_sends_exactly(name):
    doc = json.loads((DATA / "workflows" / f"{name}.json").read_text())
    expected = json.loads((DATA / "expected" / f"{name}.api.json").read_text())
    got = uiformat.convert(doc, INFO_2026, name)
    assert got.gaps == []
    # Text, not dicts: 1 and 1.0 are equal in Python but not the same JSON.
    assert json.dumps(got.graph, sort_keys=True, indent=1) == json.dumps(expected, sort_keys=True, indent=1)


def test_extra_widget_values_in_the_tripo_templates_are_noted():
    doc = json.loads((DATA / "workflows" / "api_tripo_text_to_model.json").read_text())
    notes = uiformat.convert(doc, INFO_2026, "tripo.json").notes
    assert notes == ["node 3 (TripoTextToModelNode): 15 widget values for 12 widget slots; kept the first 12 and "
                     "dropped the rest, as the page does (the file was saved for another version of the node?)"]


# -- titles and _meta ------------------------------------------------------------------------------

def test_a_type_without_display_name_gets_the_pages_own_name():
    info = dict(INFO, ImageScaleToTotalPixels=_type({"megapixels": ["FLOAT", {"default": 1.0}]}, output=("IMAGE",)),
                Unknown=_type({}, output=("IMAGE",)))
    d = Doc()
    d.node(1, "ImageScaleToTotalPixels", [2.0], outputs=("IMAGE",))
    d.node(2, "Unknown", [], outputs=("IMAGE",))
    d.node(3, "ImageScaleToTotalPixels", [2.0], outputs=("IMAGE",), title="Mine")
    d.node(4, "ImageScaleToTotalPixels", [2.0], outputs=("IMAGE",), title="ImageScaleToTotalPixels")
    got = convert(d.doc(), info)
    assert got["1"]["_meta"]["title"] == "Scale Image to Total Pixels"
    assert got["2"]["_meta"]["title"] == "Unknown"  # in no list: the type
    assert got["3"]["_meta"]["title"] == "Mine"
    assert got["4"]["_meta"]["title"] == "Scale Image to Total Pixels"  # a title equal to the type is none
    # The server's display name wins over the page's list (which has another name for LoraLoader).
    assert builtin_label("LoraLoader") == "Load LoRA (Model and CLIP)"
    lora = dict(INFO, LoraLoader=_type({"strength": ["FLOAT", {"default": 1.0}]}, display="Load LoRA"))
    d = Doc()
    d.node(1, "LoraLoader", [0.5])
    assert convert(d.doc(), lora)["1"]["_meta"]["title"] == "Load LoRA"


def test_set_finds_a_node_by_the_pages_name():
    doc = json.loads((DATA / "workflows" / "sd3.5_large_canny_controlnet_example.json").read_text())
    wf = workflow.convert(workflow.Workflow("x.json", "x", {}, ui=doc), INFO_2026, say=lambda line: None)
    assert wf.graph["47"]["class_type"] == "Canny" and INFO_2026["Canny"]["display_name"] is None
    spec = "Detect Edges (Canny).low_threshold=0.25"
    changed = batch.apply([wf], [batch.parse_assignment("--set", spec)])[0]
    assert changed.graph["47"]["inputs"]["low_threshold"] == 0.25


def _meta_of(props):
    d = Doc()
    d.node(1, "Load", ["a.ckpt"])["properties"].update(props)
    return convert(d.doc())["1"]["_meta"]


@pytest.mark.parametrize("props, meta", [
    ({"cnr_id": "comfy-core", "ver": "0.3.64"}, {"title": "Load Model", "cnr_id": "comfy-core", "ver": "0.3.64"}),
    ({"cnr_id": "comfyui-kjnodes", "ver": "v1.2.3-rc.1"}, {"title": "Load Model", "cnr_id": "comfyui-kjnodes",
                                                          "ver": "1.2.3-rc.1"}),
    ({"aux_id": "someone/some-nodes", "ver": "a1b2c3d"}, {"title": "Load Model", "aux_id": "someone/some-nodes",
                                                         "ver": "a1b2c3d"}),
    ({"ver": "unknown"}, {"title": "Load Model", "ver": "unknown"}),
    ({"cnr_id": "-bad", "aux_id": "no-slash", "ver": "1.2"}, {"title": "Load Model"}),
    ({"cnr_id": 5, "ver": None}, {"title": "Load Model"}),
])
def test_meta_carries_the_node_pack_when_valid(props, meta):
    assert _meta_of(props) == meta


def test_labels_file_is_plain_data():
    text = (Path(uiformat.__file__).parent / "node_labels.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    assert len(rows) > 500 and all(len(r) == 2 and r[0] and r[1] and r[0] != r[1] for r in rows)
    assert max(len(r[1]) for r in rows) <= 80  # short labels, no tooltips
    assert "comfyui-frontend-package 1.58.1" in text  # where they come from


# -- subgraph ids ---------------------------------------------------------------------------------

def test_colliding_subgraph_ids_are_renumbered_and_the_api_ids_follow():
    d, load, sampler, _s = chain()
    sg = _patch_subgraph(d)
    sg["nodes"][0]["id"] = 2  # collides with the top level's Sampler
    for link in sg["links"]:
        link["origin_id"] = 2 if link["origin_id"] == 51 else link["origin_id"]
        link["target_id"] = 2 if link["target_id"] == 51 else link["target_id"]
    d.links = [link for link in d.links if link[3] != 2]
    inst = d.node(7, INNER, [0.9], inputs=[("model", "MODEL")], outputs=("MODEL",))
    d.link(load, 0, inst, "model")
    d.link(inst, 0, sampler, "model")
    doc = d.doc()
    doc["last_node_id"] = 40
    got = convert(doc)
    assert got["7:41"]["inputs"] == {"strength": 0.9, "model": ["1", 0]}  # last_node_id + 1
    assert got["2"]["inputs"]["model"] == ["7:41", 0] and "7:2" not in got
    assert doc["definitions"]["subgraphs"][0]["nodes"][0]["id"] == 2  # the caller's document is not changed


def test_a_later_definition_colliding_with_an_earlier_one_is_renumbered():
    d = Doc()
    first, second = d.subgraph(INNER, outputs=[("LATENT", "LATENT")]), d.subgraph(OUTER, outputs=[("LATENT", "LATENT")])
    d.node(61, "Empty", [4], outputs=("LATENT",), into=second)  # free: kept, and the highest seen
    for sg, size in ((first, 8), (second, 16)):
        empty = d.node(60, "Empty", [size], outputs=("LATENT",), into=sg)
        d.link(empty, 0, -20, 0, into=sg)
    a = d.node(1, INNER, [], outputs=("LATENT",))
    b = d.node(2, OUTER, [], outputs=("LATENT",))
    for inst, nid in ((a, 3), (b, 4)):
        save = d.node(nid, "Save", ["x"], inputs=[("latent", "LATENT")])
        d.link(inst, 0, save, "latent")
    doc = d.doc()
    doc["last_node_id"] = 60
    got = convert(doc)
    # The second definition's 60 is taken by the first: it becomes the highest id seen so far + 1.
    assert got["1:60"]["inputs"] == {"size": 8} and got["2:61"]["inputs"] == {"size": 4}
    assert got["2:62"]["inputs"] == {"size": 16} and got["4"]["inputs"]["latent"] == ["2:62", 0]


def test_nested_definitions_are_found_and_a_repeated_definition_keeps_the_first():
    d = Doc()
    inner = d.subgraph(INNER, outputs=[("LATENT", "LATENT")])
    empty = d.node(70, "Empty", [8], outputs=("LATENT",), into=inner)
    d.link(empty, 0, -20, 0, into=inner)
    outer = d.subgraph(OUTER, outputs=[("LATENT", "LATENT")])
    mid = d.node(71, INNER, [], outputs=("LATENT",), into=outer)
    d.link(mid, 0, -20, 0, into=outer)
    d.subgraphs.remove(inner)
    outer["definitions"] = {"subgraphs": [inner]}  # defined inside the subgraph that uses it
    top = d.node(1, OUTER, [], outputs=("LATENT",))
    save = d.node(2, "Save", ["x"], inputs=[("latent", "LATENT")])
    d.link(top, 0, save, "latent")
    doc = d.doc()
    doc["definitions"]["subgraphs"].append(dict(copy.deepcopy(inner), nodes=[]))  # a stale second copy
    got = convert(doc)
    assert got["1:71:70"]["inputs"] == {"size": 8} and got["2"]["inputs"]["latent"] == ["1:71:70", 0]


# -- page-only widgets ----------------------------------------------------------------------------

def test_the_3d_viewer_widget_is_sent():
    info = dict(INFO, SaveGLB=_type({"mesh": ["MESH", {}], "filename_prefix": ["STRING", {"default": "mesh/x"}]}))
    d = Doc()
    d.node(1, "SaveGLB", ["mesh/out", "view.png"], inputs=[("mesh", "MESH")])
    d.node(2, "SaveGLB", ["mesh/out"], inputs=[("mesh", "MESH")])
    got = convert(d.doc(), info)
    assert got["1"]["inputs"] == {"filename_prefix": "mesh/out", "image": "view.png"}
    assert got["2"]["inputs"] == {"filename_prefix": "mesh/out", "image": ""}


def test_a_server_listed_combo_sends_its_refresh_button_and_a_list_is_wrapped():
    remote = {"route": "/internal/files/output", "refresh_button": True}
    info = dict(INFO, Pick=_type({"file": [["a.png", "b.png"], {"remote": remote}], "tags": ["STRING", {}]}))
    d = Doc()
    d.node(1, "Pick", ["b.png", False, "refresh", ["x", 0]])  # the switch and the button take a slot each
    d.node(2, "Pick", {"file": "a.png", "tags": [1, 2]})
    got = convert(d.doc(), info)
    assert got["1"]["inputs"] == {"file": "b.png", "tags": {"__value__": ["x", 0]}, "refresh": "refresh"}
    assert got["2"]["inputs"] == {"file": "a.png", "tags": {"__value__": [1, 2]}, "refresh": "refresh"}


# -- a required input emptied by a bypass ---------------------------------------------------------

def _gap_doc():
    d, _l, _sampler, save = chain()
    save["inputs"][0]["link"] = None
    d.links = [link for link in d.links if link[3] != 3]
    empty = d.node(6, "Empty", [16], mode=4, outputs=("LATENT",))
    d.link(empty, 0, save, "latent")
    return d.doc()


GAP = ("node 3 (Save): required input 'latent' is left empty: its source, node 6 (Empty), is bypassed and "
       "has no LATENT input to pass on")


def test_a_gap_is_what_the_page_sends_with_the_gap_named():
    result = uiformat.convert(_gap_doc(), INFO, "wf.json")
    assert result.gaps == [GAP]
    assert result.graph["3"]["inputs"] == {"prefix": "pic"}  # the input left out, as the page does
    assert refused(_gap_doc()) == f"wf.json: {GAP}"  # to_api: only what the server would take


def test_workflow_convert_refuses_a_gap_unless_told_otherwise():
    wf = workflow.Workflow("wf.json", "wf", {}, ui=_gap_doc())
    with pytest.raises(UsageError) as err:
        workflow.convert(wf, INFO, say=lambda line: None)
    assert str(err.value) == f"wf.json: {GAP}; un-bypass that node or link the input, then run it again"
    said = []
    got = workflow.convert(wf, INFO, strict=False, say=said.append)
    assert got.graph["3"]["inputs"] == {"prefix": "pic"}
    assert said == [f"warning: wf.json: {GAP}; this is what the page would send, and the server will refuse it"]
