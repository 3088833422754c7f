"""`cancel`'s verdicts and its watch, with a scripted server and a fake clock."""

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
