"""merge (pure): shards of one batch back together; different batches refused; gaps named."""

import pytest

from comfy_cli import merge
from comfy_cli.errors import UsageError


def line(index, k, n, size=10, status="success", run="r1", ended="2026-01-01T00:00:00Z", plan="p1", attempt=1,
         **more):
    record = {"index": index, "name": f"w#{index + 1}", "workflow": "w.json", "status": status, "run": run,
              "ended": ended, "attempt": attempt, "prompt_id": f"{run}-{index}-{attempt}", "server": "http://s",
              "plan": {"fingerprint": plan, "size": size, "shard": f"{k}/{n}"}, "outputs": [], "timings": {}}
    record.update(more)
    return record


def shard_lines(k, n, size=10, skip=(), **kw):
    return [(number, line(i, k, n, size, **kw)) for number, i in enumerate(range(k - 1, size, n), 1)
            if i not in skip]


def merged(*folders):
    shards = [s for folder, lines in folders for s in merge.split(folder, lines)]
    return merge.combine(shards)


def test_every_slice_makes_the_whole_batch_in_order():
    m = merged(("b", shard_lines(2, 3)), ("a", shard_lines(1, 3)), ("c", shard_lines(3, 3)))
    assert list(m.items) == list(range(10))
    assert m.gaps == [] and m.exit_code == 0
    assert m.origin[0] == "a" and m.origin[1] == "b" and m.origin[2] == "c"


def test_an_unsharded_run_is_slice_1_of_1():
    m = merged(("all", shard_lines(1, 1, size=4)))
    assert list(m.items) == [0, 1, 2, 3] and m.gaps == []


def test_a_missing_slice_and_missing_prompts_are_named_exit_4():
    m = merged(("a", shard_lines(1, 4, size=1000)), ("c", shard_lines(3, 4, size=1000, skip={2, 6, 10})))
    assert m.gaps == ["slice 2/4 absent: 250 prompts", "slice 3/4: 3 of 250 prompts missing (batch items 3, 7, 11)",
                      "slice 4/4 absent: 250 prompts"]
    assert m.exit_code == 4


def test_many_missing_prompts_are_named_up_to_ten():
    m = merged(("a", shard_lines(1, 1, size=30, skip=set(range(20)))))
    assert m.gaps == ["slice 1/1: 20 of 30 prompts missing (batch items 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ...)"]


def test_the_exit_code_is_the_worst_of_the_union():
    lines = shard_lines(1, 2, size=4)
    lines[1][1]["status"] = "failed"
    assert merged(("a", lines), ("b", shard_lines(2, 2, size=4))).exit_code == 1
    other = shard_lines(2, 2, size=4)
    other[0][1]["status"] = "rejected"
    assert merged(("a", lines), ("b", other)).exit_code == 2
    other[0][1]["status"] = "cancelled"
    assert merged(("a", lines), ("b", other)).exit_code == 130


def test_the_same_slice_twice_is_taken_once_the_later_run_wins():
    early = shard_lines(1, 2, size=4, status="failed", run="old", ended="2026-01-01T10:00:00Z")
    late = shard_lines(1, 2, size=4, status="success", run="new", ended="2026-01-01T11:00:00Z")
    for order in ([("late", late), ("early", early)], [("early", early), ("late", late)]):
        m = merged(*order, ("b", shard_lines(2, 2, size=4)))
        assert [a[-1]["run"] for i, a in m.items.items() if i % 2 == 0] == ["new", "new"]
        assert all(len(a) == 1 for a in m.items.values())
        assert m.exit_code == 0 and m.origin[0] == "late"


def test_the_later_run_wins_per_prompt():
    # the second run (a retried CI job killed half-way) ran only item 1 again
    first = shard_lines(1, 1, size=3, status="failed", run="a", ended="2026-01-01T10:00:00Z")
    second = [(1, line(1, 1, 1, size=3, run="b", ended="2026-01-01T12:00:00Z"))]
    m = merged(("x", first), ("y", second))
    assert [m.items[i][-1]["run"] for i in range(3)] == ["a", "b", "a"]


def test_a_retried_item_keeps_every_attempt_of_its_run():
    lines = [(1, line(0, 1, 1, size=1, status="failed", attempt=1)),
             (2, line(0, 1, 1, size=1, status="success", attempt=2))]
    m = merged(("a", lines))
    assert [r["attempt"] for r in m.items[0]] == [1, 2] and m.exit_code == 0
    doc = merge.summary(m, lambda record, out: None)
    assert [p["attempt"] for p in doc["prompts"]] == [1, 2]
    assert doc["schema"] == "comfy-cli.run/1" and doc["exit_code"] == 0


def test_shards_of_different_batches_are_refused_naming_them():
    with pytest.raises(UsageError) as caught:
        merged(("out/a", shard_lines(1, 2)), ("out/b", shard_lines(2, 2, plan="p2")))
    text = str(caught.value)
    assert "shards of different batches" in text and "out/a (plan p1" in text and "out/b (plan p2" in text
    assert caught.value.exit_code == 2


def test_shards_with_different_n_are_refused():
    with pytest.raises(UsageError, match=r"split the batch differently: a \(1/2\), b \(2/4\)"):
        merged(("a", shard_lines(1, 2)), ("b", shard_lines(2, 4)))


@pytest.mark.parametrize("change, message", [
    ({"plan": None}, "a/manifest.jsonl line 1: no plan recorded"),
    ({"plan": {"fingerprint": "p1", "size": 10, "shard": "9/4"}}, "the plan's shard or size is malformed"),
    ({"plan": {"fingerprint": "p1", "size": "x", "shard": "1/2"}}, "the plan's shard or size is malformed"),
    ({"index": 1}, "a/manifest.jsonl line 1: index 1 is not an item of slice 1/2 of 10"),
    ({"index": 12}, "index 12 is not an item"),
])
def test_malformed_lines_are_named(change, message):
    lines = shard_lines(1, 2)
    lines[0][1].update(change)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        merged(("a", lines))


def test_nothing_to_merge():
    with pytest.raises(UsageError, match="nothing to merge"):
        merge.combine([])


def test_prompts_feed_the_junit_report():
    from comfy_cli import report

    lines = shard_lines(1, 1, size=2)
    lines[1][1].update(status="failed", error={"message": "boom", "node_id": "3", "node_type": "KSampler",
                                                "exception_type": "RuntimeError"})
    lines[0][1]["timings"] = {"queued_s": 0.5, "total_s": 2.0}
    xml = report.junit_xml(merge.prompts(merged(("a", lines))), 3.0)
    assert 'tests="2" failures="1"' in xml and 'name="w#1"' in xml and 'time="2.000"' in xml
    assert "w#2: failed at node 3 (KSampler): RuntimeError: boom" in xml
