"""--expect, --tolerance and --update-expected: the real `comfy-cli` against the simulator."""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
from xml.etree import ElementTree as ET

import pytest
from PIL import Image
from test_compare import tree

from comfy_cli.sim import Faults, SimServer

pytestmark = pytest.mark.timeout(60)


def cli(*args, env=None, no_pillow=False, timeout=45):
    full_env = dict(os.environ)
    full_env.pop("COMFY_URL", None)
    full_env.update(env or {})
    if no_pillow:  # this process cannot import Pillow
        code = ("import sys; sys.modules['PIL'] = None; from comfy_cli.entry import main; "
                "sys.argv[0] = 'comfy-cli'; main()")
        cmd = [sys.executable, "-c", code, *args]
    else:
        cmd = [sys.executable, "-m", "comfy_cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)


def graph(seed=5, width=64, height=48, noise=0, text="a file", log="hello"):
    """A picture (SaveImage, node 9), a text file (node 5) and a text output (node 4)."""
    return {
        "1": {"class_type": "TestImage", "inputs": {"seed": seed, "width": width, "height": height,
                                                    "noise": noise, "noise_seed": 3}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "pic"}},
        "5": {"class_type": "TestSaveText", "inputs": {"text": text, "filename_prefix": "note"}},
        "4": {"class_type": "TestLog", "inputs": {"image": ["2", 0], "text": log}},
        "2": {"class_type": "TestImage", "inputs": {"seed": 1, "width": 8, "height": 8, "noise": 0, "noise_seed": 0}},
    }


def write(tmp_path, name="wf", **kw):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(graph(**kw)))
    return str(path)


@pytest.fixture
def expected(sim, tmp_path):
    """DIR with the expected files of 'wf' (graph() defaults), made by --update-expected."""
    exp = tmp_path / "expected"
    wf = write(tmp_path)
    proc = cli("run", wf, "--url", sim.url, "--expect", str(exp), "--update-expected")
    assert proc.returncode == 0, proc.stderr
    assert sorted(tree(exp)) == ["wf/4_text_0.txt", "wf/4_text_1.txt", "wf/5_0.txt", "wf/9_0.png"]
    for line in ("wf: node 9 image 0: added", "wf: node 5 file 0: added", "wf: node 4 text 0: added",
                 "--update-expected: 4 added, 0 updated, 0 removed in"):
        assert line in proc.stderr
    with Image.open(exp / "wf" / "9_0.png") as img:
        assert img.size == (64, 48)
    return exp


def test_same_outputs_pass_and_nothing_is_written(sim, tmp_path, expected):
    before = tree(expected)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = cli("run", write(tmp_path), "--url", sim.url, "--expect", str(expected), env={"TMPDIR": str(scratch)})
    assert proc.returncode == 0, proc.stderr
    assert "1 prompt: 1 succeeded" in proc.stderr and "mismatch" not in proc.stderr
    assert proc.stdout.split()[0].startswith(sim.url + "/view?")  # no --output-dir: URLs, as without --expect
    assert tree(expected) == before
    assert os.listdir(scratch) == []  # the temporary download folder is gone
    assert "Traceback" not in proc.stderr


def test_noise_within_the_tolerance_passes(sim, tmp_path, expected):
    wf = write(tmp_path, noise=1)
    proc = cli("run", wf, "--url", sim.url, "--expect", str(expected), "--json")
    assert proc.returncode == 0, proc.stderr
    outcome = next(o for o in json.loads(proc.stdout)["prompts"][0]["expected"] if o["output"] == "node 9 image 0")
    assert outcome["status"] == "match"
    assert 0 < outcome["mean_difference"] < 1 and outcome["pixels_off"] == 0
    strict = cli("run", wf, "--url", sim.url, "--expect", str(expected), "--tolerance", "0.1")
    assert strict.returncode == 1
    assert "wf: mismatch: node 9 image 0: mean difference 0.7 > 0.1, 0% of pixels off (<= 1.0%)" in strict.stderr


