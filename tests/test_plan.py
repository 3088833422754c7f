"""The plan: order, names, ranges, data files, errors naming file/line/column, laziness."""

import json

import pytest

from comfy_cli import params, plan
from comfy_cli.batch import apply, parse_assignment
from comfy_cli.errors import UsageError
from comfy_cli.workflow import Workflow

GRAPH = {
    "1": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 20, "cfg": 8.0, "model": ["4", 0]}},
    "4": {"class_type": "Loader", "inputs": {"ckpt": "a.safetensors"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "x"}, "_meta": {"title": "Positive"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "y"}, "_meta": {"title": "Negative"}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
}


def wf(name="txt2img", path=None):
    return Workflow(path or f"{name}.json", name, json.loads(json.dumps(GRAPH)))


def data_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_order_is_files_rows_inputs_sweeps_count_last_fastest(tmp_path):
    rows = plan.rows(params.read(data_file(tmp_path, "p.csv", "Positive.text\nfox\nowl\n")))
    made = plan.Plan([wf("a"), wf("b")], [rows, plan.sweep("KSampler.cfg=4,6")], count=2)
    assert len(made) == 2 * 2 * 2 * 2
    names = [p.name for p in made]
    assert names[:5] == ["a[row 1,cfg=4]#1", "a[row 1,cfg=4]#2", "a[row 1,cfg=6]#1", "a[row 1,cfg=6]#2",
                         "a[row 2,cfg=4]#1"]
    assert names[8] == "b[row 1,cfg=4]#1"
    assert len(set(names)) == len(names)
    p = made[5]  # a, row 2, cfg 4, copy 2
    assert p.index == 5 and p.path == "a.json"
    assert p.values == {"Positive.text": "owl", "KSampler.cfg": 4, "KSampler.seed": 6}
    assert p.graph["6"]["inputs"]["text"] == "owl" and p.graph["1"]["inputs"]["cfg"] == 4
    assert p.graph["1"]["inputs"]["seed"] == 6 and p.graph["7"]["inputs"]["text"] == "y"


def test_several_sweeps_make_the_product_and_the_last_varies_fastest():
    made = plan.Plan([wf()], [plan.sweep("KSampler.cfg=4..8:2"), plan.sweep("KSampler.steps=[20, 30]")])
    assert [p.name for p in made] == [
        "txt2img[cfg=4,steps=20]", "txt2img[cfg=4,steps=30]", "txt2img[cfg=6,steps=20]",
        "txt2img[cfg=6,steps=30]", "txt2img[cfg=8,steps=20]", "txt2img[cfg=8,steps=30]"]
    assert [list(p.values.items()) for p in made][3] == [("KSampler.cfg", 6), ("KSampler.steps", 30)]


def test_a_graph_is_built_only_when_asked_for_and_shares_unchanged_nodes():
    template = wf()
    made = plan.Plan([template], [plan.sweep("KSampler.steps=1..100000")])
    p = made[99_999]
    assert p._graph is None  # values only, no graph yet
    assert p.values == {"KSampler.steps": 100000}
    graph = p.graph
    assert graph["1"]["inputs"]["steps"] == 100000 and template.graph["1"]["inputs"]["steps"] == 20
    assert graph["6"] is template.graph["6"]  # unchanged nodes are shared, not copied
    assert p.graph is graph


@pytest.mark.parametrize("spec, values", [
    ("KSampler.cfg=4..8:2", [4, 6, 8]),
    ("KSampler.cfg=1..3", [1, 2, 3]),
    ("KSampler.cfg=8..4:2", [8, 6, 4]),
    ("KSampler.cfg=0.1..0.5:0.1", [0.1, 0.2, 0.3, 0.4, 0.5]),
    ("KSampler.cfg=1..2:0.4", [1.0, 1.4, 1.8]),
    ("KSampler.cfg=5..5", [5]),
    ("KSampler.cfg=4, 6,8", [4, 6, 8]),
    ("Positive.text=a red fox,owl", ["a red fox", "owl"]),
    ('Positive.text=["a, b", "c"]', ["a, b", "c"]),
    ('Positive.text="007",7', ["007", 7]),
])
def test_sweep_values(spec, values):
    assert [c[0] for c in plan.sweep(spec).choices] == values


