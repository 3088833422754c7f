"""comfy-cli merge end to end: a batch run as N shard processes against the simulator and merged
is the batch run as one process; gaps, other batches and repeated slices."""

import json
import os
import re

from comfy_cli import shard
from test_report_browser import browser  # noqa: F401 (the fixture)
from test_run_e2e import cli, workflow

SWEEP = ["--sweep", "Sampler.steps=1,2,3", "--sweep", "Sampler.seed=5,6"]


def clean_env(**env):
    out = {var: "" for var in shard.VARIABLES}
    out.update(env)
    return out


def manifest(folder):
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def batch(tmp_path):
    """Two workflow files (one fails) x a 3 x 2 sweep: 12 prompts, 6 of them failed."""
    return [workflow(tmp_path, "steps"), workflow(tmp_path, "fail", **{"1__steps": 4, "1__fail_at": 2}),
            "--set", "Sampler.seconds_per_step=0.01"]


def run_shards(sim, tmp_path, files, n, only=None):
    folders = []
    for k in range(1, n + 1):
        folder = tmp_path / f"shard-{k}"
        folders.append(folder)
        if only is not None and k not in only:
            continue
        proc = cli("run", *files, *SWEEP, "--shard", "auto", "--url", sim.url, "--output-dir", str(folder),
                   "--progress", "none", timeout=90, env=clean_env(COMFY_SHARD=f"{k}/{n}"))
        assert proc.returncode in (0, 1), proc.stderr
    return folders


def essence(records):
    """What must be equal between one run and merged shards: per item, in order."""
    return [(r["index"], r["name"], r["values"], r["status"], r["attempt"], r["message"], len(r["outputs"]))
            for r in records]


def cells(html):
    return re.findall(r'<div class="cell" data-name="([^"]*)"', html)


def test_shards_merged_equal_one_run(sim, tmp_path):
    files = batch(tmp_path)
    whole = tmp_path / "whole"
    one = cli("run", *files, *SWEEP, "--url", sim.url, "--output-dir", str(whole), "--json", "--report",
              str(tmp_path / "whole.html"), "--progress", "none", timeout=90)
    assert one.returncode == 1, one.stderr
    folders = run_shards(sim, tmp_path, files, 3)
    merged_dir = tmp_path / "merged"
    proc = cli("merge", *map(str, folders), "--output-dir", str(merged_dir), "--report", str(merged_dir / "r.html"),
               "--junit", str(tmp_path / "junit.xml"), "--json")
    assert proc.returncode == 1, proc.stderr
    single = sorted(manifest(whole), key=lambda r: r["index"])
    merged = manifest(merged_dir)
    assert [r["index"] for r in merged] == list(range(12))
    assert essence(merged) == essence(single)
    assert len({r["plan"]["fingerprint"] for r in merged + single}) == 1
    # the JSON summary has run's schema and the same prompts
    doc, ran = json.loads(proc.stdout), json.loads(one.stdout)
    assert doc["schema"] == ran["schema"] and doc["exit_code"] == ran["exit_code"] == 1
    assert [set(p) for p in doc["prompts"]] == [set(p) for p in ran["prompts"]]
    by_name = {p["name"]: p for p in ran["prompts"]}
    assert sorted(p["name"] for p in doc["prompts"]) == sorted(by_name)
    for p in doc["prompts"]:
        assert (p["status"], p["workflow"]) == (by_name[p["name"]]["status"], by_name[p["name"]]["workflow"])
        for out in p["outputs"]:
            assert os.path.isfile(out["path"]) and out["path"].startswith(str(merged_dir))
    # every merged file is there, once per output, and the manifest's relative paths find them
    paths = [o["path"] for r in merged for o in r["outputs"]]
    assert len(paths) == len(set(paths)) == 6
    assert all((merged_dir / p).is_file() for p in paths)
    # JUnit: one testcase per prompt, the failures counted
    junit = (tmp_path / "junit.xml").read_text()
    assert 'tests="12" failures="6" errors="0"' in junit
    # the HTML report: the same grid, every image link relative and resolving
    html = (merged_dir / "r.html").read_text()
    assert cells(html) == cells((tmp_path / "whole.html").read_text()) and len(cells(html)) == 12
    links = re.findall(r'<img class="thumb" loading="lazy" src="([^"]+)"', html)
    assert len(links) == 6 and all((merged_dir / link).is_file() for link in links)


