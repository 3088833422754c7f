"""--report opened in a real browser: Debian's chromium, driven headless by Playwright (issue 18,
item 11). Never skipped: without chromium or Playwright these tests fail, saying what to install."""

import json
import os
import shutil
import time

import pytest

from comfy_cli import htmlreport, manifest
from comfy_cli.sim.images import png_bytes, seeded_image
from test_run_e2e import EXAMPLES, cli, start, workflow

pytestmark = pytest.mark.timeout(180)

HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
HOSTILE_FILE = "<img src=x onerror=window.pwned=3>"  # a name the server gives an output


def chromium_path():
    path = os.environ.get("COMFY_CLI_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("chromium is not installed, and the report's tests open it in a real browser: "
                    "apt-get update && apt-get install -y chromium (.ci/run does it), or set COMFY_CLI_CHROMIUM")
    return path


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: pip install -e '.[test]' (its browser is Debian's chromium; "
                    "never run 'playwright install')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, timeout=120000,  # (a busy machine)
                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()


class Opened:
    """A report open in a page of `width` px, with every error and dialog it caused."""

    def __init__(self, browser, path, width=1200):
        self.page = browser.new_page(viewport={"width": width, "height": 900})
        self.page.set_default_timeout(60000)
        self.problems = []
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        self.page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}")
                     if m.type in ("error", "warning") else None)
        self.page.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.goto("file://" + os.path.abspath(path))
        self.page.wait_for_load_state("load")

    def images(self):
        """Load every image (they are lazy) and say, for each, whether it loaded."""
        self.page.evaluate("document.querySelectorAll('img').forEach(function (i) { i.loading = 'eager'; })")
        # (Polled from here: wait_for_function evaluates a string, which the page's CSP forbids.)
        deadline = time.monotonic() + 60
        while not self.page.evaluate("Array.from(document.images).every(function (i) { return i.complete; })"):
            assert time.monotonic() < deadline, "the images did not finish loading in 60 s"
            self.page.wait_for_timeout(50)
        return self.page.evaluate("Array.from(document.images).map(function (i) {"
                                  " return [i.getAttribute('src'), i.naturalWidth > 0]; })")

    def texts(self, selector):
        return self.page.eval_on_selector_all(selector, "els => els.map(e => e.textContent)")

    def not_run(self):
        """Nothing hostile ran: no global it would set, no error, no dialog, no blocked script."""
        assert self.page.evaluate("typeof window.pwned") == "undefined"
        assert self.problems == []

    def close(self):
        self.page.close()


def made_report(tmp_path):
    """A cfg x steps grid of real PNG files, one failed cell, hostile prompt text everywhere."""
    out = tmp_path / "out"
    out.mkdir()
    records = []
    for cfg in (4, 6, 8):
        for steps in (20, 30):
            i = len(records)
            failed = (cfg, steps) == (8, 30)
            name = f"cat{i}.png"
            if not failed:
                (out / name).write_bytes(png_bytes(seeded_image(i)))
            records.append({
                "index": i, "name": f"txt2img[cfg={cfg},steps={steps}]", "workflow": "txt2img.json",
                "values": {"KSampler.cfg": cfg, "KSampler.steps": steps, "CLIPTextEncode.text": HOSTILE},
                "status": "failed" if failed else "success", "server": "http://127.0.0.1:1",
                "message": f"failed at node 3 (KSampler): {HOSTILE}" if failed else None,
                "timings": {"total_s": 2.0}, "node_timings": [{"node": "3", "title": HOSTILE, "seconds": 1.5,
                                                                "cached": False}],
                "outputs": [] if failed else [{"node": "9", "filename": HOSTILE_FILE + "_00001_.png", "subfolder": "",
                                               "type": "output", "url": None, "path": name}]})
    page = tmp_path / "report.html"
    page.write_text(htmlreport.render(records, {"title": HOSTILE, "finished": True, "exit_code": 1, "files": "out/",
                                                "servers": ["http://127.0.0.1:1"], "total": 6}))
    return page


