"""--expect in the supervisor, with a fake clock: when a prompt's outputs are compared, and
what its end becomes."""

from test_supervisor import Harness

from comfy_cli import events as ev
from comfy_cli import supervisor as sv
from comfy_cli import tracker as tr
from comfy_cli.expect import Outcome


def saved(h):
    d = h.of(sv.Download)[-1]
    return h.feed(ev.Downloaded(h.now, "p0", d.key, "out/a.png", None))


def test_a_success_is_compared_once_its_files_are_saved():
    h = Harness(download=True, expect=True)
    h.accept()
    h.succeed()
    assert not h.of(sv.Compare)  # not before the file is there
    out = saved(h)
    assert h.of(sv.Compare, out) == [sv.Compare("p0")]
    assert not h.of(sv.Report) and not h.sup.done  # the report waits for the comparison
    h.advance(30)
    assert len(h.of(sv.Compare)) == 1  # asked once
    h.feed(ev.Compared(h.now, "p0", (Outcome("node 2 image 0", "match", "exp/w0/2_0.png"),)))
    assert h.of(sv.Report) and h.sup.done
    assert h.prompt().status == tr.SUCCESS and h.prompt().checked[0].status == "match"


def test_a_difference_makes_a_mismatch():
    h = Harness(download=True, expect=True)
    h.accept()
    h.succeed()
    saved(h)
    bad = Outcome("node 2 image 0", "mismatch", "exp/w0/2_0.png", "mean difference 12.3 > 2.0, 41% of pixels off")
    h.feed(ev.Compared(h.now, "p0", (bad,)))
    p = h.prompt()
    assert p.status == tr.MISMATCH and h.of(sv.Report)[-1].prompt is p
    assert p.error["differences"] == ["node 2 image 0: mean difference 12.3 > 2.0, 41% of pixels off"]
    assert p.error["message"] == "1 of 1 outputs differ from the expected files"


def test_only_successes_are_compared():
    h = Harness(download=True, expect=True)
    h.accept()
    h.feed([ev.Started(h.now, "p0", 1), ev.Failed(h.now, "p0", "1", "TestSteps", "boom", "RuntimeError", (), 2)])
    assert h.of(sv.Report) and not h.of(sv.Compare) and h.prompt().status == tr.FAILED


def test_without_expect_nothing_is_compared():
    h = Harness(download=True)
    h.accept()
    h.succeed()
    saved(h)
    assert h.of(sv.Report) and not h.of(sv.Compare)


def test_a_signal_while_comparing_does_not_wait_for_it():
    h = Harness(download=True, expect=True)
    h.accept()
    h.succeed()
    saved(h)
    h.feed(ev.Signal(h.now, 130))
    p = h.prompt()
    assert h.of(sv.Report) and h.sup.done and p.status == tr.SUCCESS and p.checked is None
    assert {"type": "expect", "message": "not compared: the run stopped"} in p.warnings
    h.feed(ev.Compared(h.now, "p0", (Outcome("x", "mismatch", "e", "differs"),)))  # late: changes nothing
    assert p.status == tr.SUCCESS and len(h.of(sv.Report)) == 1
