"""UI-format -> API-format conversion: the frontend's own results, then one test per rule."""

import copy
import json
from pathlib import Path

import pytest

from comfy_cli import uiformat
from comfy_cli.errors import UsageError
from comfy_cli.uilabels import builtin_label

DATA = Path(__file__).resolve().parent / "data" / "ui"
REAL_INFO = json.loads((DATA / "object_info.json").read_text())
GIVEN = [line for line in (DATA / "GIVEN.txt").read_text().splitlines() if line.strip()]


# -- what the 1.27 page built (tests/test_convert_page.py: the current page, matched exactly) ---------

# Where the 1.27.10 page differs from the current one (1.58.1), the current one is followed:
# 1.27 sent no node pack (cnr_id, ver), titled a node whose type has no display_name with the
# type (1.58 shows its own English name), and sent PreviewAny's page-only preview value (1.58
# does not).
OLD_PAGE_ONLY = {("PreviewAny", "preview")}


@pytest.mark.parametrize("name", GIVEN)
def test_matches_what_the_1_27_page_built(name):
    doc = json.loads((DATA / "workflows" / f"{name}.json").read_text())
    expected = json.loads((DATA / "expected" / f"{name}.api.json").read_text())
    got = uiformat.to_api(doc, REAL_INFO, name)
    assert sorted(got) == sorted(expected)
    for nid, want in expected.items():
        node, kind = got[nid], want["class_type"]
        assert node["class_type"] == kind, nid
        assert node["inputs"] == {k: v for k, v in want["inputs"].items() if (kind, k) not in OLD_PAGE_ONLY}, nid
        meta, props = dict(node["_meta"]), _ui_node(doc, nid).get("properties") or {}
        for key in ("cnr_id", "ver"):
            assert meta.pop(key, None) == props.get(key), nid
        if REAL_INFO[kind]["display_name"] is None and want["_meta"]["title"] == kind:
            assert meta["title"] == (builtin_label(kind) or kind), nid
        else:
            assert meta == want["_meta"], nid


def test_the_1_27_titles_that_differ_are_the_pages_own_names():
    # Not a tautology of the test above: these are names 1.27 did not send, taken from the data file.
    doc = json.loads((DATA / "workflows" / "api_pixverse_i2v.json").read_text())
    titles = {n["class_type"]: n["_meta"]["title"] for n in uiformat.to_api(doc, REAL_INFO, "x").values()}
    assert titles["PixverseImageToVideoNode"] == "PixVerse Image to Video"


def _ui_node(doc, api_id):
    nodes = list(doc["nodes"])
    outer, _sep, inner = api_id.partition(":")
    if inner:  # a subgraph's node: look in the definition the instance uses
        kind = next(n["type"] for n in nodes if str(n["id"]) == outer)
        nodes = next(sg["nodes"] for sg in doc["definitions"]["subgraphs"] if sg["id"] == kind)
        api_id = inner
    return next((n for n in nodes if str(n["id"]) == api_id), {})


@pytest.mark.parametrize("name, types", [
    ("audio_stable_audio_example", ["EmptyLatentAudio (node 11)", "VAEDecodeAudio (node 12)", "SaveAudio (node 13)"]),
    ("video_wan2_2_14B_animate", ["DWPreprocessor (nodes 100, 101)", "PointsEditor (node 229)"]),
])
def test_missing_node_types_are_named(name, types):
    doc = json.loads((DATA / "workflows" / f"{name}.json").read_text())
    with pytest.raises(UsageError) as err:
        uiformat.to_api(doc, REAL_INFO, f"{name}.json")
    message = str(err.value)
    assert message.startswith(f"{name}.json: node types not on the server: ") and "\n" not in message
    for t in types:
        assert t in message


# -- a small object_info and a builder for hand-made files ----------------------------------------

def _type(required, optional=None, output=(), output_node=False, display=None):
    inputs = {"required": required}
    order = {"required": list(required)}
    if optional:
        inputs["optional"] = optional
        order["optional"] = list(optional)
    return {"input": inputs, "input_order": order, "output": list(output), "output_is_list": [False] * len(output),
            "output_name": list(output), "display_name": display, "category": "test", "output_node": output_node}


