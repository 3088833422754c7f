"""Batches made from data, end to end against the simulator: sweeps, --params, --input folders,
--dry-run listings, --shard and --journal over the whole product."""

import json
import os
import signal
import struct
import subprocess
import sys

import pytest
from aiohttp import web

from comfy_cli.sim import SimServer
from comfy_cli.sim.faults import Faults
from test_run_e2e import EXAMPLES, cli, no_traceback, workflow

pytestmark = pytest.mark.timeout(90)


def sent_graphs(sim):
    """The graph of every prompt the server ran, in the order it received them."""
    assert sim.wait_for(lambda s: set(s.submissions) <= set(s.history_ids()), 10)
    return [sim.history_entry(pid)["prompt"][2] for pid in sim.submissions]


def test_a_sweep_product_runs_each_combination_once_named_by_its_values(sim, tmp_path):
    path = workflow(tmp_path, "steps", **{"1__steps": 1})
    proc = cli("run", path, "--url", sim.url, "--json", "--sweep", "TestSteps.steps=1..3",
               "--sweep", "Sampler.seed=[10, 20]")
    assert proc.returncode == 0, proc.stderr
    prompts = json.loads(proc.stdout)["prompts"]
    assert [p["name"] for p in prompts] == ["steps[steps=1,seed=10]", "steps[steps=1,seed=20]",
                                            "steps[steps=2,seed=10]", "steps[steps=2,seed=20]",
                                            "steps[steps=3,seed=10]", "steps[steps=3,seed=20]"]
    ran = [(g["1"]["inputs"]["steps"], g["1"]["inputs"]["seed"]) for g in sent_graphs(sim)]
    assert ran == [(1, 10), (1, 20), (2, 10), (2, 20), (3, 10), (3, 20)]
    assert prompts[3]["values"] == {"TestSteps.steps": 2, "Sampler.seed": 20}