def test_a_changed_picture_is_a_mismatch(sim, tmp_path, expected):
    out = tmp_path / "out"
    junit = tmp_path / "junit.xml"
    proc = cli("run", write(tmp_path, seed=6), "--url", sim.url, "--expect", str(expected), "--output-dir",
               str(out), "--json", "--junit", str(junit))
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    prompt = doc["prompts"][0]
    assert doc["exit_code"] == 1 and prompt["status"] == "mismatch"
    assert prompt["error"]["type"] == "mismatch"
    line = prompt["error"]["differences"][0]
    assert line.startswith("node 9 image 0: mean difference ") and "% of pixels off (> 1.0%)" in line
    image = next(o for o in prompt["expected"] if o["output"] == "node 9 image 0")
    assert image["status"] == "mismatch" and image["mean_difference"] > 50
    assert os.path.dirname(image["got"]) == str(out) and image["diff"] == image["got"][:-4] + ".diff.png"
    with Image.open(image["diff"]) as diff:
        assert diff.size == (64, 48)
    assert [o["status"] for o in prompt["expected"] if o["output"] != "node 9 image 0"] == ["match"] * 3
    assert f"wf: mismatch: {line}" in proc.stderr
    assert "1 prompt: 1 mismatched" in proc.stderr
    line_of = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert line_of["status"] == "mismatch" and line_of["message"] == f"mismatch: {line}"
    listed = next(o for o in line_of["expected"] if o["output"] == "node 9 image 0")
    assert listed["diff"] == os.path.basename(image["diff"]) and listed["mean_difference"] == image["mean_difference"]
    case = ET.parse(junit).getroot()
    assert case.get("failures") == "1" and case.get("errors") == "0"
    failure = case.find("testcase/failure")
    assert failure.get("type") == "mismatch" and f"wf: mismatch: {line}" in failure.get("message")


def test_a_changed_picture_without_output_dir_keeps_the_temporary_folder(sim, tmp_path, expected):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = cli("run", write(tmp_path, seed=6), "--url", sim.url, "--expect", str(expected),
               env={"TMPDIR": str(scratch)})
    assert proc.returncode == 1
    kept = os.listdir(scratch)
    assert len(kept) == 1 and kept[0].startswith("comfy-cli-expect-")
    assert f"outputs and difference images are kept in {scratch / kept[0]}" in proc.stderr
    names = sorted(os.listdir(scratch / kept[0]))
    assert [re.sub(r"\d{5}", "N", n) for n in names] == ["note_N_.txt", "pic_N_.diff.png", "pic_N_.png"]
    assert f"wf: node 9 image 0: difference image {scratch / kept[0] / names[1]}" in proc.stderr


def test_wrong_size(sim, tmp_path, expected):
    proc = cli("run", write(tmp_path, height=32), "--url", sim.url, "--expect", str(expected))
    assert proc.returncode == 1
    assert "wf: mismatch: node 9 image 0: size 64x32, expected 64x48" in proc.stderr


def test_a_file_that_is_not_an_image_is_compared_byte_for_byte(sim, tmp_path, expected):
    proc = cli("run", write(tmp_path, text="a filE"), "--url", sim.url, "--expect", str(expected))
    assert proc.returncode == 1
    assert "wf: mismatch: node 5 file 0: the bytes differ" in proc.stderr


def test_text_outputs_are_compared_exactly(sim, tmp_path, expected):
    proc = cli("run", write(tmp_path, log="hello "), "--url", sim.url, "--expect", str(expected))
    assert proc.returncode == 1
    assert "wf: mismatch: node 4 text 0: the text differs: expected 'hello', got 'hello '" in proc.stderr


def test_no_expected_file_is_a_mismatch(sim, tmp_path, expected):
    proc = cli("run", write(tmp_path, name="other"), "--url", sim.url, "--expect", str(expected), "--events",
               "--progress", "none")
    assert proc.returncode == 1
    assert "other: mismatch: node 9 image 0: no expected file: run once with --update-expected" in proc.stderr
    finished = [json.loads(line) for line in proc.stdout.splitlines() if '"finished"' in line][0]
    assert finished["status"] == "mismatch"
    assert {o["status"] for o in finished["expected"]} == {"missing"}
    assert not (expected / "other").exists()


def test_update_expected_refreshes_what_changed(sim, tmp_path, expected):
    (expected / "wf" / "3_0.png").write_bytes(b"an output no longer made")
    same = (expected / "wf" / "5_0.txt").read_bytes()
    proc = cli("run", write(tmp_path, seed=6), "--url", sim.url, "--expect", str(expected), "--update-expected")
    assert proc.returncode == 0, proc.stderr
    assert f"wf: node 9 image 0: updated {expected / 'wf' / '9_0.png'}" in proc.stderr
    assert f"wf: expected file 3_0.png: removed {expected / 'wf' / '3_0.png'}" in proc.stderr
    assert "--update-expected: 0 added, 1 updated, 1 removed in" in proc.stderr
    assert sorted(tree(expected)) == ["wf/4_text_0.txt", "wf/4_text_1.txt", "wf/5_0.txt", "wf/9_0.png"]
    assert (expected / "wf" / "5_0.txt").read_bytes() == same
    again = cli("run", write(tmp_path, seed=6), "--url", sim.url, "--expect", str(expected))
    assert again.returncode == 0, again.stderr
    nothing = cli("run", write(tmp_path, seed=6), "--url", sim.url, "--expect", str(expected), "--update-expected")
    assert "--update-expected: nothing to change in" in nothing.stderr