INFO = {
    "Load": _type({"name": [["a.ckpt", "b.ckpt"], {}]}, output=("MODEL", "CLIP"), display="Load Model"),
    "Sampler": _type({"model": ["MODEL", {}],
                      "seed": ["INT", {"default": 0, "min": 0, "max": 100, "control_after_generate": True}],
                      "steps": ["INT", {"default": 20, "min": 1, "max": 100}],
                      "mode": ["COMBO", {"options": ["fast", "slow"]}]},
                     {"denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0}], "latent": ["LATENT", {}]},
                     output=("LATENT",), display="Sampler"),
    "Patch": _type({"model": ["MODEL", {}], "strength": ["FLOAT", {"default": 1.0}]}, output=("MODEL",)),
    "Empty": _type({"size": ["INT", {"default": 8}]}, output=("LATENT",)),
    "Save": _type({"latent": ["LATENT", {}], "prefix": ["STRING", {"default": "out"}]}, output_node=True,
                  display="Save"),
    "Upload": _type({"image": [["a.png"], {"image_upload": True}], "scale": ["FLOAT", {"default": 1.0}]},
                    output=("IMAGE", "MASK")),
    "Typed": _type({"x": ["INT", {"forceInput": True}], "label": ["STRING", {}]}, output=("INT",)),
}


class Doc:
    """A UI-format document built the way the page saves one."""

    def __init__(self):
        self.nodes, self.links, self.subgraphs, self.next_link = [], [], [], 1

    def node(self, nid, kind, widgets=None, mode=0, title=None, inputs=(), outputs=(), into=None):
        node = {"id": nid, "type": kind, "pos": [0, 0], "size": [100, 50], "flags": {}, "order": 0, "mode": mode,
                "inputs": [{"name": n, "type": t, "link": None, **({"widget": {"name": n}} if w else {})}
                           for n, t, *w in inputs],
                "outputs": [{"name": t, "type": t, "links": []} for t in outputs],
                "properties": {"Node name for S&R": kind}}
        if widgets is not None:
            node["widgets_values"] = widgets
        if title:
            node["title"] = title
        (self.nodes if into is None else into["nodes"]).append(node)
        return node

    def link(self, src, slot, dst, name, into=None):
        """Link src's output `slot` to dst's input `name` (nodes are dicts, or -10/-20 in a subgraph)."""
        lid = self.next_link
        self.next_link += 1
        if into is None:
            tslot = [i["name"] for i in dst["inputs"]].index(name)
            dst["inputs"][tslot]["link"] = lid
            self.links.append([lid, src["id"], slot, dst["id"], tslot, "*"])
            return lid
        src_id = src if isinstance(src, int) else src["id"]
        if isinstance(dst, int):
            tslot = name
        else:
            tslot = [i["name"] for i in dst["inputs"]].index(name)
            dst["inputs"][tslot]["link"] = lid
        into["links"].append({"id": lid, "origin_id": src_id, "origin_slot": slot, "target_id":
                              dst if isinstance(dst, int) else dst["id"], "target_slot": tslot, "type": "*"})
        return lid

    def subgraph(self, uuid, inputs=(), outputs=()):
        sg = {"id": uuid, "name": f"sub {uuid[:4]}",
              "inputs": [{"name": n, "type": t, "linkIds": []} for n, t in inputs],
              "outputs": [{"name": n, "type": t, "linkIds": []} for n, t in outputs], "nodes": [], "links": [],
              "widgets": []}
        self.subgraphs.append(sg)
        return sg

    def doc(self):
        out = {"last_node_id": 99, "last_link_id": self.next_link, "nodes": self.nodes, "links": self.links,
               "groups": [], "config": {}, "extra": {}, "version": 0.4}
        if self.subgraphs:
            out["definitions"] = {"subgraphs": self.subgraphs}
        return out


def convert(doc, info=INFO):
    return uiformat.to_api(copy.deepcopy(doc), info, "wf.json")


def refused(doc, info=INFO):
    with pytest.raises(UsageError) as err:
        convert(doc, info)
    message = str(err.value)
    assert message.startswith("wf.json: ") and "\n" not in message
    return message


def chain():
    """Load -> Sampler -> Save, the smallest useful file."""
    d = Doc()
    load = d.node(1, "Load", ["b.ckpt"], outputs=("MODEL", "CLIP"))
    sampler = d.node(2, "Sampler", [7, "randomize", 30, "slow", 0.5],
                     inputs=[("model", "MODEL"), ("latent", "LATENT")], outputs=("LATENT",))
    save = d.node(3, "Save", ["pic"], inputs=[("latent", "LATENT")])
    d.link(load, 0, sampler, "model")
    d.link(sampler, 0, save, "latent")
    return d, load, sampler, save


# -- widget values -------------------------------------------------------------------------------

def test_widgets_in_object_info_order_skipping_the_seed_control():
    d, *_ = chain()
    got = convert(d.doc())
    assert got["2"] == {"inputs": {"seed": 7, "steps": 30, "mode": "slow", "denoise": 0.5, "model": ["1", 0]},
                        "class_type": "Sampler", "_meta": {"title": "Sampler"}}
    assert got["1"]["inputs"] == {"name": "b.ckpt"}
    assert got["3"]["inputs"] == {"prefix": "pic", "latent": ["2", 0]}


def test_old_files_store_the_control_as_a_boolean():
    d, _l, sampler, _s = chain()
    sampler["widgets_values"] = [7, True, 30, "slow", 0.5]
    assert convert(d.doc())["2"]["inputs"]["steps"] == 30


def test_missing_values_get_defaults_and_a_combo_its_first_choice():
    d, _l, sampler, _s = chain()
    sampler["widgets_values"] = [7, "fixed"]
    assert convert(d.doc())["2"]["inputs"] == {"seed": 7, "steps": 20, "mode": "fast", "denoise": 1.0,
                                               "model": ["1", 0]}
    del sampler["widgets_values"]
    assert convert(d.doc())["2"]["inputs"]["seed"] == 0


def test_upload_button_is_skipped_and_a_trailing_extra_ignored():
    d = Doc()
    d.node(1, "Upload", ["cat.png", "image", 2.0, ""], outputs=("IMAGE", "MASK"))
    assert convert(d.doc())["1"]["inputs"] == {"image": "cat.png", "scale": 2.0}


def test_force_input_is_not_a_widget_and_values_by_name_work():
    d = Doc()
    d.node(1, "Typed", ["hello"], inputs=[("x", "INT")], outputs=("INT",))
    d.node(2, "Typed", {"label": "by name"}, outputs=("INT",))
    got = convert(d.doc())
    assert got["1"]["inputs"] == {"label": "hello"} and got["2"]["inputs"] == {"label": "by name"}


def test_too_many_widget_values_keep_the_first_ones_with_a_note():
    d, _l, sampler, _s = chain()
    sampler["widgets_values"] = [7, "fixed", 30, "slow", 0.5, 1, 2, 3]
    result = uiformat.convert(d.doc(), INFO, "wf.json")
    assert result.graph["2"]["inputs"] == {"seed": 7, "steps": 30, "mode": "slow", "denoise": 0.5,
                                           "model": ["1", 0]}
    assert result.notes == ["node 2 (Sampler): 8 widget values for 5 widget slots; kept the first 5 and dropped "
                            "the rest, as the page does (the file was saved for another version of the node?)"]
    sampler["widgets_values"] = [7, "fixed", 30, "slow", 0.5, 1, 2]  # two: the page's own widgets
    assert uiformat.convert(d.doc(), INFO, "wf.json").notes == []
    # A type without widget inputs: the values are the page's own display widgets.
    d, _l, sampler, save = chain()
    d.node(9, "Patch", [0.5], inputs=[("model", "MODEL")], outputs=("MODEL",))
    no_widgets = dict(INFO, Patch=_type({"model": ["MODEL", {}]}, output=("MODEL",)))
    d.nodes[-1]["widgets_values"] = ["preview", "text", 3, 4]
    assert convert(d.doc(), no_widgets)["9"]["inputs"] == {}


# -- links, primitives, reroutes -----------------------------------------------------------------

def test_widget_fed_by_a_link_becomes_the_link():
    d, load, sampler, _s = chain()
    typed = d.node(4, "Typed", ["x"], inputs=[("x", "INT")], outputs=("INT",))
    sampler["inputs"].append({"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": None})
    d.link(typed, 0, sampler, "steps")
    assert convert(d.doc())["2"]["inputs"]["steps"] == ["4", 0]


def test_primitive_value_is_written_into_every_input_it_feeds():
    d, load, sampler, save = chain()
    second = d.node(5, "Sampler", [1, "fixed", 2, "fast", 1.0], inputs=[("model", "MODEL"), ("seed", "INT", 1)],
                    outputs=("LATENT",))
    d.link(load, 0, second, "model")
    sampler["inputs"].append({"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": None})
    prim = d.node(4, "PrimitiveNode", [55, "increment"], outputs=("INT",), title="Seed")
    d.link(prim, 0, sampler, "seed")
    d.link(prim, 0, second, "seed")
    got = convert(d.doc())
    assert got["2"]["inputs"]["seed"] == 55 and got["5"]["inputs"]["seed"] == 55
    assert "4" not in got


def test_reroute_chains_are_followed():
    d, load, sampler, _s = chain()
    r1 = d.node(10, "Reroute", inputs=[("", "*")], outputs=("MODEL",))
    r2 = d.node(11, "Reroute", inputs=[("", "*")], outputs=("MODEL",))
    sampler["inputs"][0]["link"] = None
    d.links = [link for link in d.links if link[3] != 2]
    d.link(load, 0, r1, "")
    d.link(r1, 0, r2, "")
    d.link(r2, 0, sampler, "model")
    got = convert(d.doc())
    assert got["2"]["inputs"]["model"] == ["1", 0] and "10" not in got and "11" not in got


def test_notes_are_dropped_and_titles_follow_the_rule():
    d, _l, sampler, _s = chain()
    d.node(20, "Note", ["remember"])
    d.node(21, "MarkdownNote", ["# hi"])
    sampler["title"] = "My sampler"
    d.node(4, "Patch", [1.0], inputs=[("model", "MODEL")], outputs=("MODEL",), title="Patch")
    got = convert(d.doc())
    assert set(got) == {"1", "2", "3", "4"}
    assert got["2"]["_meta"]["title"] == "My sampler"  # its own title
    assert got["1"]["_meta"]["title"] == "Load Model"  # the display name
    assert got["4"]["_meta"]["title"] == "Patch"  # no display name: the type


# -- bypass and mute -----------------------------------------------------------------------------

def _patched(modes):
    """Load -> Patch -> Patch -> Sampler -> Save, with the patches in the given modes."""
    d, load, sampler, _s = chain()
    d.links = [link for link in d.links if link[3] != 2]
    p1 = d.node(4, "Patch", [0.5], mode=modes[0], inputs=[("model", "MODEL")], outputs=("MODEL",))
    p2 = d.node(5, "Patch", [0.7], mode=modes[1], inputs=[("model", "MODEL")], outputs=("MODEL",))
    d.link(load, 0, p1, "model")
    d.link(p1, 0, p2, "model")
    d.link(p2, 0, sampler, "model")
    return d


def test_a_bypass_chain_is_wired_through_by_type():
    got = convert(_patched((4, 4)).doc())
    assert got["2"]["inputs"]["model"] == ["1", 0] and "4" not in got and "5" not in got
    got = convert(_patched((0, 4)).doc())
    assert got["2"]["inputs"]["model"] == ["4", 0] and got["4"]["inputs"]["model"] == ["1", 0]


def test_a_bypassed_node_with_no_input_of_the_type_leaves_the_key_out():
    d, _l, sampler, _s = chain()
    empty = d.node(6, "Empty", [16], mode=4, outputs=("LATENT",))
    d.link(empty, 0, sampler, "latent")
    got = convert(d.doc())
    assert "latent" not in got["2"]["inputs"] and "6" not in got


def test_a_muted_node_is_dropped_and_its_links_left_out():
    d, _l, sampler, _s = chain()
    empty = d.node(6, "Empty", [16], mode=2, outputs=("LATENT",))
    d.link(empty, 0, sampler, "latent")
    got = convert(d.doc())
    assert "6" not in got and "latent" not in got["2"]["inputs"]
    assert "5" not in convert(_patched((0, 2)).doc())


# -- subgraphs and group nodes -------------------------------------------------------------------

INNER = "11111111-2222-3333-4444-555555555555"
OUTER = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def _patch_subgraph(d):
    """A subgraph MODEL -> Patch -> MODEL, with the strength a widget on the instance."""
    sg = d.subgraph(INNER, inputs=[("model", "MODEL"), ("strength", "FLOAT")], outputs=[("MODEL", "MODEL")])
    patch = d.node(51, "Patch", [0.25], inputs=[("model", "MODEL"), ("strength", "FLOAT", 1)], outputs=("MODEL",),
                   into=sg)
    d.link(-10, 0, patch, "model", into=sg)
    d.link(-10, 1, patch, "strength", into=sg)
    d.link(patch, 0, -20, 0, into=sg)
    return sg


def test_a_subgraph_used_twice_is_flattened_with_instance_ids():
    d, load, sampler, _s = chain()
    _patch_subgraph(d)
    d.links = [link for link in d.links if link[3] != 2]
    first = d.node(7, INNER, [0.9], inputs=[("model", "MODEL")], outputs=("MODEL",))
    second = d.node(8, INNER, [0.3], inputs=[("model", "MODEL")], outputs=("MODEL",))
    d.link(load, 0, first, "model")
    d.link(first, 0, second, "model")
    d.link(second, 0, sampler, "model")
    got = convert(d.doc())
    assert got["7:51"] == {"inputs": {"strength": 0.9, "model": ["1", 0]}, "class_type": "Patch",
                          "_meta": {"title": "Patch"}}
    assert got["8:51"]["inputs"] == {"strength": 0.3, "model": ["7:51", 0]}
    assert got["2"]["inputs"]["model"] == ["8:51", 0]
    assert "7" not in got and "8" not in got


def test_nested_subgraphs_and_a_linked_subgraph_input():
    d, load, sampler, _s = chain()
    _patch_subgraph(d)
    outer = d.subgraph(OUTER, inputs=[("model", "MODEL"), ("strength", "FLOAT")], outputs=[("MODEL", "MODEL")])
    inst = d.node(53, INNER, [], inputs=[("model", "MODEL"), ("strength", "FLOAT", 1)], outputs=("MODEL",),
                  into=outer)
    d.link(-10, 0, inst, "model", into=outer)
    d.link(-10, 1, inst, "strength", into=outer)
    d.link(inst, 0, -20, 0, into=outer)
    d.links = [link for link in d.links if link[3] != 2]
    top = d.node(9, OUTER, [], inputs=[("model", "MODEL"), ("strength", "FLOAT", 1)], outputs=("MODEL",))
    prim = d.node(4, "PrimitiveNode", [0.6], outputs=("FLOAT",))
    d.link(load, 0, top, "model")
    d.link(prim, 0, top, "strength")
    d.link(top, 0, sampler, "model")
    got = convert(d.doc())
    assert got["9:53:51"]["inputs"] == {"strength": 0.6, "model": ["1", 0]}
    assert got["2"]["inputs"]["model"] == ["9:53:51", 0]
    assert set(got) == {"1", "2", "3", "9:53:51"}


def test_a_bypassed_subgraph_is_wired_through():
    d, load, sampler, _s = chain()
    _patch_subgraph(d)
    d.links = [link for link in d.links if link[3] != 2]
    inst = d.node(7, INNER, [0.9], mode=4, inputs=[("model", "MODEL")], outputs=("MODEL",))
    d.link(load, 0, inst, "model")
    d.link(inst, 0, sampler, "model")
    got = convert(d.doc())
    assert got["2"]["inputs"]["model"] == ["1", 0] and "7:51" not in got


def test_group_nodes_are_expanded():
    d, load, sampler, _s = chain()
    d.links = [link for link in d.links if link[3] != 2]
    group = {"nodes": [
        {"index": 0, "type": "Patch", "inputs": [{"name": "model", "type": "MODEL", "link": None}],
         "outputs": [{"name": "MODEL", "type": "MODEL", "links": []}], "widgets_values": [0.1]},
        {"index": 1, "type": "Patch", "inputs": [{"name": "model", "type": "MODEL", "link": None}],
         "outputs": [{"name": "MODEL", "type": "MODEL", "links": []}], "widgets_values": [0.2], "title": "Second"},
    ], "links": [[0, 0, 1, 0, 4, "MODEL"]], "external": []}
    inst = d.node(6, "workflow>two patches", [0.3, 0.4], inputs=[("model", "MODEL")], outputs=("MODEL", "MODEL"))
    d.link(load, 0, inst, "model")
    d.link(inst, 1, sampler, "model")
    doc = d.doc()
    doc["extra"]["groupNodes"] = {"two patches": group}
    got = convert(doc)
    assert got["6:0"]["inputs"] == {"strength": 0.3, "model": ["1", 0]}
    assert got["6:1"] == {"inputs": {"strength": 0.4, "model": ["6:0", 0]}, "class_type": "Patch",
                          "_meta": {"title": "Second"}}
    assert got["2"]["inputs"]["model"] == ["6:1", 0]


# -- malformed files: one clear line each --------------------------------------------------------

def test_missing_types_are_refused_with_the_nodes_using_them():
    d, *_ = chain()
    d.node(8, "Mystery", [1])
    d.node(9, "Mystery", [2])
    d.node(10, "Other", [])
    message = refused(d.doc())
    assert "node types not on the server: Mystery (nodes 8, 9); Other (node 10)" in message


def test_a_link_to_a_missing_node_is_refused():
    d, *_ = chain()
    d.links[0][1] = 77
    assert "node 2: input 'model' is linked to node 77, which is not in the file" in refused(d.doc())


def test_a_link_id_not_in_the_file_is_refused():
    d, _l, sampler, _s = chain()
    sampler["inputs"][0]["link"] = 999
    assert "node 2: input 'model' uses link 999, which is not in the file" in refused(d.doc())


def test_a_subgraph_without_a_definition_is_refused():
    d, *_ = chain()
    d.node(5, INNER, [], outputs=("MODEL",))
    assert f"node 5 uses subgraph {INNER}, which is not defined in the file" in refused(d.doc())


def test_a_cycle_is_refused():
    d, load, sampler, _s = chain()
    p1 = d.node(4, "Patch", [1.0], inputs=[("model", "MODEL")], outputs=("MODEL",))
    p2 = d.node(5, "Patch", [1.0], inputs=[("model", "MODEL")], outputs=("MODEL",))
    d.link(p1, 0, p2, "model")
    d.link(p2, 0, p1, "model")
    assert "depends on itself through its links (a cycle)" in refused(d.doc())


def test_a_reroute_loop_is_refused():
    d, load, sampler, _s = chain()
    r1 = d.node(10, "Reroute", inputs=[("", "*")], outputs=("MODEL",))
    r2 = d.node(11, "Reroute", inputs=[("", "*")], outputs=("MODEL",))
    d.link(r1, 0, r2, "")
    d.link(r2, 0, r1, "")
    sampler["inputs"][0]["link"] = None
    d.links = [link for link in d.links if link[3] != 2]
    d.link(r2, 0, sampler, "model")
    assert "goes round in a loop" in refused(d.doc())


@pytest.mark.parametrize("mangle, message", [
    (lambda doc: doc.update(nodes={}), "'nodes' is not a list"),
    (lambda doc: doc["nodes"].append({"id": 1, "type": "Load"}), "node id 1 is used twice"),
    (lambda doc: doc["nodes"].append({"type": "Load"}), "a node without an id or a type"),
    (lambda doc: doc["links"].append([1, 2]), "a link that is not [id, from, slot, to, slot, type]"),
    (lambda doc: doc.update(definitions=[]), "'definitions' is not an object"),
    (lambda doc: doc.update(definitions={"subgraphs": {"a": 1}}), "'definitions.subgraphs' is not a list"),
    (lambda doc: doc["nodes"][1].update(widgets_values="x"), "'widgets_values' is neither a list nor an object"),
    (lambda doc: [n.update(mode=2) for n in doc["nodes"]], "no nodes to run"),
])
def test_malformed_files(mangle, message):
    d, *_ = chain()
    doc = d.doc()
    mangle(doc)
    assert message in refused(doc)


def test_subgraph_link_object_without_a_field_is_refused():
    d, *_ = chain()
    sg = _patch_subgraph(d)
    del sg["links"][0]["origin_id"]
    d.node(7, INNER, [0.9], inputs=[("model", "MODEL")], outputs=("MODEL",))
    assert "a link without 'origin_id'" in refused(d.doc())


def test_mutated_reference_files_give_one_line_or_a_graph():
    # Random damage to real files (values swapped for junk of other types, keys and items
    # deleted) must give a graph or one UsageError line, never another exception.
    import random

    rng = random.Random(7)
    docs = [json.loads(p.read_text()) for folder in (DATA, DATA.parent / "ui-2026")
            for p in sorted((folder / "workflows").glob("*.json"))]
    junk = [None, 0, -1, 1.5, "", "x", [], {}, [1], {"a": 1}, True, -10, -20, [None] * 6]
    for _ in range(800):
        doc = copy.deepcopy(rng.choice(docs))
        places = list(_containers(doc))
        for _ in range(rng.randint(1, 3)):
            place = rng.choice(places)
            if not place:
                continue
            key = rng.choice(list(place)) if isinstance(place, dict) else rng.randrange(len(place))
            if rng.random() < 0.3:
                del place[key]
            else:
                place[key] = rng.choice(junk)
        try:
            uiformat.to_api(doc, REAL_INFO, "wf.json")
        except UsageError as err:
            assert "\n" not in str(err) and str(err).startswith("wf.json: ")


def _containers(obj):
    if isinstance(obj, (dict, list)):
        yield obj
        for value in (obj.values() if isinstance(obj, dict) else obj):
            yield from _containers(value)