def test_the_grid_images_labels_and_hostile_text_in_a_real_browser(browser, tmp_path):
    view = Opened(browser, made_report(tmp_path))
    try:
        loaded = view.images()
        assert sorted(src for src, _ in loaded) == sorted(f"out/cat{i}.png" for i in range(5))
        assert all(ok for _, ok in loaded), loaded
        assert view.texts("table.grid th.row") == ["KSampler.cfg = 4", "KSampler.cfg = 6", "KSampler.cfg = 8"]
        assert view.texts("table.grid th.col") == ["KSampler.steps = 20", "KSampler.steps = 30"]
        # Each cell holds the prompt made of its row's and column's values.
        cells = view.page.eval_on_selector_all(
            "table.grid td", "tds => tds.map(td => [td.dataset.row, td.dataset.col, td.querySelector('.cell').dataset.name])")
        assert cells == [[f"KSampler.cfg = {c}", f"KSampler.steps = {s}", f"txt2img[cfg={c},steps={s}]"]
                         for c in (4, 6, 8) for s in (20, 30)]
        failed = view.page.inner_text("td[data-row='KSampler.cfg = 8'][data-col='KSampler.steps = 30']")
        assert "failed" in failed and "failed at node 3 (KSampler): " + HOSTILE in failed
        # The hostile text is shown as text, and did not run.
        assert HOSTILE in view.page.inner_text("#prompts") and HOSTILE in view.page.title()
        view.not_run()
        # The page's own script runs: the filter.
        view.page.select_option("#filter-status", "failed")
        assert view.page.inner_text("#filter-count") == "1 of 6"
        assert view.page.eval_on_selector_all("#prompts tbody tr:not([hidden])", "rs => rs.length") == 1
        view.not_run()
    finally:
        view.close()


def test_a_narrow_screen_gets_no_sideways_page_and_readable_cards(browser, tmp_path):
    view = Opened(browser, made_report(tmp_path), width=360)
    try:
        assert view.page.evaluate("document.documentElement.scrollWidth") <= 360
        assert view.page.eval_on_selector("#prompts thead", "e => getComputedStyle(e).display") == "none"
        rows = view.page.eval_on_selector_all("#prompts tbody tr", "rs => rs.map(r => r.getBoundingClientRect().width)")
        assert len(rows) == 6 and all(w <= 360 for w in rows)
        size = view.page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
        assert size >= 14
        assert all(ok for _, ok in view.images())
        view.not_run()
    finally:
        view.close()


def hostile_workflows(tmp_path):
    ok = json.loads((EXAMPLES / "steps.json").read_text())
    ok["1"]["inputs"]["seconds_per_step"] = 0.01
    ok["1"]["_meta"]["title"] = HOSTILE
    ok["2"]["inputs"]["filename_prefix"] = HOSTILE_FILE
    bad = json.loads((EXAMPLES / "fail.json").read_text())
    bad["1"]["inputs"]["seconds_per_step"] = 0.01
    bad["1"]["inputs"]["message"] = HOSTILE
    paths = []
    for name, graph in (("ok.json", ok), ("bad.json", bad)):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(graph))
    return [str(p) for p in paths]


@pytest.mark.parametrize("saved", [True, False], ids=["output-dir", "server URLs"])
def test_a_run_against_the_simulator_makes_a_report_that_shows_its_files(browser, sim, tmp_path, saved):
    page = tmp_path / "report.html"
    folder = ["--output-dir", str(tmp_path / "out")] if saved else []
    proc = cli("run", *hostile_workflows(tmp_path), "--url", sim.url, "--report", str(page), "--progress", "none",
               *folder)
    assert proc.returncode == 1, proc.stderr
    view = Opened(browser, page)
    try:
        loaded = view.images()
        assert len(loaded) == 1 and loaded[0][1], loaded
        assert loaded[0][0].startswith("out/" if saved else sim.url + "/view?filename=")
        note = view.page.inner_text("#files-note")
        assert ("output folder" in note) if saved else ("No --output-dir" in note)
        assert "1 succeeded" in view.page.inner_text("#summary") and "1 failed" in view.page.inner_text("#summary")
        assert HOSTILE in view.page.inner_text("#prompts")  # the failure's message, as text
        view.not_run()
    finally:
        view.close()


def test_the_report_is_rewritten_during_the_run_then_finished(sim, tmp_path):
    page = tmp_path / "report.html"
    quick = workflow(tmp_path, "steps", **{"1__steps": 1})
    slow = workflow(tmp_path, "steps", **{"1__steps": 400})  # about 4 s
    proc = start("run", quick, slow, "--url", sim.url, "--report", str(page), "--progress", "none")
    try:
        def running_with_one_ended(_):
            text = page.read_text() if page.exists() else ""
            return "Running" in text and "1 succeeded" in text

        assert sim.wait_for(running_with_one_ended, 60), page.read_text() if page.exists() else "no report"
        assert proc.poll() is None
        assert '<meta http-equiv="refresh"' in page.read_text()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    text = page.read_text()
    assert "Finished" in text and "2 succeeded" in text and "<dt>Exit code</dt><dd>0</dd>" in text
    assert '<meta http-equiv="refresh"' not in text
    assert [n for n in os.listdir(tmp_path) if n.endswith(".part")] == []  # written atomically


