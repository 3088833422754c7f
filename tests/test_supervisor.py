"""The supervisor's rules, with a fake clock: no sockets, no threads, no sleeping."""

import pytest

from comfy_cli import events as ev
from comfy_cli import supervisor as sv
from comfy_cli import tracker as tr
from comfy_cli.limits import Limits
from comfy_cli.workflow import Workflow

GRAPH = {"1": {"class_type": "TestSteps", "inputs": {}}, "2": {"class_type": "SaveImage", "inputs": {}}}
IMAGE = {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}


def prompts(n=1):
    return [tr.Prompt(f"p{i}", Workflow(f"w{i}.json", f"w{i}", dict(GRAPH)), None, status=tr.WAITING)
            for i in range(n)]


def policy_of(**kw):
    """A Policy from flat keywords (the limits among them go into its Limits)."""
    lim = {k: kw.pop(k) for k in ("deadline", "timeout", "connect_timeout", "failover_after") if k in kw}
    return sv.Policy(limits=Limits(**lim), **kw)


class Harness:
    """A supervisor and a fake clock; remembers every command it gave."""

    def __init__(self, n=1, now=100.0, connect=True, socket_open=True, **policy):
        self.now = now
        self.sup = sv.Supervisor(prompts(n), policy_of(**policy), now, wall=0.0, socket_open=socket_open)
        self.log = []
        self._take(self.sup.start(now))
        if connect:
            self.feed(ev.Connected(self.now, False))

    def _take(self, commands):
        self.log.extend(commands)
        return commands

    def feed(self, item=None, at=None):
        return self._take(self.sup.feed(item, self.now if at is None else at))

    def advance(self, seconds):
        self.now += seconds
        return self.feed()

    def prompt(self, i=0):
        return self.sup.board.prompts[f"p{i}"]

    def of(self, kind, commands=None):
        return [c for c in (self.log if commands is None else commands) if type(c) is kind]

    def accept(self, i=0):
        return self.feed(ev.Accepted(self.now, f"p{i}", i, None))

    def succeed(self, i=0, output=True):
        pid = f"p{i}"
        items = [ev.Started(self.now, pid, 1), ev.Executing(self.now, pid, "1", None),
                 ev.Progress(self.now, pid, "1", 5, 5)]
        if output:
            items.append(ev.Executed(self.now, pid, "2", None, IMAGE))
        items.append(ev.Succeeded(self.now, pid, 2))
        return self.feed(items)

    def answer_round(self, running=(), pending=(), history=None):
        """Answer the open round's /queue read, then its /history reads from `history`."""
        read = self.of(sv.ReadQueue)[-1]
        out = self.feed(ev.QueueRead(self.now, read.gen, tuple(running), tuple(pending)))
        for c in self.of(sv.ReadHistory, out):
            out += self.feed(ev.HistoryRead(self.now, c.gen, c.prompt_id, (history or {}).get(c.prompt_id)))
        return out


def entry(pid, status="success"):
    return {"status": {"status_str": status, "completed": status == "success",
                       "messages": [["execution_start", {"prompt_id": pid, "timestamp": 1}],
                                    ["execution_success", {"prompt_id": pid, "timestamp": 2}]]},
            "outputs": {"2": IMAGE}}


# ---- submitting -------------------------------------------------------------------------
def test_nothing_is_submitted_before_the_socket_opened():
    h = Harness(connect=False)
    assert not h.of(sv.Submit)
    h.feed(ev.Connected(h.now, False))
    assert [c.prompt_id for c in h.of(sv.Submit)] == ["p0"]
    assert h.prompt().status == tr.SUBMITTING


def test_at_most_window_posts_in_flight_in_batch_order():
    h = Harness(n=6, window=2)
    assert [c.prompt_id for c in h.of(sv.Submit)] == ["p0", "p1"]
    h.accept(0)
    assert [c.prompt_id for c in h.of(sv.Submit)] == ["p0", "p1", "p2"]