def test_a_failed_prompt_writes_nothing(sim, tmp_path):
    exp = tmp_path / "expected"
    wf = tmp_path / "fail.json"
    fail = graph()
    fail["1"] = {"class_type": "TestFail", "inputs": {"steps": 2, "fail_at": 1, "seconds_per_step": 0.0,
                                                      "message": "boom", "seed": 1}}
    wf.write_text(json.dumps(fail))
    proc = cli("run", str(wf), "--url", sim.url, "--expect", str(exp), "--update-expected")
    assert proc.returncode == 1
    assert "fail: failed at node 1" in proc.stderr and "nothing to change" in proc.stderr
    assert tree(exp) == {}


def test_count_copies_have_their_own_folders(sim, tmp_path):
    exp = tmp_path / "expected"
    wf = write(tmp_path)
    proc = cli("run", wf, "--count", "2", "--url", sim.url, "--expect", str(exp), "--update-expected")
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(exp)) == ["wf#1", "wf#2"]
    # copy 2 got seed + 1: a different picture, so each copy is checked against its own
    assert (exp / "wf#1" / "9_0.png").read_bytes() != (exp / "wf#2" / "9_0.png").read_bytes()
    assert cli("run", wf, "--count", "2", "--url", sim.url, "--expect", str(exp)).returncode == 0


def test_without_pillow_images_are_compared_byte_for_byte(sim, tmp_path, expected):
    same = cli("run", write(tmp_path), "--url", sim.url, "--expect", str(expected), no_pillow=True)
    assert same.returncode == 0, same.stderr
    assert same.stderr.count("Pillow is not installed, so images are compared byte for byte") == 1
    noisy = cli("run", write(tmp_path, noise=1), "--url", sim.url, "--expect", str(expected), no_pillow=True)
    assert noisy.returncode == 1
    assert "wf: mismatch: node 9 image 0: the bytes differ" in noisy.stderr


