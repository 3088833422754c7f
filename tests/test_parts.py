"""Each part of the supervisor, with a fake clock (the parts are wired by a Supervisor; each
test drives and inspects one part's rule)."""

from comfy_cli import backoff
from comfy_cli import events as ev
from comfy_cli import supervisor as sv
from comfy_cli import tracker as tr
from test_supervisor import IMAGE, Harness


def moved_away(h, *ids):
    """The dispatcher took these (accepted) prompts away from the server."""
    for pid in ids:
        h._take(h.sup.abandon(h.sup.prompt(pid), tr.ERROR, "moved", h.now))


def back(h):
    """The server answers again (a round's /queue read comes back)."""
    h.feed(ev.Disconnected(h.now, "reset"))
    h.feed(ev.QueueRead(h.now, h.of(sv.ReadQueue)[-1].gen, (), ()))


# ---- Connection -------------------------------------------------------------------------
def two_moved_and_back():
    """Two accepted prompts moved away; the server answers again (a Withdraw goes out)."""
    h = Harness(n=2, alone=False)
    h.accept(0)
    h.accept(1)
    moved_away(h, "p0", "p1")
    back(h)
    return h


def test_a_failed_withdrawal_is_tried_again_with_backoff_until_it_succeeds():
    h = two_moved_and_back()
    assert [c.prompt_ids for c in h.of(sv.Withdraw)] == [("p0", "p1")]
    h.feed(ev.Withdrawn(h.now, ("p1",), (), (), "HTTP 500"))  # p1 went, p0 did not
    assert "trying again in 1 s" in h.of(sv.Note)[-2].text
    assert h.sup.outcome().not_withdrawn == ["p0"] and h.sup.done  # (the run is not held for it)
    waits = [backoff.WITHDRAW.delay(n) for n in (1, 2)]
    assert h.sup.next_wakeup() == h.now + waits[0]
    h.advance(waits[0] - 0.01)
    assert len(h.of(sv.Withdraw)) == 1
    h.advance(0.01)
    assert [c.prompt_ids for c in h.of(sv.Withdraw)] == [("p0", "p1"), ("p0",)]
    assert not h.sup.done  # one with the worker is waited for
    h.feed(ev.Withdrawn(h.now, (), (), (), "HTTP 500"))
    h.advance(waits[1] - 0.01)
    assert len(h.of(sv.Withdraw)) == 2
    h.advance(0.01)
    assert len(h.of(sv.Withdraw)) == 3
    h.feed(ev.Withdrawn(h.now, ("p0",), (), (), None))
    # p0 was deleted: it may have started between the read and the delete; one more pass at once
    assert h.of(sv.Withdraw)[-1].prompt_ids == ("p0",) and not h.sup.done
    h.feed(ev.Withdrawn(h.now, (), (), (), None))
    assert h.sup.outcome().not_withdrawn == [] and h.sup.done
    h.advance(60)
    assert len(h.of(sv.Withdraw)) == 4


def test_a_withdrawal_that_deleted_makes_sure_with_one_more_pass():
    h = two_moved_and_back()
    h.feed(ev.Withdrawn(h.now, ("p0", "p1"), (), (), None))
    assert [c.prompt_ids for c in h.of(sv.Withdraw)] == [("p0", "p1"), ("p0", "p1")] and not h.sup.done
    notes = len(h.of(sv.Note))
    h.feed(ev.Withdrawn(h.now, (), ("p1",), ("p0",), None))  # p1 had started; p0 even ended here
    assert len(h.of(sv.Note)) == notes  # (both were counted as removed already)
    assert h.sup.take_ran_twice() == ["p0"] and h.sup.done and len(h.of(sv.Withdraw)) == 2


def test_a_withdrawal_tried_again_after_its_check_failed_makes_sure_again():
    """Each withdrawal counts its own passes: one whose follow-up pass failed, tried again
    later, still gets its pass for what it deleted."""
    h = two_moved_and_back()
    h.feed(ev.Withdrawn(h.now, ("p0", "p1"), (), (), None))
    assert len(h.of(sv.Withdraw)) == 2  # the pass that makes sure
    h.feed(ev.Withdrawn(h.now, (), (), (), "connection refused"))
    h.advance(backoff.WITHDRAW.delay(1))
    assert [c.prompt_ids for c in h.of(sv.Withdraw)][2] == ("p0", "p1")
    h.feed(ev.Withdrawn(h.now, ("p0", "p1"), (), (), None))
    assert [c.prompt_ids for c in h.of(sv.Withdraw)][3:] == [("p0", "p1")] and not h.sup.done