def test_a_spreadsheet_of_rows_with_names_and_blank_cells(sim, tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("name,TestSteps.steps,SaveImage.filename_prefix\nquick,1,q\n,2,\nlong,3,l\n")
    proc = cli("run", workflow(tmp_path, "steps"), "--url", sim.url, "--json", "--params", str(rows))
    assert proc.returncode == 0, proc.stderr
    prompts = json.loads(proc.stdout)["prompts"]
    assert [p["name"] for p in prompts] == ["quick", "steps[row 2]", "long"]
    graphs = sent_graphs(sim)
    assert [g["1"]["inputs"]["steps"] for g in graphs] == [1, 2, 3]
    assert [g["2"]["inputs"]["filename_prefix"] for g in graphs] == ["q", "steps", "l"]  # blank: the file's


@pytest.mark.parametrize("text, message", [
    ("TestSteps.steps\n2\n-4\n", "line 3, column TestSteps.steps: {wf}: node 1 (Sampler) input 'steps': Value -4 "
                                 "smaller than min of 0"),
    ("TestSteps.stepz\n2\n", "line 1, column 1 (TestSteps.stepz): {wf}: node 1 (Sampler) has no input 'stepz'; it has: seconds_per_step, seed, steps"),
    ("TestSteps.steps,Sampler.seed\n2,1\n3\n", "line 3: 1 cells, the header has 2"),
])
def test_bad_data_is_refused_before_anything_is_sent(sim, tmp_path, text, message):
    rows = tmp_path / "rows.csv"
    rows.write_text(text)
    path = workflow(tmp_path, "steps")
    proc = cli("run", path, "--url", sim.url, "--params", str(rows))
    assert proc.returncode == 2
    no_traceback(proc)
    assert proc.stderr == f"comfy-cli: error: --params {rows}: {message.format(wf=path)}\n"
    assert sim.submissions == []


@pytest.mark.parametrize("args, message", [
    (["--sweep", "TestSteps.steps=1,,2"], "--sweep 'TestSteps.steps=1,,2': value 2 is empty"),
    (["--sweep", "TestSteps.steps=[1, 1000000]"], "--sweep 'TestSteps.steps=[1, 1000000]': 1000000: "),
    (["--input", "LoadImage.image=nowhere/*.png"], "--input 'LoadImage.image=nowhere/*.png': the pattern matches "
                                                   "no file"),
])
def test_bad_sweeps_and_folders_are_refused_before_anything_is_sent(sim, tmp_path, args, message):
    proc = cli("run", workflow(tmp_path, "steps"), "--url", sim.url, *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and sim.submissions == []


def test_a_folder_of_images_each_uploaded_once_one_prompt_each(sim, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    png = (EXAMPLES / "input.png").read_bytes()
    for name in ("cat.png", "dog.png", "owl.png"):
        (photos / name).write_bytes(png + name.encode())  # three different files
    (photos / "notes.txt").write_text("not an image")
    proc = cli("run", str(EXAMPLES / "load_image.json"), "--url", sim.url, "--json", "--count", "2",
               "--input", f"LoadImage.image={photos}")
    assert proc.returncode == 0, proc.stderr
    prompts = json.loads(proc.stdout)["prompts"]
    assert [p["name"] for p in prompts] == ["load_image[cat.png]#1", "load_image[cat.png]#2", "load_image[dog.png]#1",
                                            "load_image[dog.png]#2", "load_image[owl.png]#1", "load_image[owl.png]#2"]
    assert sorted(f.name for f in sim.input_dir.iterdir()) == ["cat.png", "dog.png", "owl.png"]  # once each
    assert proc.stderr.count("uploaded ") == 3
    assert [g["1"]["inputs"]["image"] for g in sent_graphs(sim)] == ["cat.png", "cat.png", "dog.png", "dog.png",
                                                                     "owl.png", "owl.png"]


def test_at_columns_upload_files_named_relative_to_the_data_file(sim, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes((EXAMPLES / "input.png").read_bytes())
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"@LoadImage.image": "in/a.png", "name": "first"}\n{"name": "second"}\n')
    proc = cli("run", str(EXAMPLES / "load_image.json"), "--url", sim.url, "--json", "--params", str(rows))
    assert proc.returncode == 0, proc.stderr
    assert [p["name"] for p in json.loads(proc.stdout)["prompts"]] == ["first", "second"]
    # the second row leaves the workflow's own file (examples/input.png, a local file: uploaded too)
    assert [g["1"]["inputs"]["image"] for g in sent_graphs(sim)] == ["a.png", "input.png"]


def test_dry_run_with_data_lists_every_prompt_and_sends_nothing(sim, tmp_path):
    path = workflow(tmp_path, "steps")
    proc = cli("run", path, "--url", sim.url, "--dry-run", "--sweep", "TestSteps.steps=1,2", "--count", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "steps[steps=1]#1\tTestSteps.steps=1 TestSteps.seed=42", "steps[steps=1]#2\tTestSteps.steps=1 TestSteps.seed=43",
        "steps[steps=2]#1\tTestSteps.steps=2 TestSteps.seed=42", "steps[steps=2]#2\tTestSteps.steps=2 TestSteps.seed=43"]
    assert proc.stderr == "4 prompts planned, all pass the server's /object_info (dry run, nothing sent)\n"
    listed = cli("run", path, "--url", sim.url, "--dry-run", "--json", "--sweep", "Sampler.steps=[1, 20000000]")
    assert listed.returncode == 2
    doc = json.loads(listed.stdout)
    assert [(e["index"], e["name"], e["values"], e["ok"]) for e in doc] == [
        (0, "steps[steps=1]", {"Sampler.steps": 1}, True),
        (1, "steps[steps=20000000]", {"Sampler.steps": 20000000}, False)]
    assert "steps[steps=20000000]: would be rejected: Prompt outputs failed validation" in listed.stderr
    assert sim.submissions == []


def test_shard_takes_every_nth_prompt_of_the_whole_product(sim, tmp_path):
    path = workflow(tmp_path, "steps", **{"1__steps": 1})
    proc = cli("run", path, "--url", sim.url, "--json", "--sweep", "TestSteps.seed=1..4", "--count", "2",
               "--shard", "2/3")
    assert proc.returncode == 0, proc.stderr
    names = [p["name"] for p in json.loads(proc.stdout)["prompts"]]
    assert names == ["steps[seed=1]#2", "steps[seed=3]#1", "steps[seed=4]#2"]  # indices 1, 4, 7
    assert [g["1"]["inputs"]["seed"] for g in sent_graphs(sim)] == [2, 3, 5]


def test_submit_plans_the_same_batch_and_wait_keeps_its_names(sim, tmp_path):
    path = workflow(tmp_path, "steps", **{"1__steps": 1})
    sent = cli("submit", path, "--url", sim.url, "--json", "--sweep", "TestSteps.seed=[7, 8]")
    assert sent.returncode == 0, sent.stderr
    doc = json.loads(sent.stdout)
    assert [(p["name"], p["values"]) for p in doc["prompts"]] == [("steps[seed=7]", {"TestSteps.seed": 7}),
                                                                  ("steps[seed=8]", {"TestSteps.seed": 8})]
    waited = cli("wait", *[p["handle"] for p in doc["prompts"]], "--json")
    assert waited.returncode == 0, waited.stderr
    assert [p["name"] for p in json.loads(waited.stdout)["prompts"]] == ["steps[seed=7]", "steps[seed=8]"]


def test_a_killed_sweep_resumed_with_its_journal_runs_every_combination_once(tmp_path):
    path = workflow(tmp_path, "steps", **{"1__steps": 4, "1__seconds_per_step": 0.02})
    rows = tmp_path / "rows.csv"
    rows.write_text("TestSteps.steps\n3\n4\n5\n")
    journal = tmp_path / "j"
    with SimServer() as sim:
        args = [sys.executable, "-m", "comfy_cli", "run", path, "--url", sim.url, "--params", str(rows),
                "--sweep", "TestSteps.seed=1..6", "--journal", str(journal), "--json", "--progress", "none"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert sim.wait_for(lambda s: len(s.history_ids()) >= 5 or proc.poll() is not None, 30)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        final = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert final.returncode == 0, final.stderr
        assert len(json.loads(final.stdout)["prompts"]) == 18
        assert sim.wait_for(lambda s: len(s.history_ids()) >= 18, 10)
        ran = sorted((g["1"]["inputs"]["steps"], g["1"]["inputs"]["seed"])
                     for g in (sim.history_entry(pid)["prompt"][2] for pid in sim.history_ids()))
        assert ran == [(steps, seed) for steps in (3, 4, 5) for seed in range(1, 7)], "ran twice, or not at all"
        rows.write_text("TestSteps.steps\n3\n4\n6\n")  # other data: another batch
        other = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert other.returncode == 2 and "it records another batch" in other.stderr


def run_example(tmp_path, script, *args):
    env = dict(os.environ, SIMULATE="1", OUT=str(tmp_path / "out"),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    env.pop("COMFY_URL", None)
    return subprocess.run(["bash", str(EXAMPLES / script), *args], env=env, capture_output=True, text=True,
                          timeout=80, cwd=tmp_path)


def test_spreadsheet_example(tmp_path):
    proc = run_example(tmp_path, "spreadsheet.sh")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [(name, os.path.basename(path)) for name, path in rows] == [
        ("lighthouse", "lighthouse_00001_.png"), ("fox", "fox_00001_.png"), ("harbour", "harbour_00001_.png"),
        ("tower", "tower_00001_.png")]
    prompts = json.loads((tmp_path / "out.json").read_text())["prompts"]
    assert [p["name"] for p in prompts] == ["lighthouse", "fox", "harbour", "tower"]
    assert "4 prompts planned, all pass" in proc.stderr


def test_upscale_folder_example(tmp_path):
    proc = run_example(tmp_path, "upscale-folder.sh")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.split()) == 3
    for name in ("beach.png", "forest.png", "harbour.png"):
        assert f"upscale[{name}]: done" in proc.stderr
    sizes = {struct.unpack(">II", (tmp_path / p).read_bytes()[16:24]) for p in proc.stdout.split()}
    assert sizes == {(256, 256)}  # x4 (the simulator's LoadImage makes every file a 64x64 picture)


def test_grid_example(tmp_path):
    proc = run_example(tmp_path, "grid.sh")
    assert proc.returncode == 0, proc.stderr
    cells = [line.split("\t")[0] for line in proc.stdout.splitlines()]
    assert cells == [f"txt2img[cfg={cfg},steps={steps}]" for cfg in (4, 6, 8) for steps in (20, 30)]
    files = [line.split("\t")[1] for line in proc.stdout.splitlines()]
    assert len({(tmp_path / f).read_bytes() for f in files}) == 6  # six different pictures
    page = (tmp_path / "out.html").read_text()
    assert "txt2img_00006_.png" in page and "KSampler.cfg" in page


class UploadFaults(Faults):
    """The first upload answers 503 (tried again); any upload of a file named bad*.png 400."""

    def __init__(self):
        super().__init__()
        self.uploads = 0

    async def on_http(self, request):
        if request.path.endswith("/upload/image"):
            self.uploads += 1
            if self.uploads == 1:
                return web.Response(status=503, text="busy")
            form = await request.post()
            if form["image"].filename.startswith("bad"):
                return web.Response(status=400, text="Invalid image file")
        return None


def test_uploads_are_tried_again_when_the_server_is_busy_and_a_refused_file_rejects_its_prompt(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    png = (EXAMPLES / "input.png").read_bytes()
    for name in ("a.png", "bad.png", "c.png"):
        (photos / name).write_bytes(png + name.encode())
    faults = UploadFaults()
    with SimServer(faults=faults) as sim:
        proc = cli("run", str(EXAMPLES / "load_image.json"), "--url", sim.url, "--json",
                   "--input", f"LoadImage.image={photos}")
        assert proc.returncode == 2, proc.stderr
        prompts = json.loads(proc.stdout)["prompts"]
        assert [(p["name"], p["status"]) for p in prompts] == [
            ("load_image[a.png]", "success"), ("load_image[bad.png]", "rejected"), ("load_image[c.png]", "success")]
        assert f"cannot upload {photos / 'bad.png'}: " in prompts[1]["error"]["message"]
        assert len(sim.submissions) == 2


def test_dry_run_of_a_shard_lists_its_slice_and_a_semicolon_csv_is_read(sim, tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("name;TestSteps.steps\na;1\nb;2\nc;3\nd;4\n")  # (a spreadsheet saved where ',' is decimal)
    proc = cli("run", workflow(tmp_path, "steps"), "--url", sim.url, "--dry-run", "--params", str(rows),
               "--shard", "2/2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["b\tTestSteps.steps=2", "d\tTestSteps.steps=4"]
    assert proc.stderr.endswith("2 prompts planned, all pass the server's /object_info (dry run, nothing sent)\n")
    assert sim.submissions == []
