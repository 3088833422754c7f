"""--report: the page made from manifest lines (pure), and the pace of its rewrites (fake clock)."""

import itertools
import re

import pytest

from comfy_cli import htmlreport

pytestmark = pytest.mark.timeout(30)

HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def rec(index, values=None, status="success", name=None, files=("a.png",), message=None, workflow="w.json",
        node_timings=()):
    return {"schema": "comfy-cli.manifest/1", "index": index, "name": name or f"w#{index}", "workflow": workflow,
            "values": values or {}, "status": status, "server": "http://gpu:8188",
            "message": message if status != "success" else None,
            "timings": {"total_s": 1.5 + index}, "node_timings": list(node_timings),
            "outputs": [{"node": "9", "filename": f, "subfolder": "", "type": "output",
                         "url": f"http://gpu:8188/view?filename={f}", "path": f"{index}_{f}"} for f in files]}


def grid_cells(page):
    """{(row label, col label): text of the cell} of every grid on the page."""
    return {(r, c): body for r, c, body in re.findall(r'<td data-row="([^"]*)" data-col="([^"]*)">(.*?)</td>', page)}


def test_two_varying_inputs_make_a_grid_rows_the_first_columns_the_second_the_last_varying_fastest():
    records = [rec(i, {"KSampler.cfg": cfg, "KSampler.steps": steps, "KSampler.seed": 1})
               for i, (cfg, steps) in enumerate((c, s) for c in (4, 6, 8) for s in (20, 30))]
    page = htmlreport.render(records, {"files": "out/"})
    assert re.findall(r'<th class="row" scope="row">([^<]*)</th>', page) == [
        "KSampler.cfg = 4", "KSampler.cfg = 6", "KSampler.cfg = 8"]
    assert re.findall(r'<th class="col" scope="col">([^<]*)</th>', page) == [
        "KSampler.steps = 20", "KSampler.steps = 30"]
    cells = grid_cells(page)
    assert len(cells) == 6
    assert 'src="out/3_a.png"' in cells[("KSampler.cfg = 6", "KSampler.steps = 30")]  # index 3: cfg 6, steps 30
    assert "KSampler.seed" not in re.sub(r'<section id="table">.*', "", page, flags=re.S)  # the same everywhere


def test_a_third_varying_input_gives_one_grid_per_value_and_a_failed_cell_shows_its_error():
    records = []
    for sampler in ("euler", "ddim"):
        for cfg in (4, 8):
            for steps in (10, 20):
                failed = (sampler, cfg, steps) == ("ddim", 8, 20)
                records.append(rec(len(records), {"s.sampler": sampler, "s.cfg": cfg, "s.steps": steps},
                                   status="failed" if failed else "success", files=() if failed else ("a.png",),
                                   message="failed at node 3 (KSampler): out of memory"))
    page = htmlreport.render(records, {"files": ""})
    assert re.findall(r'<h3 class="grid-title">([^<]*)</h3>', page) == ["s.sampler = euler", "s.sampler = ddim"]
    assert page.count('<table class="grid">') == 2
    second = page.split('<h3 class="grid-title">s.sampler = ddim</h3>')[1].split("</table>")[0]
    bad = grid_cells(second)[("s.cfg = 8", "s.steps = 20")]
    assert "failed" in bad and "out of memory" in bad and "<img" not in bad


def test_one_varying_input_is_a_one_column_grid_and_four_are_a_gallery_with_a_note():
    one = htmlreport.render([rec(i, {"Load.image": f"{n}.png"}) for i, n in enumerate("abc")], {"files": ""})
    assert set(grid_cells(one)) == {(f"Load.image = {n}.png", "") for n in "abc"}
    crossed = itertools.product((0, 1), repeat=4)
    four = htmlreport.render([rec(i, dict(zip(("a.x", "b.x", "c.x", "d.x"), v))) for i, v in enumerate(crossed)],
                             {"files": ""})
    assert '<table class="grid">' not in four and 'class="gallery"' in four
    assert "4 inputs vary (a.x, b.x, c.x, d.x): a grid shows at most three" in four


def test_an_input_unique_to_every_prompt_is_left_out_of_the_grid_and_values_that_do_not_cross_make_none():
    crossed = [rec(i, {"s.cfg": c, "s.steps": n, "s.seed": 1000 + i}) for i, (c, n) in
               enumerate((c, n) for c in (4, 6) for n in (10, 20))]
    cells = grid_cells(htmlreport.render(crossed, {"files": ""}))
    assert set(cells) == {(f"s.cfg = {c}", f"s.steps = {n}") for c in (4, 6) for n in (10, 20)}
    # A spreadsheet of rows each with its own cfg and steps: nothing to cross.
    rows = [rec(i, {"s.cfg": i, "s.steps": 10 + i}) for i in range(5)]
    page = htmlreport.render(rows, {"files": ""})
    assert '<table class="grid">' not in page and "every prompt has values of its own: no grid" in page
    # Three inputs that barely cross: 4 x 4 x 3 combinations for 6 prompts.
    sparse = [rec(i, {"a.x": i % 4, "b.x": (i * 3) % 4, "c.x": i % 3}) for i in range(6)]
    page = htmlreport.render(sparse, {"files": ""})
    assert '<table class="grid">' not in page and "do not cross (48 combinations for 6 prompts)" in page
    assert page.count('class="card"') == 6