@pytest.mark.parametrize("spec, message", [
    ("KSampler.cfg=", "the sweep is empty"),
    ("KSampler.cfg=[]", "the sweep is empty"),
    ("KSampler.cfg=4,,6", "value 2 is empty"),
    ("KSampler.cfg=4,4", "the value 4 is given twice"),
    ("KSampler.cfg=1..5:0", "the step is 0"),
    ("KSampler.cfg=[1, 2", "not a JSON array"),
    ("cfg=1,2", "expected NODE.INPUT=V1,V2,..."),
    ("KSampler.cfg=0..1000000", "1000001 values; at most 100000"),
])
def test_sweep_errors(spec, message):
    with pytest.raises(UsageError, match=None) as err:
        plan.sweep(spec)
    assert message in str(err.value) and spec in str(err.value)


def test_a_sweep_naming_what_no_workflow_has_is_refused_with_candidates():
    with pytest.raises(UsageError) as err:
        plan.Plan([wf()], [plan.sweep("KSampler.cfgg=1,2")])
    assert "--sweep 'KSampler.cfgg=1,2': txt2img.json: node 1 (KSampler) has no input 'cfgg'; it has: cfg" \
        in str(err.value)
    with pytest.raises(UsageError, match="no node 'Nope' in txt2img.json; candidates: 1 \\(KSampler\\)"):
        plan.Plan([wf()], [plan.sweep("Nope.cfg=1,2")])
    with pytest.raises(UsageError, match="class_type 'CLIPTextEncode' matches nodes 6, 7; name one by id"):
        plan.Plan([wf()], [plan.sweep("CLIPTextEncode.text=a,b")])
    with pytest.raises(UsageError, match="node 1 input 'cfg' is already varied by --sweep 'KSampler.cfg=1,2'"):
        plan.Plan([wf()], [plan.sweep("KSampler.cfg=1,2"), plan.sweep("1.cfg=3,4")])


def test_two_sweeps_of_inputs_with_one_name_show_the_whole_key():
    made = plan.Plan([wf()], [plan.sweep("Positive.text=a,b"), plan.sweep("Negative.text=c")])
    assert made[1].name == "txt2img[Positive.text=b,Negative.text=c]"


def test_long_values_are_cut_short_in_names_and_numbered_when_alike():
    made = plan.Plan([wf()], [plan.sweep('Positive.text=["a very long prompt about a fox in snow", "short"]')])
    assert made[0].name == "txt2img[text=a very long prompt abou\u2026]"
    alike = plan.Plan([wf()], [plan.sweep('Positive.text=["a very long prompt about a fox", '
                                          '"a very long prompt about an owl"]')])
    assert [p.name for p in alike] == ["txt2img[text=#1]", "txt2img[text=#2]"]


def test_names_unique_when_the_same_file_is_given_twice():
    made = plan.Plan([wf("a"), wf("a"), wf("a")], count=2)
    assert [p.name for p in made] == ["a#1", "a#2", "a(2)#1", "a(2)#2", "a(3)#1", "a(3)#2"]
    assert [p.name for p in plan.Plan([wf("a")])] == ["a"]  # a plain run: the file's name, as ever


def test_count_copies_move_seeds_and_say_so_unless_same_seed():
    made = plan.Plan([wf()], count=3)
    assert [p.values for p in made] == [{"KSampler.seed": 5}, {"KSampler.seed": 6}, {"KSampler.seed": 7}]
    same = plan.Plan([wf()], count=3, same_seed=True)
    assert [p.values for p in same] == [{}, {}, {}] and same[2].graph["1"]["inputs"]["seed"] == 5
    swept = plan.Plan([wf()], [plan.sweep("KSampler.seed=[100, 200]")], count=2)
    assert [p.values["KSampler.seed"] for p in swept] == [100, 101, 200, 201]
    assert list(plan.Plan([wf()]).templates[0].graph) == list(GRAPH)


def test_csv_cells_parse_as_set_values_and_blank_cells_keep_the_workflow(tmp_path):
    path = data_file(tmp_path, "p.csv", 'name,Positive.text,KSampler.steps,#notes\n'
                                        'fox,"a red fox, running",7,fast\n'
                                        ',"""007""",,\n'
                                        '\n'
                                        'owl,night owl,30,\n')
    made = plan.Plan([wf()], [plan.rows(params.read(path))])
    assert [p.name for p in made] == ["fox", "txt2img[row 2]", "owl"]
    assert [p.values for p in made] == [{"Positive.text": "a red fox, running", "KSampler.steps": 7},
                                        {"Positive.text": "007"},
                                        {"Positive.text": "night owl", "KSampler.steps": 30}]
    assert made[1].graph["1"]["inputs"]["steps"] == 20