def test_a_moved_prompt_that_ran_anyway_is_told_to_the_dispatcher_once():
    h = Harness(n=1, alone=False)
    h.accept(0)
    moved_away(h, "p0")
    back(h)
    h.feed(ev.Withdrawn(h.now, (), (), ("p0",), None))
    assert h.sup.take_ran_twice() == ["p0"] and h.sup.take_ran_twice() == []


def test_a_server_not_reached_among_others_is_checked_again_on_its_backoff():
    h = Harness(n=1, connect=False, alone=False)
    h.feed(ev.Disconnected(h.now, "refused"))
    h.feed(ev.ServerChecked(h.now, "cannot connect"))
    assert not h.sup.reached() and not h.sup.usable
    wait = sv.Policy().recheck.delay(1)
    h.advance(wait - 0.01)
    assert len(h.of(sv.CheckServer)) == 1
    h.advance(0.01)
    assert len(h.of(sv.CheckServer)) == 2
    h.feed(ev.ServerChecked(h.now, None))
    assert h.sup.usable and h.of(sv.Submit)


def test_the_connect_timeout_comes_from_the_limits():
    h = Harness(connect=False, connect_timeout=3)
    assert h.sup.next_wakeup() == h.now + 3
    h.advance(3)
    assert h.of(sv.CheckServer)


# ---- Submissions ------------------------------------------------------------------------
def test_the_load_counts_posts_in_flight_and_prompts_still_to_send():
    h = Harness(n=6, window=2)
    assert h.sup.load() == 6  # 2 in flight, 4 to send
    h.accept(0)
    assert h.sup.load() == 5
    h.feed(ev.Status(h.now, 3, None))
    assert h.sup.load() == 3 + 5


def test_an_abandoned_prompt_is_never_sent():
    h = Harness(n=3, window=1)
    h._take(h.sup.abandon(h.prompt(2), tr.ERROR, "moved", h.now))
    h.accept(0)
    h.accept(1)
    assert [c.prompt_id for c in h.of(sv.Submit)] == ["p0", "p1"]
    assert [c.prompt.prompt_id for c in h.of(sv.Report)] == ["p2"]


# ---- Rounds -----------------------------------------------------------------------------
def test_failed_rounds_wait_the_policy_s_round_retry():
    h = Harness(poll_interval=0.5)
    h.accept(0)
    h.feed(ev.Disconnected(h.now, "reset"))
    gen = h.of(sv.ReadQueue)[-1].gen
    h.feed(ev.ReadFailed(h.now, gen, None, "refused"))
    wait = h.sup.policy.round_retry().delay(1)
    assert wait == 0.5
    h.advance(wait - 0.01)
    assert h.of(sv.ReadQueue)[-1].gen == gen
    h.advance(0.01)
    assert h.of(sv.ReadQueue)[-1].gen == gen + 1


# ---- Aftercare --------------------------------------------------------------------------
def test_a_download_carries_the_deadline_it_must_stop_at():
    h = Harness(download=True, deadline=30)
    h.accept(0)
    h.succeed(0)
    (download,) = h.of(sv.Download)
    assert download.until == 100.0 + 30


def test_a_download_without_a_deadline_has_no_until():
    h = Harness(download=True)
    h.accept(0)
    h.feed([ev.Started(h.now, "p0", 1), ev.Executed(h.now, "p0", "2", None, IMAGE)])
    assert h.of(sv.Download)[0].until is None


# ---- Stopping ---------------------------------------------------------------------------
def test_what_the_cancel_did_is_added_to_each_prompt_s_error():
    h = Harness(n=3)
    for i in range(3):
        h.accept(i)
    h.feed(ev.Signal(h.now, 130))
    (cancel,) = h.of(sv.Cancel)
    h.feed(ev.CancelDone(h.now, ("p1",), ("p0",), None))
    assert h.of(sv.Cancel)[-1].prompt_ids == ("p1",)  # the pass after one that deleted
    h.feed(ev.CancelDone(h.now, (), (), None))
    messages = [h.prompt(i).error["message"] for i in range(3)]
    assert messages == ["cancelled by you: interrupted on the server", "cancelled by you: removed from the queue",
                        "cancelled by you: it had already left the server's queue"]
    assert h.sup.outcome().signal_code == 130 and h.sup.done