def test_a_socket_that_does_not_open_leads_to_a_server_check_then_polling():
    h = Harness(connect=False, connect_timeout=5)
    h.advance(4.9)
    assert not h.of(sv.CheckServer)
    h.advance(0.2)
    assert len(h.of(sv.CheckServer)) == 1 and not h.of(sv.Submit)
    h.feed(ev.ServerChecked(h.now, None))
    assert h.of(sv.Mode)[-1].polling and h.of(sv.Submit)


def test_an_unreachable_server_at_the_start_ends_every_prompt_unsent():
    h = Harness(n=3, connect=False)
    h.feed(ev.Disconnected(h.now, "connection refused"))
    h.feed(ev.ServerChecked(h.now, "cannot connect to http://x"))
    assert not h.of(sv.Submit)
    assert all(p.status == tr.ERROR and "not submitted" in p.error["message"] for p in h.sup.board.prompts.values())
    assert h.sup.done and h.sup.outcome().fatal == "cannot connect to http://x"


def test_a_refused_post_is_sent_again_with_backoff_until_the_budget_is_spent():
    h = Harness()
    h.feed(ev.SubmitFailed(h.now, "p0", ev.NOT_SENT, "refused", None))
    assert len(h.of(sv.Submit)) == 1
    h.advance(0.49)
    assert len(h.of(sv.Submit)) == 1
    h.advance(0.02)
    assert len(h.of(sv.Submit)) == 2
    answered = 1
    for _ in range(100):
        if h.prompt().ended:
            break
        if len(h.of(sv.Submit)) > answered:
            answered += 1
            h.feed(ev.SubmitFailed(h.now, "p0", ev.NOT_SENT, "refused", None))
        else:
            h.advance(h.sup.next_wakeup() - h.now)
    assert h.prompt().status == tr.ERROR and h.now - 100.0 <= 46
    assert 6 <= answered <= 9


def test_a_post_that_could_not_be_built_ends_at_once_and_is_never_retried():
    h = Harness()
    h.feed(ev.SubmitFailed(h.now, "p0", ev.LOCAL, "w0.json: NaN", None))
    assert h.prompt().status == tr.REJECTED and h.prompt().error["type"] == "invalid_workflow"
    h.advance(60)
    assert len(h.of(sv.Submit)) == 1 and h.sup.done


def test_a_lost_answer_found_on_the_server_is_not_sent_again():
    h = Harness()
    h.feed(ev.SubmitFailed(h.now, "p0", ev.SENT, "reset", None))
    h.advance(0.3)
    assert h.of(sv.ReadQueue)
    h.answer_round(pending=["p0"])
    assert h.prompt().status == tr.SUBMITTED
    assert any("was lost, but the server has" in n.text for n in h.of(sv.Note))
    h.advance(10)
    assert len(h.of(sv.Submit)) == 1


def test_a_lost_answer_is_resent_only_after_the_settle_time():
    h = Harness()
    h.feed(ev.SubmitFailed(h.now, "p0", ev.SENT, "reset", None))
    t0 = h.now
    while h.now - t0 < sv.SETTLE + 2 and len(h.of(sv.Submit)) == 1:
        h.advance(0.05)
        if h.sup.rounds.round is not None and not h.sup.rounds.round.history:
            h.answer_round()
    assert len(h.of(sv.Submit)) == 2
    assert h.now - t0 >= sv.SETTLE
    assert h.prompt().status == tr.SUBMITTING  # never lost meanwhile


def test_socket_news_resolves_a_lost_answer():
    h = Harness()
    h.feed(ev.SubmitFailed(h.now, "p0", ev.SENT, "reset", None))
    h.feed([ev.Started(h.now, "p0", 1)])
    assert h.prompt().status == tr.RUNNING
    h.advance(10)
    assert len(h.of(sv.Submit)) == 1


def test_a_refusal_of_a_prompt_the_server_runs_is_a_warning_not_the_end():
    # A gateway (or a broken server) answered 400, yet the socket shows the server running it.
    h = Harness()
    h.feed([ev.Started(h.now, "p0", 1)])
    said = h.feed(ev.SubmitFailed(h.now, "p0", ev.REFUSED, "400", {"error": {"message": "bad gateway rule"}}))
    assert h.prompt().status == tr.RUNNING
    warning = "POST /prompt was answered 'bad gateway rule', but the server has the prompt; followed it"
    assert [n.text for n in h.of(sv.Note, said)] == [f"w0: warning: {warning}"]
    h.succeed()
    assert h.prompt().status == tr.SUCCESS and h.prompt().warnings[-1]["message"] == warning
    assert len(h.of(sv.Submit)) == 1