def test_tsv_jsonl_and_json_arrays(tmp_path):
    tsv = data_file(tmp_path, "p.tsv", "KSampler.cfg\tPositive.text\n5\ta, b\n")
    assert plan.Plan([wf()], [plan.rows(params.read(tsv))])[0].values == {"KSampler.cfg": 5,
                                                                          "Positive.text": "a, b"}
    jsonl = data_file(tmp_path, "p.jsonl", '{"KSampler.cfg": 5, "name": "five"}\n\n{"Positive.text": "7"}\n')
    made = plan.Plan([wf()], [plan.rows(params.read(jsonl))])
    assert [(p.name, p.values) for p in made] == [("five", {"KSampler.cfg": 5}),
                                                  ("txt2img[row 2]", {"Positive.text": "7"})]
    array = data_file(tmp_path, "p.json", '[\n {"KSampler.cfg": 5},\n {"KSampler.cfg": null}\n]\n')
    assert [p.values for p in plan.Plan([wf()], [plan.rows(params.read(array))])] == [{"KSampler.cfg": 5}, {}]


@pytest.mark.parametrize("name, text, message", [
    ("p.csv", "KSampler.cfg,Positive.text\n5,a\n6\n", "p.csv: line 3: 1 cells, the header has 2"),
    ("p.csv", "KSampler.cfg\n5\n6,7\n", "p.csv: line 3: 2 cells, the header has 1 (a comma inside a value"),
    ("p.csv", "KSampler.cfg,cfg\n5,6\n", "p.csv: line 1, column 2 (cfg): expected NODE.INPUT, @NODE.INPUT"),
    ("p.csv", "KSampler.cfg,KSampler.cfg\n", "p.csv: line 1, column 2 (KSampler.cfg): the column is given twice"),
    ("p.csv", "name,KSampler.cfg\na,1\nb,2\na,3\n", "p.csv: line 4, column name: 'a' is already the name of "
                                                   "line 2"),
    ("p.csv", "KSampler.cfg\n", "no rows"),
    ("p.csv", "", "the file has no header row"),
    ("p.csv", "@LoadImage.image\nnope.png\n", "p.csv: line 2, column @LoadImage.image: nope.png: no such file"),
    ("p.jsonl", '{"KSampler.cfg": 5}\n{"KSampler.cfg": \n', "p.jsonl: line 2: invalid JSON"),
    ("p.jsonl", '{"KSampler.cfg": 5}\n[1]\n', "p.jsonl: line 2: expected an object"),
    ("p.json", '[\n{"KSampler.cfg": 5},\n\n{"x": }]', "p.json: line 4: invalid JSON"),
    ("p.json", '{"KSampler.cfg": 5}', "expected a JSON array of objects"),
    ("p.json", '[{"a.b": 1}', "cut short"),
    ("p.xlsx", "x", "unknown kind of file; name it .csv, .tsv, .jsonl or .json"),
])
def test_data_file_errors_name_the_line_and_column(tmp_path, name, text, message):
    with pytest.raises(UsageError) as err:
        params.read(data_file(tmp_path, name, text))
    assert message in str(err.value) and str(err.value).startswith("--params ")


def test_a_column_naming_a_missing_input_is_refused_at_its_header(tmp_path):
    path = data_file(tmp_path, "p.csv", "KSampler.cfg,KSampler.stepz\n5,6\n")
    with pytest.raises(UsageError) as err:
        plan.Plan([wf()], [plan.rows(params.read(path))])
    assert f"--params {path}: line 1, column 2 (KSampler.stepz): txt2img.json: node 1 (KSampler) has no input " \
           "'stepz'" in str(err.value)


INFO = {"KSampler": {"input": {"required": {"steps": ["INT", {"min": 1, "max": 100}],
                                            "cfg": ["FLOAT", {"min": 0.0, "max": 30.0}],
                                            "seed": ["INT", {"min": 0}], "model": ["MODEL"]}},
                     "output": ["LATENT"]}}


def test_values_the_server_would_refuse_are_found_before_sending(tmp_path):
    path = data_file(tmp_path, "p.csv", "KSampler.steps,KSampler.cfg\n5,7\n500,7\n")
    made = plan.Plan([wf()], [plan.rows(params.read(path))])
    with pytest.raises(UsageError) as err:
        made.check_values(INFO)
    assert str(err.value) == (f"--params {path}: line 3, column KSampler.steps: txt2img.json: node 1 (KSampler) "
                              "input 'steps': Value 500 bigger than max of 100")
    swept = plan.Plan([wf()], [plan.sweep("KSampler.cfg=[5, \"high\"]")])
    with pytest.raises(UsageError, match="--sweep 'KSampler.cfg=\\[5, \"high\"\\]': high: txt2img.json: node 1 "
                                         "\\(KSampler\\) input 'cfg': Failed to convert an input value to a FLOAT"):
        swept.check_values(INFO)
    plan.Plan([wf()], [plan.sweep("KSampler.cfg=4..8")]).check_values(INFO)  # fine


