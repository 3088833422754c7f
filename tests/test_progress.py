"""A prompt's nodes as the client saw them (progress.Progress), on its own: pure, times given."""

import pytest

from comfy_cli import events as ev
from comfy_cli.progress import ALMOST, Progress
from comfy_cli.workflow import Workflow

pytestmark = pytest.mark.timeout(10)

GRAPH = {str(i): {"class_type": f"T{i}", "inputs": {}} for i in range(1, 5)}


def fresh():
    return Progress(Workflow("w.json", "w", dict(GRAPH)))


def executing(at, node):
    return ev.Executing(at, "p", node, None)


def step(at, node, value, top):
    return ev.Progress(at, "p", node, value, top)


def test_cached_nodes_are_done_in_no_time_and_never_ran():
    p = fresh()
    assert p.from_cache(ev.Cached(1.0, "p", ("1", "2")))
    assert not p.from_cache(ev.Cached(2.0, "p", ("2",)))  # again: nothing new
    assert p.done == {"1", "2"} and p.ran == set() and p.spans == {"1": [1.0, 1.0], "2": [1.0, 1.0]}
    assert p.done_count == 2 and p.total == 4
    p.advance()
    assert p.fill == pytest.approx(2 / 4)


def test_a_node_runs_from_its_executing_until_the_next_one_and_again_to_its_last_end():
    p = fresh()
    assert p.executing(executing(1.0, "1")) and not p.executing(executing(1.5, "1"))
    assert (p.node, p.node_at) == ("1", 1.0) and p.spans == {"1": [1.0, None]}
    assert p.executing(executing(3.0, "2"))
    assert p.spans["1"] == [1.0, 3.0] and p.done == {"1"} and p.ran == {"1", "2"}
    p.executing(executing(4.0, "1"))  # runs again: its span reaches to its last end
    assert p.spans["1"] == [1.0, None] and p.spans["2"] == [3.0, 4.0]
    p.executed("1", 6.0)
    assert p.spans["1"] == [1.0, 6.0]


def test_steps_count_within_the_running_node_and_a_first_progress_starts_its_node():
    p = fresh()
    assert p.stepped(step(1.0, "3", 1, 4))  # no `executing` seen for node 3
    assert (p.node, p.node_at, p.step) == ("3", 1.0, (1, 4)) and p.ran == {"3"}
    assert not p.stepped(step(1.2, "3", 1, 4))  # a repeat changes nothing
    p.advance()
    assert p.fill == pytest.approx(0.25 / 4)
    p.executing(executing(2.0, "4"))
    assert p.step is None and p.done == {"3"}


def test_fill_never_goes_back_and_reaches_one_only_on_success():
    p = fresh()
    p.stepped(step(1.0, "1", 3, 4))
    p.advance()
    high = p.fill
    p.stepped(step(2.0, "1", 0, 4))  # the node starts its steps again
    p.advance()
    assert p.fill == high
    p.finished(ev.ProgressState(3.0, "p", ("1", "2", "3", "4")))
    p.advance()
    assert p.fill == ALMOST  # every node done, but the prompt has not ended
    p.stop(4.0, success=True, told=True)
    assert p.fill == 1.0


def test_finished_nodes_close_their_spans_and_cached_ones_do_not_count_as_ran():
    p = fresh()
    p.from_cache(ev.Cached(0.5, "p", ("1",)))
    p.executing(executing(1.0, "2"))
    assert p.finished(ev.ProgressState(2.0, "p", ("1", "2")))
    assert not p.finished(ev.ProgressState(2.5, "p", ("1", "2")))
    assert p.spans["2"] == [1.0, 2.0] and p.ran == {"2"} and p.done == {"1", "2"}


def test_an_end_the_server_told_closes_the_running_node_and_one_given_up_leaves_it_open():
    told, given_up = fresh(), fresh()
    for p in (told, given_up):
        p.stepped(step(1.0, "1", 2, 4))
        p.advance()
    told.stop(5.0, success=False, told=True)
    given_up.stop(5.0, success=False, told=False)
    assert told.spans["1"] == [1.0, 5.0] and given_up.spans["1"] == [1.0, None]
    for p in (told, given_up):
        assert p.node is None and p.node_at is None and p.step is None
        assert p.fill == pytest.approx(0.5 / 4) and "1" not in p.done  # any end but success keeps the fill


def test_a_success_known_only_from_history_ran_every_node_not_cached():
    p = fresh()
    p.from_cache(ev.Cached(1.0, "p", ("1",)))
    p.succeeded({"4": {"images": []}})  # outputs came, but no node was seen running
    assert p.ran == {"2", "3", "4"} and p.done == set(GRAPH)
    seen = fresh()
    seen.executing(executing(1.0, "2"))
    seen.succeeded({})
    assert seen.ran == {"2"}  # seen running: only what ran is said to have run
