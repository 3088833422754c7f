"""summary.py: what a run's end amounts to (the exit code, the files, what a server may still
hold), from values alone."""

from comfy_cli import errors
from comfy_cli import summary as sm
from comfy_cli import tracker as tr
from comfy_cli.supervisor import Outcome
from comfy_cli.workflow import Workflow

WF = Workflow("w.json", "w", {"1": {"class_type": "A", "inputs": {}}})


def prompt(status, pid=None):
    p = tr.Prompt(pid or status, WF)
    p.status = status
    return p


def outcome(signal_code=None, files_missing=False, saved=None, not_withdrawn=()):
    return Outcome(None, signal_code, files_missing, saved or {}, list(not_withdrawn))


def end(outcomes, finals=(), silent=None, earlier=None):
    names = [f"http://s{i}" for i in range(len(outcomes))]
    return sm.End(names, list(outcomes), silent or [None] * len(outcomes), list(finals), list(finals), earlier or {})


def test_the_worst_prompt_decides():
    prompts = [prompt(tr.SUCCESS), prompt(tr.FAILED), prompt(tr.TIMEOUT)]
    assert sm.exit_code(prompts, [outcome()]) == errors.TIMEOUT
    assert sm.exit_code([prompt(tr.SUCCESS)], [outcome()]) == errors.OK
    assert sm.exit_code([], [outcome()]) == errors.OK


def test_a_cancel_exits_with_the_signal_that_asked_for_it():
    cancelled = [prompt(tr.CANCELLED), prompt(tr.SUCCESS)]
    assert sm.exit_code(cancelled, [outcome()]) == errors.SIGINT  # (no signal: the default)
    assert sm.exit_code(cancelled, [outcome(), outcome(signal_code=errors.SIGTERM)]) == errors.SIGTERM


def test_submit_is_done_once_its_prompts_are_on_the_server():
    sent = [prompt(tr.SUBMITTED, "a"), prompt(tr.RUNNING, "b")]
    assert sm.exit_code(sent, [outcome()], submit_only=True) == errors.OK
    assert sm.exit_code(sent, [outcome()]) == errors.UNREACHABLE  # (a `run` that ends there did not end them)
    assert sm.exit_code(sent + [prompt(tr.REJECTED)], [outcome()], submit_only=True) == errors.INVALID


def test_missing_files_or_an_incomplete_run_is_at_least_unreachable():
    ok = [prompt(tr.SUCCESS)]
    assert sm.exit_code(ok, [outcome(), outcome(files_missing=True)]) == errors.UNREACHABLE
    assert sm.exit_code(ok, [outcome()], incomplete=True) == errors.UNREACHABLE
    # ... but a signal still ranks above it
    assert sm.exit_code([prompt(tr.CANCELLED)], [outcome(signal_code=errors.SIGINT)],
                        incomplete=True) == errors.SIGINT


def test_files_count_saved_paths_or_listed_urls():
    saved = {"a": {"9:0": "/out/a.png", "9:1": None}}  # (one saved, one that could not be)
    e = end([outcome(saved=saved)], earlier={"old": {"9:0": "/out/old.png"}})
    assert sm.files(e, downloading=True) == 2
    assert sm.files(e, downloading=False) == 3
    assert sm.saved(e) == {"a": saved["a"], "old": {"9:0": "/out/old.png"}}


def test_a_server_overrides_an_earlier_run_for_the_same_prompt():
    e = end([outcome(saved={"a": {"k": "/new"}})], earlier={"a": {"k": "/old"}})
    assert sm.saved(e) == {"a": {"k": "/new"}}


def test_the_line_counts_the_final_attempts_and_the_files():
    e = end([outcome(saved={"a": {"k": "/x.png"}})], finals=[prompt(tr.SUCCESS, "a"), prompt(tr.FAILED, "b")])
    assert sm.line(e, True, 2.0) == "2 prompts: 1 succeeded, 1 failed, 1 file, 2.0 s"


def test_left_behind_names_the_server_and_why():
    e = end([outcome(), outcome(not_withdrawn=["p1", "p2"]), outcome(not_withdrawn=["p3"])],
            silent=[None, (10.0, "12:00:00"), None])
    assert sm.left_behind(e) == [
        "http://s1: did not answer again; these prompts moved away from it may still be in its queue: p1 p2",
        "http://s2: could not delete them there; these prompts moved away from it may still be in its queue: p3",
    ]
    assert sm.left_behind(end([outcome()])) == []