def test_input_folders_and_globs(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("b.png", "a.jpg", "notes.txt", ".hidden.png"):
        (photos / name).write_bytes(b"x")
    axis = plan.input_files(f"LoadImage.image={photos}")
    assert [c[0] for c in axis.choices] == [str(photos / "a.jpg"), str(photos / "b.png")]
    assert axis.labels == ["a.jpg", "b.png"]
    glob_axis = plan.input_files(f"LoadImage.image={photos}/*.png")
    assert [c[0] for c in glob_axis.choices] == [str(photos / "b.png")]
    assert plan.input_files(f"LoadImage.image={photos}/b.png") is None  # one file: a plain --input
    with pytest.raises(UsageError, match="the pattern matches no file"):
        plan.input_files(f"LoadImage.image={photos}/*.webp")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match=f"no image, video or audio file in {empty}"):
        plan.input_files(f"LoadImage.image={empty}")
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}
    made = plan.Plan([Workflow("up.json", "upscale", graph)], [axis])
    assert [p.name for p in made] == ["upscale[a.jpg]", "upscale[b.png]"]
    assert made[1].uploads == [("1", "image", str(photos / "b.png"))]
    assert made[1].values == {"LoadImage.image": str(photos / "b.png")}


def test_several_workflows_a_column_applies_where_its_node_is(tmp_path):
    other = Workflow("b.json", "b", {"1": {"class_type": "Other", "inputs": {"x": 1}}})
    path = data_file(tmp_path, "p.csv", "name,KSampler.cfg,Other.x\nfirst,5,6\n")
    made = plan.Plan([wf("a"), other], [plan.rows(params.read(path))])
    assert [(p.name, p.values) for p in made] == [("a/first", {"KSampler.cfg": 5}), ("b/first", {"Other.x": 6})]


def test_shard_keeps_the_global_index_and_the_digest_follows_the_data(tmp_path):
    made = plan.Plan([wf()], [plan.sweep("KSampler.cfg=1..10")])
    shard = made.select((2, 3))
    assert [p.index for p in shard] == [1, 4, 7] and [p.name for p in shard][0] == "txt2img[cfg=2]"
    assert sorted(p.index for k in (1, 2, 3) for p in made.select((k, 3))) == list(range(10))
    again = plan.Plan([wf()], [plan.sweep("KSampler.cfg=1..10")])
    other = plan.Plan([wf()], [plan.sweep("KSampler.cfg=1..11")])
    assert made.digest() == again.digest() != other.digest()


def test_set_applies_before_the_plan():
    template, = apply([wf()], [parse_assignment("--set", "KSampler.steps=3")])
    made = plan.Plan([template], [plan.sweep("KSampler.cfg=1,2")])
    assert made[1].graph["1"]["inputs"]["steps"] == 3 and made[1].values == {"KSampler.cfg": 2}


def test_a_batch_too_big_is_refused():
    with pytest.raises(UsageError, match="the batch would make 10000000000 prompts"):
        plan.Plan([wf()], [plan.sweep("KSampler.cfg=1..100000"), plan.sweep("KSampler.steps=1..100000")])


def test_dry_run_line():
    p = plan.Plan([wf()], [plan.sweep('Positive.text=["a \\"fox\\"\\nrunning"]')])[0]
    # one line each: the name shows printable characters only, the values are JSON
    assert plan.line(p) == 'txt2img[text=a "fox"?running]\tPositive.text="a \\"fox\\"\\nrunning"'


def test_a_prompt_checked_in_its_changed_nodes_alone_gets_the_whole_checks_answer():
    from comfy_cli import check

    info = dict(INFO, Loader={"input": {"required": {"ckpt": [["a.safetensors", "b.safetensors"], {}]}},
                              "output": ["MODEL"]},
                SaveImage={"input": {"required": {"images": ["LATENT"]}}, "output_node": True, "output": []})
    template = wf()
    template.graph["7"]["class_type"] = "Unknown"  # an error of the file itself, in every prompt
    for graph_fix in (False, True):
        if graph_fix:
            del template.graph["7"]
            del template.graph["6"]
        made = plan.Plan([template], [plan.sweep("KSampler.steps=[0, 5, 500]"),
                                      plan.sweep('Loader.ckpt=["a.safetensors", "c.safetensors"]')])
        for p in made:
            assert made.problems(p, info) == check.check(p.graph, info), p.name
    assert made.problems(made[2], info) == {}  # steps 5, a.safetensors: fine