def test_files_stay_where_they_are_without_output_dir(sim, tmp_path):
    folders = run_shards(sim, tmp_path, [workflow(tmp_path, "steps"), "--set", "Sampler.seconds_per_step=0.01"], 2)
    report = tmp_path / "reports" / "all.html"
    report.parent.mkdir()
    proc = cli("merge", *map(str, folders), "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    listed = proc.stdout.split()
    assert len(listed) == 6 and all(os.path.isfile(p) for p in listed)
    assert {os.path.dirname(p) for p in listed} == {str(f) for f in folders}
    links = re.findall(r'<img class="thumb" loading="lazy" src="([^"]+)"', report.read_text())
    assert len(links) == 6 and all(link.startswith("../shard-") for link in links)
    assert all((report.parent / link).is_file() for link in links)
    assert "6 prompts: 6 succeeded, 6 files" in proc.stderr
    assert not any(f.name == "manifest.jsonl" for f in tmp_path.iterdir())


def test_a_missing_slice_and_a_missing_prompt_are_named_exit_4(sim, tmp_path):
    folders = run_shards(sim, tmp_path, [workflow(tmp_path, "steps"), "--set", "Sampler.seconds_per_step=0.01"], 3,
                         only={1, 2})
    # slice 2's manifest loses its last prompt (a run killed before that line was written)
    lines = (folders[1] / "manifest.jsonl").read_text().splitlines()
    (folders[1] / "manifest.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    proc = cli("merge", str(folders[0]), str(folders[1]), "--json")
    assert proc.returncode == 4, proc.stderr
    assert "comfy-cli: slice 2/3: 1 of 2 prompts missing (batch items 5)" in proc.stderr
    assert "comfy-cli: slice 3/3 absent: 2 prompts" in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["exit_code"] == 4 and len(doc["prompts"]) == 3


def test_shards_of_different_batches_are_refused(sim, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = run_shards(sim, tmp_path / "a", [workflow(tmp_path, "steps"), "--set", "Sampler.seconds_per_step=0.01"], 2,
                   only={1})
    b = run_shards(sim, tmp_path / "b", [workflow(tmp_path, "steps"), "--set", "Sampler.seconds_per_step=0.02"], 2,
                   only={2})
    proc = cli("merge", str(a[0]), str(b[1]), "--output-dir", str(tmp_path / "m"))
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "shards of different batches" in line
    assert f"{a[0]} (plan" in line and f"{b[1]} (plan" in line
    assert not (tmp_path / "m" / "manifest.jsonl").exists()


def test_the_same_slice_twice_is_taken_once_the_later_run_wins(sim, tmp_path):
    files = [workflow(tmp_path, "steps"), "--set", "Sampler.seconds_per_step=0.01"]
    folders = run_shards(sim, tmp_path, files, 2)
    again = tmp_path / "shard-1-again"
    proc = cli("run", *files, *SWEEP, "--shard", "1/2", "--url", sim.url, "--output-dir", str(again),
               "--progress", "none", timeout=90)
    assert proc.returncode == 0, proc.stderr
    proc = cli("merge", str(again), *map(str, folders), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert len(doc["prompts"]) == 6
    later = {r["prompt_id"] for r in manifest(again)}
    assert {p["prompt_id"] for p in doc["prompts"]} >= later
    assert all(p["outputs"][0]["path"].startswith(str(again)) for p in doc["prompts"] if p["prompt_id"] in later)


def test_bad_folders_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.jsonl").write_text('{"index": 0}\nnot json\n{"index": 1}\n')
    for args, message in [([str(tmp_path / "nope")], "nope: no such folder"),
                          ([str(tmp_path / "empty")], "empty: no manifest.jsonl in it"),
                          ([str(bad)], "manifest.jsonl: line 2 is not JSON")]:
        proc = cli("merge", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_readme_round_runs_as_written(tmp_path):
    """README, "One batch again": three shards of a grid against the simulator, then merge."""
    import subprocess
    import sys

    from test_readme import README
    from test_run_e2e import EXAMPLES

    start = README.index("Try the whole round here")
    block = README[start:].split("```sh\n", 1)[1].split("```", 1)[0]
    (tmp_path / "examples").symlink_to(EXAMPLES)
    env = dict(os.environ, **clean_env(), PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    env.pop("COMFY_URL", None)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    merged = manifest(tmp_path / "merged")
    assert [r["index"] for r in merged] == list(range(6))
    assert [r["values"]["KSampler.cfg"] for r in merged] == [4, 4, 6, 6, 8, 8]
    assert "6 prompts: 6 succeeded, 6 files (merged from 3 shards" in proc.stderr
    html = (tmp_path / "merged" / "report.html").read_text()
    assert len(cells(html)) == 6


def test_the_merged_report_opens_in_a_browser_with_every_image(browser, tmp_path):
    """Shards of a cfg x steps grid merged without --output-dir: the page, in a folder of its own,
    shows the whole grid with its labels, and every image loads from the shards' folders."""
    from test_report_browser import Opened
    from test_run_e2e import EXAMPLES

    folders = []
    for k in (1, 2):
        folder = tmp_path / f"shard-{k}"
        proc = cli("run", str(EXAMPLES / "txt2img.json"), "--sweep", "KSampler.cfg=4..8:2", "--sweep",
                   "KSampler.steps=20,30", "--shard", f"{k}/2", "--simulate", "--output-dir", str(folder),
                   "--progress", "none", timeout=90)
        assert proc.returncode == 0, proc.stderr
        folders.append(str(folder))
    page = tmp_path / "site" / "report.html"
    page.parent.mkdir()
    proc = cli("merge", *folders, "--report", str(page))
    assert proc.returncode == 0, proc.stderr
    view = Opened(browser, page)
    try:
        assert view.texts("table.grid th.row") == ["KSampler.cfg = 4", "KSampler.cfg = 6", "KSampler.cfg = 8"]
        assert view.texts("table.grid th.col") == ["KSampler.steps = 20", "KSampler.steps = 30"]
        images = view.images()
        assert len(images) == 6 and all(loaded for _, loaded in images), images
        assert {src.split("/")[1] for src, _ in images} == {"shard-1", "shard-2"}
        view.not_run()
    finally:
        view.close()
