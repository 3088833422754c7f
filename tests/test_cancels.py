"""`cancel`'s verdicts and its watch, with a scripted server and a fake clock."""

import pytest

from comfy_cli import cancels


def entry(pid, end, files=()):
    kinds = {"success": ("execution_success", {"prompt_id": pid}),
             "interrupted": ("execution_interrupted", {"prompt_id": pid, "node_id": "1", "node_type": "T"})}
    return {"status": {"status_str": "success" if end == "success" else "error", "completed": end == "success",
                       "messages": [["execution_start", {"prompt_id": pid}], list(kinds[end])]},
            "outputs": {"9": {"images": [{"filename": f, "subfolder": "", "type": "output"} for f in files]}}}


def view(item):
    return "http://s/view?" + item["filename"]


def test_an_interrupt_counts_only_once_the_history_says_interrupted():
    assert cancels.verdict("a", "interrupt", True, None, False, 5, view) is None  # still running: wait
    assert cancels.verdict("a", "interrupt", False, None, False, 5, view) is None  # history not written yet
    got = cancels.verdict("a", "interrupt", False, entry("a", "interrupted"), False, 5, view)
    assert got == cancels.Verdict(cancels.CANCELLED, "interrupted on the server")


def test_a_prompt_that_ended_first_is_reported_with_its_end_and_files():
    got = cancels.verdict("a", "interrupt", False, entry("a", "success", ["x.png"]), False, 5, view)
    assert got.kind == cancels.ENDED and cancels.EXIT[got.kind] == 1
    assert got.text == "not cancelled: it ended before the interrupt took effect (success)"
    assert got.files == ("http://s/view?x.png",)
    got = cancels.verdict("a", None, False, entry("a", "success"), False, 5, view)
    assert got.text == "nothing to cancel: it had already ended (success)" and got.kind == cancels.ENDED


def test_what_the_time_limit_leaves_unconfirmed():
    got = cancels.verdict("a", "interrupt", True, None, True, 2, view)
    assert got == cancels.Verdict(cancels.UNCONFIRMED, "interrupt sent, not confirmed within 2 s (it is still in "
                                                       "the server's queue)")
    got = cancels.verdict("a", "delete", True, None, True, 2, view)
    assert got.kind == cancels.UNCONFIRMED and got.text.startswith("delete sent")
    assert cancels.verdict("a", "delete", False, None, False, 2, view).text == "removed from the queue"
    assert cancels.verdict("a", None, False, None, False, 2, view).kind == cancels.UNKNOWN
    got = cancels.verdict("a", None, False, None, False, 2, view, earlier="removed from the queue")
    assert got == cancels.Verdict(cancels.CANCELLED, "already cancelled (removed from the queue by an earlier cancel)")


class Server:
    """Answers /queue and /history from a script: `ends_at` is when the running prompt's
    history entry appears (and it leaves the queue)."""

    def __init__(self, clock, ends_at, end):
        self.clock, self.ends_at, self.end = clock, ends_at, end
        self.reads = 0

    def _over(self):
        return self.ends_at is not None and self.clock.now >= self.ends_at

    def cancel(self, ids, deleted, interrupted):
        interrupted.update(ids)

    def queue(self, retry=True):
        self.reads += 1
        return ([] if self._over() else ["a"]), []

    def history(self, pid, retry=True):
        return entry(pid, self.end, ["x.png"]) if self._over() else None

    def view_url(self, item):
        return view(item)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0
        self.now += seconds


def test_the_watch_ends_when_the_server_shows_the_end():
    clock = Clock()
    server = Server(clock, 1.0, "success")
    said = cancels.cancel(server, ["a"], 10, set(), set(), clock=clock, sleep=clock.sleep)
    assert said["a"].kind == cancels.ENDED and said["a"].files == ("http://s/view?x.png",)
    assert 1.0 <= clock.now < 1.6  # looked again soon after the end, not at the limit


def test_the_watch_gives_up_at_the_limit():
    clock = Clock()
    server = Server(clock, None, "success")
    said = cancels.cancel(server, ["a"], 3, set(), set(), clock=clock, sleep=clock.sleep)
    assert said["a"].kind == cancels.UNCONFIRMED and clock.now == 3
    assert server.reads < 20  # waits between looks grow (a Backoff), up to half a second


# ---- the watch alone: what it asks for, given what it was told and the time --------------
def test_the_watch_passes_once_more_for_those_deleted_then_looks_on_the_confirm_backoff(monkeypatch):
    from comfy_cli import backoff

    monkeypatch.setattr(backoff, "CANCEL", backoff.Backoff(first=0.5, factor=1.0, cap=0.5, tries=1))
    w = cancels.Watch(["a", "b", "c"], 5, 0.0, view)
    assert w.step(0.0) == cancels.Pass(("a", "b", "c"))
    w.passed({"b", "c"}, {"a"}, 0.1)  # b and c were pending: one may have started meanwhile
    assert w.step(0.1) == cancels.Wake(0.6)
    assert w.step(0.6) == cancels.Pass(("b", "c"))
    w.passed(set(), {"b"}, 0.7)  # b had started: interrupted now; no more passes
    assert w.step(0.7) == cancels.Look()
    w.looked(["a", "b"], [], 0.8)
    assert w.step(0.8) == cancels.Entry("c")  # out of the queue: had it ended first?
    w.found("c", None, 0.8)
    first = cancels.CONFIRM.delay(1)
    assert w.step(0.8) == cancels.Wake(0.8 + first) and w.said == {"c": cancels.Verdict(cancels.CANCELLED,
                                                                                         "removed from the queue")}
    assert w.step(0.8 + first) == cancels.Look()
    w.looked(["b"], [], 1.0)
    assert w.step(1.0) == cancels.Entry("a")  # out of the queue: its end decides
    w.found("a", entry("a", "interrupted"), 1.1)
    assert w.said["a"].kind == cancels.CANCELLED
    assert w.step(1.1) == cancels.Wake(1.1 + cancels.CONFIRM.delay(2))


def test_the_watch_wakes_at_its_limit_and_the_last_look_decides():
    w = cancels.Watch(["a"], 1.0, 0.0, view)
    assert w.step(0.0) == cancels.Pass(("a",))
    w.passed(set(), {"a"}, 0.0)
    now = 0.0
    for _ in range(1000):  # (bounded: a watch that never ends fails here, not at the suite's timeout)
        do = w.step(now)
        if type(do) is cancels.Wake:
            assert do.at <= 1.0  # never past the limit
            now = do.at
        elif do == cancels.Look():
            w.looked(["a"], [], now)
        else:
            break
    else:
        pytest.fail("the watch never ended")
    assert do is None and now == 1.0
    assert w.said["a"].kind == cancels.UNCONFIRMED and "within 1 s" in w.said["a"].text


def test_the_watch_says_unknown_of_a_prompt_nothing_was_done_to():
    w = cancels.Watch(["a"], 5, 0.0, view, earlier={})
    w.step(0.0)
    w.passed(set(), set(), 0.0)
    assert w.step(0.0) == cancels.Look()
    w.looked([], [], 0.0)
    assert w.step(0.0) == cancels.Entry("a")
    w.found("a", None, 0.0)
    assert w.step(0.0) is None and w.said["a"].kind == cancels.UNKNOWN