def test_several_workflow_files_are_an_axis_of_their_own_the_first():
    records = [rec(0, {"s.cfg": 4}, workflow="a.json"), rec(1, {"s.cfg": 6}, workflow="a.json"),
               rec(2, {"s.cfg": 4}, workflow="b.json")]
    cells = grid_cells(htmlreport.render(records, {"files": ""}))
    assert set(cells) == {("workflow = a.json", "s.cfg = 4"), ("workflow = b.json", "s.cfg = 4"),
                          ("workflow = a.json", "s.cfg = 6"), ("workflow = b.json", "s.cfg = 6")}
    assert "—" in cells[("workflow = b.json", "s.cfg = 6")]  # no such prompt


def test_everything_from_the_server_and_the_workflow_is_escaped():
    r = rec(0, {"CLIPTextEncode.text": HOSTILE, HOSTILE: 1}, status="failed", name=HOSTILE, message=HOSTILE,
            files=(HOSTILE + ".png",), workflow=HOSTILE,
            node_timings=[{"node": "1", "title": HOSTILE, "seconds": 2.0, "cached": False}])
    r["server"] = HOSTILE
    page = htmlreport.render([r, rec(1, {"CLIPTextEncode.text": "b"})], {"title": HOSTILE, "servers": [HOSTILE],
                                                                         "files": "out/"})
    assert page.count("<script") == 1  # the page's own
    assert "<img src=x" not in page and "onerror=" not in page.replace('onerror=&quot;', "")
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page


def test_links_are_quoted_relative_paths_or_http_urls_never_a_script_url():
    r = rec(0, files=("x.png",))
    r["outputs"][0]["path"] = "javascript:alert(1)/a b.png"
    assert 'href="out/javascript%3Aalert%281%29/a%20b.png"' in htmlreport.render([r], {"files": "out/"})
    r["outputs"][0]["url"] = "javascript:alert(1)"
    page = htmlreport.render([r], {"files": None})
    assert "javascript:alert" not in page and "x.png (not saved)" in page
    assert "No --output-dir: files link to the servers' /view URLs" in page
    u = rec(0, files=("y.png",))
    assert 'src="http://gpu:8188/view?filename=y.png"' in htmlreport.render([u], {"files": None})


def test_video_and_audio_get_players_other_files_a_link():
    page = htmlreport.render([rec(0, files=("clip.mp4", "voice.flac", "mesh.glb", "pic.webp"))], {"files": ""})
    assert '<video controls preload="metadata" src="0_clip.mp4"' in page
    assert '<audio controls preload="none" src="0_voice.flac"' in page
    assert '<a href="0_mesh.glb">mesh.glb</a>' in page
    assert '<img class="thumb" loading="lazy" src="0_pic.webp"' in page


def test_summary_table_and_the_last_attempt_of_a_retried_item():
    first = rec(0, status="failed", message="lost")
    again = rec(0, name="w#0")
    timed = rec(1, node_timings=[{"node": "1", "title": "Load", "seconds": 0.5, "cached": False},
                                 {"node": "3", "title": "KSampler", "seconds": 7.25, "cached": False},
                                 {"node": "2", "title": "Cached", "seconds": 0.0, "cached": True}])
    page = htmlreport.render([first, again, timed], {"finished": True, "exit_code": 0, "wall_s": 75.2, "total": 2,
                                                     "servers": ["http://a:1", "http://b:2"]})
    assert '<li class="chip s-success" data-status="success">2 succeeded</li>' in page
    assert "failed" not in re.sub(r"<script>.*?</script>|<style>.*?</style>", "", page, flags=re.S)
    assert "<dt>Exit code</dt><dd>0</dd>" in page and "<dt>Wall time</dt><dd>1 min 15 s</dd>" in page
    assert "<dt>Servers</dt><dd>http://a:1<br>http://b:2</dd>" in page
    assert ">KSampler (7.25 s)</td>" in page
    assert page.count('<tr data-status="success">') == 2
    assert 'http-equiv="refresh"' not in page


def test_a_page_made_during_the_run_says_so_and_reloads_itself():
    page = htmlreport.render([rec(0)], {"finished": False, "total": 10, "running": 2, "queued": 3, "refresh": 5,
                                        "updated": "12:00:03"})
    assert '<meta http-equiv="refresh" content="5">' in page and "Running" in page and "12:00:03" in page
    for text in ("2 running", "3 queued on a server", "4 waiting to be sent"):
        assert text in page


def test_the_page_is_one_file_that_fetches_nothing():
    page = htmlreport.render([rec(i, {"s.cfg": i}) for i in range(5)], {"files": "out/"})
    assert not re.search(r'<(link|iframe|object|embed)\b|@import|url\(|src="(?!out/)', page)
    assert "script-src 'sha256-" in page and "default-src 'none'" in page


def test_a_thousand_prompts_make_a_page_of_a_few_megabytes_at_most():
    records = [rec(i, {"s.cfg": i % 10, "s.steps": i // 10, "CLIPTextEncode.text": "a fox " * 20},
                   node_timings=[{"node": str(n), "title": f"Node {n}", "seconds": n / 10, "cached": False}
                                 for n in range(8)]) for i in range(1000)]
    page = htmlreport.render(records, {"files": "out/"})
    assert len(page.encode()) <= 5 * 1024 * 1024


def test_pace_rewrites_at_once_then_every_few_seconds_when_something_changed():
    pace = htmlreport.Pace(every=3.0)
    assert pace.due(100.0, (0, 0))
    assert not pace.due(101.0, (1, 0))  # too soon
    assert pace.due(103.0, (1, 0))
    assert not pace.due(107.0, (1, 0))  # nothing changed
    assert pace.due(107.5, (2, 1))
    # A slow render (2 s) spaces the rewrites to five times that.
    assert pace.due(111.0, (3, 1), took=2.0)
    assert not pace.due(120.0, (4, 1)) and pace.due(121.0, (4, 1))
