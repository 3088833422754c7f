"""report.summary_line: the one line that ends every run."""

import pytest

from comfy_cli import report
from comfy_cli import tracker as tr
from comfy_cli.workflow import Workflow

WF = Workflow("w.json", "w", {"1": {"class_type": "A", "inputs": {}}})


def prompts(**counts):
    out = []
    for status, n in counts.items():
        for i in range(n):
            p = tr.Prompt(f"{status}{i}", WF)
            p.status = status
            out.append(p)
    return out


def test_the_example():
    assert report.summary_line(prompts(success=11, failed=1), 3, 14.23) == \
        "12 prompts: 11 succeeded, 1 failed, 3 files, 14.2 s"


@pytest.mark.parametrize("counts, files, seconds, line", [
    ({"success": 1}, 1, 0.5, "1 prompt: 1 succeeded, 1 file, 0.5 s"),
    ({}, 0, 0.04, "0 prompts, 0 files, 0.0 s"),
    ({"timeout": 2, "success": 1}, 0, 3.0, "3 prompts: 1 succeeded, 2 timed out, 0 files, 3.0 s"),
    ({"cancelled": 1, "lost": 1, "rejected": 1, "interrupted": 1, "error": 1, "failed": 1}, 0, 1,
     "6 prompts: 1 failed, 1 interrupted, 1 rejected, 1 lost, 1 cancelled, 1 in error, 0 files, 1.0 s"),
    ({"running": 1, "submitted": 1, "success": 1}, 2, 1, "3 prompts: 1 succeeded, 2 not ended, 2 files, 1.0 s"),
    ({"success": 2}, 4, None, "2 prompts: 2 succeeded, 4 files"),
    ({"success": 1}, 1, 59.96, "1 prompt: 1 succeeded, 1 file, 1 min 0 s"),
    ({"success": 1}, 1, 125.4, "1 prompt: 1 succeeded, 1 file, 2 min 5 s"),
    ({"success": 1}, 1, 3725, "1 prompt: 1 succeeded, 1 file, 1 h 02 min"),
    ({"success": 1}, 1, -0.01, "1 prompt: 1 succeeded, 1 file, 0.0 s"),
    ({"success": 1}, 1, float("nan"), "1 prompt: 1 succeeded, 1 file"),
])
def test_counts_files_and_time(counts, files, seconds, line):
    assert report.summary_line(prompts(**counts), files, seconds) == line


def test_takes_a_dict_of_prompts_and_a_collection_of_files():
    board = {p.prompt_id: p for p in prompts(success=2, failed=1)}
    assert report.summary_line(board, ["a.png", "b.png"], 2) == "3 prompts: 2 succeeded, 1 failed, 2 files, 2.0 s"


def test_pure():
    ps = prompts(success=1)
    before = vars(ps[0]).copy()
    report.summary_line(ps, 0, 1.0)
    assert vars(ps[0]) == before