@pytest.mark.parametrize("policy", [{"no_cancel": True}, {"detach_on_signal": True}, {}])
def test_a_prompt_given_up_while_its_post_was_out_then_refused_ends_rejected(policy):
    # Not "left running on the server", nor a warning that the server has it: it never had it.
    h = Harness(**policy)
    h.feed(ev.Signal(h.now, 130))
    assert h.prompt().ended and not h.of(sv.Report)  # the POST is still out
    said = h.feed(ev.SubmitFailed(h.now, "p0", ev.REFUSED, "400", {"error": {"message": "bad input"}}))
    assert h.prompt().status == tr.REJECTED and h.prompt().error["message"] == "bad input"
    assert not h.of(sv.Note, said) and h.of(sv.Report)
    assert not h.of(sv.Cancel)


def test_a_submitting_prompt_is_never_lost_in_a_catch_up_round():
    # The bug of issue H: the catch-up round ran while the submission was being resolved.
    h = Harness()
    h.feed(ev.SubmitFailed(h.now, "p0", ev.SENT, "reset", None))
    for _ in range(3):
        h.feed(ev.Disconnected(h.now, "drop"))
        h.advance(0.3)
        h.feed(ev.Connected(h.now, True))
        if h.sup.rounds.round is not None:
            h.answer_round()
    assert h.prompt().status != tr.LOST


# ---- rounds ----------------------------------------------------------------------------
def test_lost_after_two_misses_in_reads_asked_after_acceptance():
    h = Harness(poll_interval=1.0)
    h.accept()
    h.feed(ev.Disconnected(h.now, "drop"))
    h.answer_round()
    assert h.prompt().status == tr.SUBMITTED
    h.advance(1.0)
    h.answer_round()
    assert h.prompt().status == tr.LOST


def test_a_queue_read_asked_before_acceptance_does_not_count():
    h = Harness(n=2)
    h.accept(0)
    h.feed(ev.Disconnected(h.now, "drop"))  # the round's /queue read is asked now
    gen = h.of(sv.ReadQueue)[-1].gen
    h.accept(1)  # ...and p1's POST answer comes after it was asked
    h.feed(ev.QueueRead(h.now, gen, (), ()))
    assert [c.prompt_id for c in h.of(sv.ReadHistory)] == ["p0"]


def test_polling_rounds_every_interval_while_the_socket_is_down():
    h = Harness(poll_interval=1.0)
    h.accept()
    h.feed(ev.Disconnected(h.now, "drop"))
    assert len(h.of(sv.ReadQueue)) == 1
    h.answer_round(pending=["p0"])
    h.advance(0.9)
    assert len(h.of(sv.ReadQueue)) == 1
    h.advance(0.1)
    assert len(h.of(sv.ReadQueue)) == 2


def test_catch_up_holds_events_until_the_queue_says_which_prompt_runs():
    h = Harness(n=2)
    h.accept(0)
    h.accept(1)
    h.feed(ev.Disconnected(h.now, "drop"))
    h.answer_round(pending=["p0", "p1"])
    h.feed(ev.Connected(h.now, True))
    # The server's prompt-less re-send, before /queue answered.
    h.feed([ev.Executing(h.now, None, "1", None)])
    assert h.prompt(1).status == tr.SUBMITTED
    h.answer_round(running=["p1"], pending=["p0"])
    assert h.prompt(1).status == tr.RUNNING and h.prompt(1).progress.node == "1"
    assert h.prompt(0).status == tr.SUBMITTED


def test_held_events_are_released_after_the_hold_time():
    h = Harness()
    h.accept()
    h.feed(ev.Disconnected(h.now, "drop"))
    h.answer_round(pending=["p0"])
    h.feed(ev.Connected(h.now, True))
    h.feed([ev.Started(h.now, "p0", 1)])
    assert h.prompt().status == tr.SUBMITTED
    h.advance(sv.CATCHUP_HOLD)
    assert h.prompt().status == tr.RUNNING