def test_a_cancel_pass_that_deleted_is_followed_by_one_for_those_on_the_cancel_backoff(monkeypatch):
    monkeypatch.setattr(backoff, "CANCEL", backoff.Backoff(first=0.5, factor=2.0, cap=5.0, tries=2))
    h = Harness(n=3)
    for i in range(3):
        h.accept(i)
    h.feed(ev.Signal(h.now, 130))
    assert [c.prompt_ids for c in h.of(sv.Cancel)] == [("p0", "p1", "p2")]
    h.feed(ev.CancelDone(h.now, ("p1", "p2"), ("p0",), None))
    assert h.sup.next_wakeup() == h.now + 0.5 and not h.sup.done  # the run waits for the next pass
    h.advance(0.49)
    assert len(h.of(sv.Cancel)) == 1
    h.advance(0.01)
    assert h.of(sv.Cancel)[-1].prompt_ids == ("p1", "p2")  # only those deleted: they may have started
    h.feed(ev.CancelDone(h.now, ("p2",), ("p1",), None))  # p1 had started: interrupted now
    assert h.sup.next_wakeup() == h.now + 1.0
    h.advance(1.0)
    assert h.of(sv.Cancel)[-1].prompt_ids == ("p2",)
    h.feed(ev.CancelDone(h.now, ("p2",), (), None))  # the backoff allows no more passes
    assert len(h.of(sv.Cancel)) == 3 and h.sup.done
    messages = [h.prompt(i).error["message"] for i in range(3)]
    assert messages == ["cancelled by you: interrupted on the server", "cancelled by you: interrupted on the server",
                        "cancelled by you: removed from the queue"]


def test_a_prompt_interrupted_by_the_first_pass_is_reported_after_the_last_with_what_it_did():
    """Between passes, every prompt of the cancel is held: none is reported before the last
    pass said what the cancel did to it, whatever the server says meanwhile."""
    h = Harness(n=2)
    h.accept(0)
    h.accept(1)
    h.feed(ev.Signal(h.now, 130))
    h.feed(ev.CancelDone(h.now, ("p1",), ("p0",), None))
    h.feed(ev.Executed(h.now, "p0", "2", None, IMAGE))  # an output of p0 comes in meanwhile
    assert not [c for c in h.of(sv.Report) if c.prompt.prompt_id == "p0"]
    h.feed(ev.CancelDone(h.now, (), (), None))
    (report,) = [c for c in h.of(sv.Report) if c.prompt.prompt_id == "p0"]
    assert report.prompt.error["message"] == "cancelled by you: interrupted on the server"


def test_a_cancel_pass_that_deleted_nothing_is_the_last():
    h = Harness(n=2)
    h.accept(0)
    h.accept(1)
    h.feed(ev.Signal(h.now, 130))
    h.feed(ev.CancelDone(h.now, (), ("p0",), None))
    h.advance(5)
    assert len(h.of(sv.Cancel)) == 1 and h.sup.done
    assert h.prompt(1).error["message"] == "cancelled by you: it had already left the server's queue"


def test_a_cancel_pass_without_an_answer_is_given_up_after_the_cancel_wait():
    from comfy_cli.stopping import CANCEL_WAIT

    h = Harness()
    h.accept()
    h.feed(ev.Signal(h.now, 130))
    h.feed(ev.CancelDone(h.now, ("p0",), (), None))
    assert len(h.of(sv.Cancel)) == 2 and h.sup.next_wakeup() == h.now + CANCEL_WAIT
    h.advance(CANCEL_WAIT)
    assert "could not cancel on the server: no answer in time; prompt ids: p0" in h.of(sv.Note)[-1].text
    assert h.sup.done and h.prompt().error["message"] == "cancelled by you: removed from the queue"
    h.feed(ev.CancelDone(h.now, (), ("p0",), None))  # the late answer changes nothing
    assert len(h.of(sv.Cancel)) == 2 and h.prompt().error["message"] == "cancelled by you: removed from the queue"


def test_the_supervisor_wakes_for_the_earliest_of_its_parts():
    h = Harness(timeout=7, deadline=20)
    h.accept(0)
    assert h.sup.next_wakeup() == min(h.now + 7, h.now + h.sup.policy.silence_check, 100.0 + 20)


def test_earliest_leaves_out_none():
    from comfy_cli.part import earliest

    assert earliest() is None and earliest(None, None) is None
    assert earliest(None, 5.0, 3.0, None, 4.0) == 3.0
    assert earliest(2.0) == 2.0 and earliest(0.0, None, 1.0) == 0.0