def test_an_existing_report_is_not_replaced_without_overwrite(sim, tmp_path):
    page = tmp_path / "report.html"
    page.write_text("mine")
    proc = cli("run", workflow(tmp_path, "steps"), "--url", sim.url, "--report", str(page))
    assert proc.returncode == 2 and f"--report {page}: the file exists; add --overwrite" in proc.stderr
    assert page.read_text() == "mine" and sim.submissions == []
    started = time.monotonic()
    again = cli("run", workflow(tmp_path, "steps", **{"1__steps": 1}), "--url", sim.url, "--report", str(page),
                "--overwrite")
    assert again.returncode == 0, again.stderr
    assert "Finished" in page.read_text() and time.monotonic() - started < 60
    nowhere = cli("run", workflow(tmp_path, "steps"), "--url", sim.url, "--report", str(tmp_path / "no" / "r.html"),
                  "--output-dir", str(tmp_path / "out"))
    assert nowhere.returncode == 2 and f"--report {tmp_path / 'no' / 'r.html'}: no such folder" in nowhere.stderr


def test_a_sweep_is_laid_out_as_a_grid_with_its_values_as_labels(browser, sim, tmp_path):
    graph = json.loads((EXAMPLES / "steps.json").read_text())
    graph["1"]["inputs"]["seconds_per_step"] = 0.01
    graph["3"] = {"class_type": "TestLog", "inputs": {"image": ["1", 0], "text": "x"}}
    graph["2"]["inputs"]["images"] = ["3", 0]
    path = tmp_path / "logged.json"
    path.write_text(json.dumps(graph))
    out = tmp_path / "out"
    page = out / "report.html"  # (inside the output folder, which the run makes)
    proc = cli("run", str(path), "--url", sim.url, "--sweep", "TestSteps.steps=1,2,3",
               "--sweep", "TestLog.text=" + json.dumps([HOSTILE, "a fox"]), "--output-dir", str(out),
               "--report", str(page), "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    lines = manifest.read(out / "manifest.jsonl")
    assert len(lines) == 6
    steps_key, text_key = [k for k in lines[0]["values"] if k.endswith((".steps", ".text"))]
    view = Opened(browser, page)
    try:
        loaded = view.images()
        assert len(loaded) == 6 and all(ok for _, ok in loaded), loaded
        assert view.texts("table.grid th.row") == [f"{steps_key} = {n}" for n in (1, 2, 3)]
        assert view.texts("table.grid th.col") == [f"{text_key} = {HOSTILE}", f"{text_key} = a fox"]
        cells = view.page.eval_on_selector_all(
            "table.grid td", "tds => tds.map(td => [td.dataset.row, td.dataset.col, td.querySelector('.cell').dataset.name])")
        by_values = {(f"{steps_key} = {d['values'][steps_key]}", f"{text_key} = {d['values'][text_key]}"): d["name"]
                     for d in lines}
        assert {(r, c): n for r, c, n in cells} == by_values
        view.not_run()
    finally:
        view.close()


def test_expect_differences_load_in_the_browser(browser, sim, tmp_path):
    """--expect with --report: expected, got and difference of a mismatch all load, relative to the page."""
    from test_expect_e2e import cli as expect_cli, write

    exp, out, page = tmp_path / "expected", tmp_path / "out", tmp_path / "site" / "report.html"
    page.parent.mkdir()
    made = expect_cli("run", write(tmp_path), "--url", sim.url, "--expect", str(exp), "--update-expected")
    assert made.returncode == 0, made.stderr
    proc = expect_cli("run", write(tmp_path, seed=6), "--url", sim.url, "--expect", str(exp), "--output-dir",
                      str(out), "--report", str(page))
    assert proc.returncode == 1, proc.stderr
    opened = Opened(browser, page)
    try:
        shown = {src: ok for src, ok in opened.images()}
        trio = opened.page.eval_on_selector_all("#differences figure[data-kind] img", "els => els.map(e => e.alt)")
        assert trio == ["expected", "got", "difference"]
        wanted = [src for src in shown if "expected/" in src or src.endswith(".diff.png")]
        assert len(wanted) == 2 and all(shown[src] for src in shown), shown
        opened.not_run()
    finally:
        opened.close()


def test_a_report_that_cannot_be_written_is_said_and_exit_4(sim, tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    page = folder / "report.html"
    slow = workflow(tmp_path, "steps", **{"1__steps": 200})  # about 2 s
    proc = start("run", slow, "--url", sim.url, "--report", str(page), "--progress", "none")
    try:
        assert sim.wait_for(lambda s: page.exists() and len(s.submissions) == 1, 30)
        shutil.rmtree(folder)  # the folder goes away under the run
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 4, err
    assert f"--report {page}: cannot write" in err and "1 succeeded" in err