def test_a_quiet_socket_is_checked_and_replaced_only_if_the_server_moved_on():
    h = Harness(silence_check=15)
    h.accept()
    h.advance(14.9)
    assert not h.of(sv.ReadQueue)
    h.advance(0.2)
    assert len(h.of(sv.ReadQueue)) == 1
    h.answer_round(pending=["p0"])  # still waiting: a quiet socket is normal
    assert not h.of(sv.Reconnect)
    h.advance(15.1)
    h.answer_round(history={"p0": entry("p0")})  # it finished and the socket said nothing
    assert h.of(sv.Reconnect) and h.prompt().status == tr.SUCCESS


def test_a_shrinking_queue_with_none_of_ours_ended_triggers_a_round():
    h = Harness()
    h.accept()
    h.feed([ev.Status(h.now, 3, None)])
    h.feed([ev.Status(h.now, 2, None)])
    assert len(h.of(sv.ReadQueue)) == 1


# ---- limits ------------------------------------------------------------------------------
def test_silence_is_measured_from_when_events_were_received():
    h = Harness(timeout=5)
    h.accept()
    # The main thread was busy: an event received at t+4.5 is handled at t+6.
    h.now += 6
    h.feed([ev.Progress(100.0 + 4.5, "p0", "1", 1, 10)], at=h.now)
    assert not h.prompt().ended
    h.advance(3.4)
    assert not h.prompt().ended
    h.advance(0.2)
    assert h.prompt().status == tr.TIMEOUT


def test_progress_keeps_the_timeout_away():
    h = Harness(timeout=2)
    h.accept()
    for i in range(20):
        h.now += 0.5
        h.feed([ev.Progress(h.now, "p0", "1", i, 100)])
    assert not h.prompt().ended


def test_deadline_cancels_after_the_posts_in_flight_answered():
    h = Harness(n=2, deadline=10)
    h.accept(0)
    h.advance(10)
    assert all(p.status == tr.TIMEOUT for p in h.sup.board.prompts.values())
    assert not h.of(sv.Cancel)  # p1's POST is still out: it could land after a cancel
    h.accept(1)
    assert h.of(sv.Cancel)[-1].prompt_ids == ("p0", "p1")
    h.feed(ev.CancelDone(h.now, ("p1",), ("p0",), None))
    h.feed(ev.CancelDone(h.now, (), (), None))  # (the pass that makes sure of the deleted)
    assert h.prompt(0).error["message"].endswith("interrupted on the server")
    assert h.prompt(1).error["message"].endswith("removed from the queue")
    assert h.sup.done


def test_deadline_while_the_server_is_down_is_an_error_without_cancel():
    h = Harness(deadline=5)
    h.accept()
    h.feed(ev.Disconnected(h.now, "drop"))
    h.feed(ev.ReadFailed(h.now, h.of(sv.ReadQueue)[-1].gen, None, "cannot connect"))
    h.advance(5)
    assert h.prompt().status == tr.ERROR and "not answering since" in h.prompt().error["message"]
    assert not h.of(sv.Cancel) and h.sup.done


def test_ctrl_c_cancels_ours_and_says_what_happened():
    h = Harness()
    h.accept()
    h.feed(ev.Signal(h.now, 130))
    assert h.prompt().status == tr.CANCELLED and h.of(sv.Cancel)
    assert not h.sup.done
    h.feed(ev.CancelDone(h.now, ("p0",), (), None))
    assert not h.sup.done  # a second pass: p0 may have started between the read and the delete
    h.feed(ev.CancelDone(h.now, (), (), None))
    assert h.prompt().error["message"] == "cancelled by you: removed from the queue"
    assert h.sup.done and h.of(sv.Report)


def test_ctrl_c_with_no_cancel_leaves_it_running_and_says_so():
    h = Harness(no_cancel=True)
    h.accept()
    h.feed(ev.Signal(h.now, 130))
    assert h.prompt().status == tr.DETACHED and not h.of(sv.Cancel)
    assert "left running on the server (--no-cancel)" in h.prompt().error["message"]


