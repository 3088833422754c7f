"""The test data in the repository (tests/data): the recordings every trace test replays are all
there, and the recorded workflows are the graphs those scenarios submitted."""

import json

import pytest

from comfy_cli.workflow import load
from traces import WORKFLOWS, load_trace, trace_names

# Which recording submitted which workflow file, as captured.
SUBMITTED = {"steps_ok": "steps_ok", "steps_ok_cached": "steps_ok", "two_samplers": "two_samplers",
             "fail": "fail", "preview_binary": "preview", "invalid": "invalid",
             "invalid_no_output": "invalid_no_output", "invalid_unknown_node": "invalid_unknown_node"}


def test_every_recording_is_in_the_repository():
    names = trace_names()
    assert len(names) == 17
    assert set(SUBMITTED) <= set(names)
    for name in names:
        assert load_trace(name), name


@pytest.mark.parametrize("trace, wf", sorted(SUBMITTED.items()))
def test_recorded_workflows_are_what_the_recordings_submitted(trace, wf):
    path = WORKFLOWS / f"{wf}.json"
    graph = json.loads(path.read_text())
    posted = [line["http"]["request"]["prompt"] for line in load_trace(trace)
              if line.get("http", {}).get("path") == "/prompt"]
    assert posted == [graph]
    assert load(str(path)).graph == graph  # API format, as comfy-cli reads it


def test_every_recorded_workflow_loads():
    files = sorted(WORKFLOWS.glob("*.json"))
    assert len(files) == 8
    for path in files:
        assert load(str(path)).graph
