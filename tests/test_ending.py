"""ending.Ending: what a run says and writes once its loop is over, with the run's collaborators
faked (a view that keeps its notes, a report page that fails on demand)."""

import io
import json

from comfy_cli import errors
from comfy_cli import summary as sm
from comfy_cli import tracker as tr
from comfy_cli.ending import Ending
from comfy_cli.runner import Options
from comfy_cli.supervisor import Outcome
from comfy_cli.workflow import Workflow

WF = Workflow("w.json", "w", {"1": {"class_type": "A", "inputs": {}}})


class View:
    def __init__(self):
        self.notes = []

    def note(self, text):
        self.notes.append(text)


class Records:
    def __init__(self, problem=None):
        self._problem = problem

    def problem(self):
        return self._problem


class Page:
    def __init__(self, problem=None):
        self.problem, self.metas = problem, []

    def last(self, meta):
        self.metas.append(meta)
        return self.problem


def end(status=tr.SUCCESS, not_withdrawn=()):
    p = tr.Prompt("p1", WF)
    p.status = status
    return sm.End(["http://s"], [Outcome(None, None, False, {}, list(not_withdrawn))], [None], [], [p], {})


def ending(records=None, live=None, **opts):
    view, out, err = View(), io.StringIO(), io.StringIO()
    e = Ending(view, out, err, None, Options(url="http://s", workflows=[], **opts), records or Records(), live)
    return e, view, out, err


def finish(e, the_end=None, fatal=None):
    return e.finish(the_end or end(), fatal, 1.0, lambda prompt, item: "url", lambda code: {"exit_code": code})


def test_a_clean_end_says_one_line_and_exits_0():
    e, view, out, err = ending()
    assert finish(e) == errors.OK
    assert err.getvalue() == "1 prompt: 1 succeeded, 0 files, 1.0 s\n"
    assert view.notes == [] and out.getvalue() == ""


def test_a_junit_file_that_cannot_be_written_is_said_and_makes_it_4(tmp_path):
    path = tmp_path / "missing" / "junit.xml"
    e, view, out, err = ending(junit=str(path))
    assert finish(e) == errors.UNREACHABLE
    assert view.notes == [f"--junit {path}: cannot write: No such file or directory"]
    assert "1 succeeded" in err.getvalue()


def test_a_junit_file_is_written(tmp_path):
    path = tmp_path / "junit.xml"
    e, view, out, err = ending(junit=str(path))
    assert finish(e) == errors.OK
    assert path.read_text().startswith("<?xml")


def test_the_last_page_gets_the_code_and_its_failure_counts():
    page = Page()
    e, view, out, err = ending(live=page, report="r.html")
    assert finish(e, end(tr.FAILED)) == errors.FAILED
    assert page.metas == [{"exit_code": errors.FAILED}]
    page = Page("--report r.html: cannot write: gone")
    e, view, out, err = ending(live=page, report="r.html")
    assert finish(e) == errors.UNREACHABLE
    assert view.notes == ["--report r.html: cannot write: gone"]


def test_manifest_trouble_and_moved_prompts_are_said():
    e, view, out, err = ending(records=Records("cannot write m.jsonl: full"))
    assert finish(e, end(not_withdrawn=["x"])) == errors.UNREACHABLE
    assert view.notes == ["http://s: could not delete them there; these prompts moved away from it may still be in "
                          "its queue: x", "--output-dir: cannot write m.jsonl: full"]


def test_a_run_that_broke_off_or_only_submitted_has_no_summary_line():
    e, view, out, err = ending()
    assert finish(e, fatal=errors.ServerError("gone")) == errors.UNREACHABLE
    assert err.getvalue() == ""
    e, view, out, err = ending(submit_only=True)
    assert finish(e, end(tr.SUBMITTED)) == errors.OK
    assert err.getvalue() == ""


def test_json_gets_the_summary_document():
    e, view, out, err = ending(json=True)
    assert finish(e, end(tr.TIMEOUT)) == errors.TIMEOUT
    doc = json.loads(out.getvalue())
    assert doc["exit_code"] == errors.TIMEOUT and doc["server"] == "http://s"