def test_a_cancel_that_gets_no_answer_gives_up_in_time():
    h = Harness()
    h.accept()
    h.feed(ev.Signal(h.now, 130))
    h.advance(sv.CANCEL_WAIT + 0.1)
    assert h.sup.done


# ---- after the end -----------------------------------------------------------------------
def test_a_success_without_outputs_reads_history_with_retries_before_the_report():
    h = Harness()
    h.accept()
    h.succeed(output=False)
    assert not h.of(sv.Report)
    read = h.of(sv.ReadHistory)[-1]
    assert read.gen is None
    h.feed(ev.HistoryRead(h.now, None, "p0", None))
    h.advance(0.05)
    assert len(h.of(sv.ReadHistory)) == 2
    h.feed(ev.HistoryRead(h.now, None, "p0", entry("p0")))
    assert h.of(sv.Report) and h.of(sv.Output) and h.sup.done


def test_the_report_waits_for_downloads():
    h = Harness(download=True)
    h.accept()
    h.succeed()
    d = h.of(sv.Download)[-1]
    assert not h.of(sv.Report) and not h.sup.done
    h.feed(ev.Downloaded(h.now, "p0", d.key, "out/a.png", None))
    assert h.of(sv.Output)[-1].path == "out/a.png" and h.of(sv.Report) and h.sup.done


def test_a_failed_download_is_a_warning_and_marks_files_missing():
    h = Harness(download=True)
    h.accept()
    h.succeed()
    d = h.of(sv.Download)[-1]
    h.feed(ev.Downloaded(h.now, "p0", d.key, None, "download failed: HTTP 500"))
    assert h.sup.outcome().files_missing and h.prompt().warnings[-1]["type"] == "download"


def test_a_download_the_server_failed_is_tried_again_on_the_backoff_then_given_up():
    h = Harness(download=True)
    h.accept()
    h.succeed()
    d = h.of(sv.Download)[-1]
    for attempt in (1, 2):
        h.feed(ev.Downloaded(h.now, "p0", d.key, None, "download failed: HTTP 502", retry=True))
        wait = sv.backoff.DOWNLOAD.delay(attempt)
        assert h.sup.next_wakeup() == pytest.approx(h.now + wait)
        assert len(h.of(sv.Download)) == attempt and not h.of(sv.Report)
        h.advance(wait * 0.99)
        assert len(h.of(sv.Download)) == attempt  # not before its time
        h.advance(wait * 0.01)
        assert len(h.of(sv.Download)) == attempt + 1 and h.of(sv.Download)[-1] == d
    h.feed(ev.Downloaded(h.now, "p0", d.key, None, "download failed: HTTP 502", retry=True))
    assert len(h.of(sv.Download)) == 3  # DOWNLOAD allows two retries, no more
    assert h.of(sv.Report) and h.sup.outcome().files_missing
    assert [n.text for n in h.of(sv.Note)][-1] == "w0: download failed: HTTP 502"


def test_a_retried_download_that_works_is_saved():
    h = Harness(download=True)
    h.accept()
    h.succeed()
    d = h.of(sv.Download)[-1]
    h.feed(ev.Downloaded(h.now, "p0", d.key, None, "download failed: reset", retry=True))
    h.advance(sv.backoff.DOWNLOAD.delay(1))
    h.feed(ev.Downloaded(h.now, "p0", d.key, "out/a.png", None))
    assert h.of(sv.Output)[-1].path == "out/a.png" and not h.sup.outcome().files_missing and h.sup.done
    assert not h.of(sv.Note)


def test_a_download_is_not_retried_past_the_deadline_nor_once_the_run_stops():
    h = Harness(download=True, deadline=10.4)
    h.accept()
    h.succeed()
    d = h.of(sv.Download)[-1]
    h.advance(10)  # a retry would start after the deadline
    h.feed(ev.Downloaded(h.now, "p0", d.key, None, "download failed: HTTP 500", retry=True))
    assert len(h.of(sv.Download)) == 1 and h.of(sv.Report) and h.sup.outcome().files_missing

    h = Harness(download=True)
    h.accept()
    h.succeed()
    h.feed(ev.Downloaded(h.now, "p0", h.of(sv.Download)[-1].key, None, "download failed: HTTP 500", retry=True))
    h.feed(ev.Signal(h.now, 143))  # while a retry waits: it is dropped at once
    assert len(h.of(sv.Download)) == 1 and h.of(sv.Report) and h.sup.outcome().files_missing
    h.advance(5)
    assert len(h.of(sv.Download)) == 1