def test_wait_compares_too(sim, tmp_path, expected):
    sub = cli("submit", write(tmp_path, seed=6), "--url", sim.url)
    assert sub.returncode == 0, sub.stderr
    proc = cli("wait", sub.stdout.strip(), "--expect", str(expected))
    assert proc.returncode == 1, proc.stderr
    assert "wf: mismatch: node 9 image 0: mean difference" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--tolerance", "2"], "--tolerance needs --expect DIR"),
    (["--update-expected"], "--update-expected needs --expect DIR"),
    (["--expect", "{tmp}/nope"], "--expect {tmp}/nope: no such folder; add --update-expected to make it"),
    (["--expect", "{tmp}/wf.json"], "--expect {tmp}/wf.json: not a folder"),
    (["--expect", "{tmp}", "--tolerance", "2,5"], "--tolerance '2,5': the share of pixels off must end with %"),
])
def test_bad_options(tmp_path, args, message):
    wf = write(tmp_path)
    proc = cli("run", wf, "--url", "http://127.0.0.1:9", *[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode == 2
    assert message.format(tmp=tmp_path) in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_the_readme_example(tmp_path):
    """README: the examples pass against their expected files; another seed is a mismatch."""
    from test_run_e2e import EXAMPLES

    runs = [str(EXAMPLES / "steps.json"), str(EXAMPLES / "two_samplers.json")]
    exp = str(EXAMPLES / "expected")
    before = tree(exp)
    proc = cli("run", "--simulate", *runs, "--expect", exp)
    assert proc.returncode == 0, proc.stderr
    changed = cli("run", "--simulate", *runs, "--expect", exp, "--set", "Sampler.seed=43")
    assert changed.returncode == 1
    assert "steps: mismatch: node 2 image 0: mean difference" in changed.stderr
    assert "two_samplers: mismatch" not in changed.stderr
    assert tree(exp) == before


def test_the_report_shows_each_mismatch(sim, tmp_path, expected):
    import html
    import re as _re

    out, page = tmp_path / "out", tmp_path / "report" / "index.html"
    page.parent.mkdir()
    proc = cli("run", write(tmp_path, seed=6), "--url", sim.url, "--expect", str(expected), "--output-dir",
               str(out), "--report", str(page))
    assert proc.returncode == 1, proc.stderr
    text = page.read_text()
    part = text[text.index('<section id="differences">'):]
    part = part[:part.index("</section>")]
    pattern = r'<img loading="lazy" src="([^"]+)" alt="(?:expected|got|difference)"'
    srcs = [html.unescape(s) for s in _re.findall(pattern, part)]
    assert len(srcs) == 3 and srcs[0] == "../expected/wf/9_0.png"
    for src in srcs:  # every picture is there, relative to the page
        assert (page.parent / src).is_file(), src
    assert srcs[2].endswith(".diff.png")


# ---- a run stopped by a signal -----------------------------------------------------------------
class HeardCancel(Faults):
    """Says when the server was asked to interrupt; with `deaf`, it never answers (so a second
    signal finds the run waiting for the cancel)."""

    def __init__(self, deaf=True):
        super().__init__()
        self.heard, self.deaf = threading.Event(), deaf

    async def on_http(self, request):
        if request.method == "POST" and request.path.endswith("/interrupt"):
            self.heard.set()
            if self.deaf:
                await asyncio.sleep(60)
        return None


def last_runs(sim):
    """The server runs the prompt submitted last."""
    running, sent = sim.running(), sim.submissions
    return bool(running and sent and running[0] == sent[-1])


def slow(tmp_path):
    path = tmp_path / "slow.json"
    path.write_text(json.dumps({
        "1": {"class_type": "TestSteps", "inputs": {"steps": 5000, "seconds_per_step": 0.01, "seed": 1}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "slow"}}}))
    return str(path)


def stopped(sim, tmp_path, workflows, expected, signals, ready):
    """`run` with --expect and no --output-dir, stopped by SIGTERM `signals` times once `ready(err)`
    (what it said so far) and the server runs the last prompt, the slow one (so the cancel is an
    interrupt);
    (exit code, stderr, what is left in $TMPDIR)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))
    env.pop("COMFY_URL", None)
    with open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "comfy_cli", "run", *workflows, "--url", sim.url,
                                 "--expect", str(expected), "--progress", "none"],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            said = (tmp_path / "err.txt").read_text
            # The slow prompt (the run's last) must be the one running: a SIGTERM while the one
            # before it is still the server's current would find the slow one queued, and delete it.
            assert sim.wait_for(lambda s: last_runs(s) and ready(said()), 30), said()
            proc.send_signal(signal.SIGTERM)
            if signals == 2:
                assert sim.faults.heard.wait(30), f"no cancel was sent; the run said: {said()!r}"
                proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
        finally:
            proc.kill()
            proc.wait(10)
    return code, (tmp_path / "err.txt").read_text(), os.listdir(scratch)


@pytest.mark.parametrize("signals", [1, 2])
def test_a_run_stopped_by_a_signal_removes_its_temporary_folder(tmp_path, signals):
    """Stopped by a signal (twice: at once, without waiting for the cancel), nothing differed:
    the temporary download folder goes, as at a normal end."""
    (tmp_path / "expected").mkdir()
    with SimServer(faults=HeardCancel(deaf=signals == 2)) as sim:
        code, err, left = stopped(sim, tmp_path, [slow(tmp_path)], tmp_path / "expected", signals,
                                  lambda said: True)
    assert code == 143, err
    assert ("stopped at once" in err) == (signals == 2), err
    assert left == [], err


def test_a_run_stopped_at_once_keeps_the_folder_when_something_differed(tmp_path):
    with SimServer(faults=HeardCancel()) as sim:
        exp = tmp_path / "expected"
        made = cli("run", write(tmp_path), "--url", sim.url, "--expect", str(exp), "--update-expected")
        assert made.returncode == 0, made.stderr
        changed = write(tmp_path, seed=6)
        code, err, left = stopped(sim, tmp_path, [changed, slow(tmp_path)], exp, 2,
                                  lambda said: "wf: node 9 image 0: difference image" in said)  # (the loop knows)
    assert code == 143, err
    assert len(left) == 1 and left[0].startswith("comfy-cli-expect-")
    lines = err.splitlines()
    assert lines[-2].startswith("comfy-cli: stopped at once: prompts may still run on the server: "), err
    assert lines[-1] == (f"outputs and difference images are kept in {tmp_path / 'tmp' / left[0]} "
                         "(add --output-dir DIR to choose the folder)")