def test_a_download_that_cannot_be_written_is_not_retried():
    h = Harness(download=True)
    h.accept()
    h.succeed()
    h.feed(ev.Downloaded(h.now, "p0", h.of(sv.Download)[-1].key, None, "cannot write into out: disk full"))
    h.advance(5)
    assert len(h.of(sv.Download)) == 1 and h.of(sv.Report)


def test_a_worker_crash_ends_the_run_whatever_answer_it_swallowed():
    # A download whose job crashed never answers.
    h = Harness(download=True)
    h.accept()
    h.succeed()
    h.feed(ev.WorkerCrashed(h.now, "OverflowError: boom"))
    assert h.sup.done and h.sup.outcome().fatal and h.sup.outcome().files_missing and h.of(sv.Report)
    # A POST whose job crashed never answers: the prompt ends in error, ours on the server are cancelled.
    h = Harness()
    h.feed(ev.WorkerCrashed(h.now, "RuntimeError: boom"))
    assert h.prompt().status == tr.ERROR and not h.sup.done
    (cancel,) = h.of(sv.Cancel)
    h.feed(ev.CancelDone(h.now, cancel.prompt_ids, (), None))
    h.feed(ev.CancelDone(h.now, (), (), None))
    assert h.sup.done and h.of(sv.Report)


def test_next_wakeup_is_the_earliest_rule():
    h = Harness(timeout=30, deadline=100, silence_check=15)
    h.accept()
    assert h.sup.next_wakeup() == pytest.approx(h.now + 15)


# ---- submit and wait ---------------------------------------------------------------------
def test_without_a_socket_the_server_is_checked_first_then_prompts_go_out():
    h = Harness(n=2, connect=False, socket_open=False)
    assert h.of(sv.CheckServer) and not h.of(sv.Submit)
    h.feed(ev.ServerChecked(h.now, None))
    assert [c.prompt_id for c in h.of(sv.Submit)] == ["p0", "p1"]
    assert not h.of(sv.Mode)  # no socket was asked for: nothing to say about it


def test_submit_only_is_done_once_the_server_has_every_prompt():
    h = Harness(n=2, connect=False, socket_open=False, submit_only=True)
    h.feed(ev.ServerChecked(h.now, None))
    h.accept(0)
    assert not h.sup.done
    h.feed(ev.SubmitFailed(h.now, "p1", ev.SENT, "reset", None))
    h.advance(0.3)
    h.answer_round(pending=["p1"])
    assert h.sup.done and len(h.of(sv.Report)) == 2
    assert len(h.of(sv.Submit)) == 2


def test_ctrl_c_while_waiting_leaves_the_prompts_running():
    h = Harness(detach_on_signal=True)
    h.accept()
    h.feed(ev.Signal(h.now, 130))
    assert h.prompt().status == tr.DETACHED and not h.of(sv.Cancel) and h.sup.done


def test_a_shrink_seen_before_the_post_answer_is_checked_once_it_is_in():
    # Someone deleted our prompt between the server queueing it and its answer reaching us.
    h = Harness()
    h.feed([ev.Status(h.now, 2, None)])
    h.feed([ev.Status(h.now, 1, None)])  # p0's POST answer is not in yet
    h.advance(sv.STATUS_ROUND_GAP)
    assert not h.of(sv.ReadQueue)
    h.accept()
    h.advance(0.01)
    assert h.of(sv.ReadQueue)


def attached(socket_open=True, **policy):
    """A supervisor following prompts it did not submit (`wait`): they start as `submitted`."""
    given = [tr.Prompt("p0", Workflow("p0", "p0", {}), None, status=tr.SUBMITTED)]
    h = Harness.__new__(Harness)
    h.now, h.log = 100.0, []
    h.sup = sv.Supervisor(given, policy_of(**policy), h.now, wall=0.0, socket_open=socket_open)
    h._take(h.sup.start(h.now))
    return h


def test_a_given_prompt_that_already_ended_answers_as_soon_as_the_socket_opens():
    h = attached(silence_check=15)
    assert not h.of(sv.ReadQueue) and not h.of(sv.Submit)
    h.feed(ev.Connected(h.now, False))
    assert len(h.of(sv.ReadQueue)) == 1 and not h.of(sv.Mode)  # at once, not after the silence check
    h.answer_round(history={"p0": entry("p0")})
    assert h.prompt().status == tr.SUCCESS and h.sup.done and len(h.of(sv.Report)) == 1
    assert not h.of(sv.Submit)


def test_a_given_prompt_holds_socket_events_until_the_queue_says_which_runs():
    h = attached()
    h.feed(ev.Connected(h.now, False))
    h.feed([ev.Executing(h.now, None, "1", None)])  # the server's prompt-less re-send on connect
    h.answer_round(running=["p0"])
    assert h.prompt().status == tr.RUNNING and h.prompt().progress.node == "1"


def test_a_given_prompt_the_server_does_not_know_is_lost_after_two_rounds():
    h = attached(poll_interval=1.0)
    h.feed(ev.Connected(h.now, False))
    h.answer_round()
    assert not h.prompt().ended
    h.advance(1.0)
    h.answer_round()
    assert h.prompt().status == tr.LOST and h.sup.done


def test_a_run_with_nothing_submitted_yet_starts_no_round_when_the_socket_opens():
    h = Harness()
    assert not h.of(sv.ReadQueue) and h.of(sv.Submit)


def test_a_limit_while_waiting_leaves_the_prompt_without_mentioning_no_cancel():
    h = attached(deadline=5, no_cancel=True, detach_on_signal=True)
    h.feed(ev.Connected(h.now, False))
    h.answer_round(pending=["p0"])
    h.advance(5)
    assert h.prompt().status == tr.TIMEOUT and not h.of(sv.Cancel)
    assert h.prompt().error["message"].endswith("; left running on the server")


def test_a_given_prompt_on_an_unreachable_server_is_not_called_unsent():
    h = attached(socket_open=False)
    assert h.of(sv.CheckServer)
    h.feed(ev.ServerChecked(h.now, "cannot connect to http://x"))
    assert h.prompt().status == tr.ERROR and h.prompt().error["message"] == "cannot connect to http://x"
    assert h.sup.done and h.sup.outcome().fatal == "cannot connect to http://x"


def test_ctrl_c_while_submitting_keeps_what_was_sent_and_sends_no_more():
    h = Harness(n=3, connect=False, socket_open=False, submit_only=True, detach_on_signal=True, no_cancel=True,
                window=1)
    h.feed(ev.ServerChecked(h.now, None))
    h.accept(0)
    h.feed(ev.Signal(h.now, 130))
    h.feed(ev.Accepted(h.now, "p1", 1, None))  # the POST in flight answers after the signal
    assert [h.prompt(i).status for i in range(3)] == [tr.DETACHED, tr.DETACHED, tr.CANCELLED]
    assert h.prompt(0).error["message"] == "stopped submitting: left running on the server"
    assert not h.of(sv.Cancel) and [c.prompt_id for c in h.of(sv.Submit)] == ["p0", "p1"] and h.sup.done


def test_a_prompt_deleted_before_its_post_answer_arrived_is_found_lost():
    # The enqueue's `status` broadcast comes before the POST's answer; if the prompt is deleted
    # right then, the shrink is seen while it is still `submitting`. Look once it is accepted.
    h = Harness(n=2, poll_interval=0.2)
    h.accept(0)
    h.feed([ev.Started(h.now, "p0", 1), ev.Status(h.now, 1, None), ev.Status(h.now, 2, None),
            ev.Status(h.now, 1, None)])
    assert not h.of(sv.ReadQueue) and h.prompt(1).status == tr.SUBMITTING
    h.accept(1)
    assert len(h.of(sv.ReadQueue)) == 1
    h.answer_round(running=["p0"])
    h.advance(0.2)
    h.answer_round(running=["p0"])
    assert h.prompt(1).status == tr.LOST and h.prompt(0).status == tr.RUNNING
