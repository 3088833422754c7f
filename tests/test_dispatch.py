"""The dispatcher's rules, with a fake clock: several supervisors, no sockets, no threads."""

from comfy_cli import backoff
from comfy_cli import events as ev
from comfy_cli import supervisor as sv
from comfy_cli import tracker as tr
from comfy_cli.dispatch import Attempt, Dispatcher, Plan
from comfy_cli.limits import Limits
from comfy_cli.workflow import Workflow

GRAPH = {"1": {"class_type": "TestSteps", "inputs": {}}, "2": {"class_type": "SaveImage", "inputs": {}}}


class Disp:
    """A dispatcher over `servers` supervisors and a fake clock; remembers every command."""

    def __init__(self, n=4, servers=2, per_server=None, retry=backoff.retries(0), status=None, node_types=None,
                 connect=True, socket=True, **limits):
        self.now = 100.0
        self.limits = Limits(**limits)
        policy = sv.Policy(limits=self.limits, alone=servers == 1)
        self.sups = [sv.Supervisor([], policy, self.now, wall=0.0, socket_open=socket, name=f"s{i}")
                     for i in range(servers)]
        for i, queued in (status or {}).items():  # the server's own queue, as its `status` said
            self.sups[i].feed(ev.Status(self.now, queued, None), self.now)
        batch = [tr.Prompt(f"p{i}", Workflow(f"w{i}.json", f"w{i}", dict(GRAPH)), None, status=tr.WAITING)
                 for i in range(n)]
        self.disp = Dispatcher(batch, self.sups, Plan(per_server=per_server, retry=retry, limits=self.limits),
                               self.now, names=[f"s{i}" for i in range(servers)], node_types=node_types)
        self.log = []  # (server index, command)
        self._take(self.disp.start(self.now))
        if connect:
            for i in range(servers):
                self.feed(i, ev.Connected(self.now, False))

    def _take(self, groups):
        for i, commands in groups:
            self.log.extend((i, c) for c in commands)

    def feed(self, i, item=None):
        self._take(self.disp.feed(i, item, self.now))

    def advance(self, seconds):
        self.now += seconds
        self.feed(None)

    def sent(self, kind=sv.Submit):
        """(server, prompt id) of every command of `kind` with a prompt id, in order."""
        return [(i, c.prompt_id) for i, c in self.log if type(c) is kind]

    def item(self, n):
        """The latest attempt of batch item `n`."""
        return self.disp.finals()[n]

    def attempt(self, n):
        """The dispatcher's record of item `n`'s latest attempt."""
        return self.disp.attempt(self.item(n).prompt_id)

    def made(self):
        """Every attempt's prompt, in the order they were made."""
        return [p for p, _ in self.disp.every()]

    def run_and_fail(self, i, pid):
        self.feed(i, ev.Accepted(self.now, pid, 1, None))
        self.feed(i, [ev.Started(self.now, pid, 1),
                      ev.Failed(self.now, pid, "1", "TestSteps", "boom", "ValueError", (), 2)])


def test_a_prompt_goes_to_the_server_with_the_least_outstanding_work():
    d = Disp(n=3, status={0: 5})
    assert d.sent() == [(1, "p0"), (1, "p1"), (1, "p2")]  # 1, 2 then 3 of ours: still less than 5
    assert {d.attempt(n).server for n in range(3)} == {"s1"}


def test_equal_servers_take_turns():
    d = Disp(n=4)
    assert [d.attempt(n).server for n in range(4)] == ["s0", "s1", "s0", "s1"]
    assert sorted(d.sent()) == [(0, "p0"), (0, "p2"), (1, "p1"), (1, "p3")]


def test_per_server_keeps_the_rest_of_the_batch_until_one_of_ours_starts():
    d = Disp(n=5, per_server=2)
    assert sorted(d.sent()) == [(0, "p0"), (0, "p2"), (1, "p1"), (1, "p3")]
    assert d.item(4).status == tr.WAITING and d.attempt(4).server is None
    d.feed(0, ev.Accepted(d.now, "p0", 1, None))
    assert len(d.sent()) == 4  # accepted, not started: still waiting on s0
    d.feed(0, ev.Started(d.now, "p0", 1))
    assert d.sent()[-1] == (0, "p4")


def test_a_server_without_the_node_types_is_never_given_the_prompt():
    d = Disp(n=2, node_types=[{"TestSteps"}, {"TestSteps", "SaveImage"}])
    assert d.sent() == [(1, "p0"), (1, "p1")]


def test_a_prompt_no_server_can_run_is_rejected_at_once():
    d = Disp(n=1, node_types=[{"TestSteps"}, {"SaveImage"}])
    assert not d.sent()
    prompt = d.item(0)
    assert prompt.status == tr.REJECTED and "no server has the node types" in prompt.error["message"]
    assert d.disp.done


def test_failover_moves_a_prompt_that_had_not_started_and_withdraws_it_when_the_server_is_back():
    d = Disp(n=2, failover_after=20.0)
    assert d.sent() == [(0, "p0"), (1, "p1")]
    d.feed(0, ev.Accepted(d.now, "p0", 1, None))
    d.feed(1, ev.SubmitFailed(d.now, "p1", ev.SENT, "connection reset", None))  # s1 may have it
    d.feed(1, ev.Disconnected(d.now, "connection reset"))
    d.feed(1, ev.ReadFailed(d.now, 1, None, "connection refused"))  # s1 stopped answering
    assert d.disp.next_wakeup() <= d.now + 20.0
    d.advance(19.9)
    assert d.item(1).prompt_id == "p1"
    d.advance(0.2)
    moved = d.made()[1]
    again = d.item(1)
    assert moved.status == tr.ERROR and moved.error["message"].startswith("moved: s1 has not answered")
    assert again.prompt_id != "p1" and d.attempt(1).number == 1 and d.attempt(1).server == "s0"  # a move is not a retry
    assert d.sent()[-1] == (0, again.prompt_id)
    # s1 answers again: before anything else, p1 is deleted there.
    d.feed(1, ev.ReadFailed(d.now, None, "p9", "x"))  # (no round of this gen: ignored)
    d.feed(1, ev.Connected(d.now, True))
    d.feed(1, ev.QueueRead(d.now, _gen(d, 1), (), ("p1",)))
    assert [(i, c.prompt_ids) for i, c in d.log if type(c) is sv.Withdraw] == [(1, ("p1",))]


def _gen(d, i):
    return [c.gen for j, c in d.log if j == i and type(c) is sv.ReadQueue][-1]


def test_failover_ends_a_running_prompt_lost_and_retries_it_only_with_retry():
    for retry, attempts in ((0, 1), (1, 2)):
        d = Disp(n=1, retry=backoff.retries(retry), failover_after=5.0)
        d.feed(0, ev.Accepted(d.now, "p0", 1, None))
        d.feed(0, ev.Started(d.now, "p0", 1))
        d.feed(0, ev.Disconnected(d.now, "reset"))
        d.feed(0, ev.ReadFailed(d.now, _gen(d, 0), None, "refused"))
        d.advance(5.0)
        assert d.made()[0].status == tr.LOST
        assert len(d.made()) == attempts
        if attempts == 2:
            assert d.attempt(0).number == 2 and d.sent()[-1] == (1, d.item(0).prompt_id)


def test_retry_makes_a_new_attempt_on_another_server_up_to_n_times():
    d = Disp(n=1, retry=backoff.retries(1))
    d.run_and_fail(0, "p0")
    second = d.item(0)
    assert second.prompt_id != "p0" and d.attempt(0).number == 2 and d.attempt(0).server == "s1"
    d.run_and_fail(1, second.prompt_id)
    assert d.item(0) is second and second.status == tr.FAILED  # no third attempt
    assert d.disp.done


def test_without_retry_a_failed_prompt_stays_failed():
    d = Disp(n=1)
    d.run_and_fail(0, "p0")
    assert len(d.made()) == 1 and d.item(0).status == tr.FAILED and d.disp.done


def test_a_retry_waits_out_its_backoff():
    d = Disp(n=1, retry=backoff.retries(1, wait=2.0))
    d.run_and_fail(0, "p0")
    second = d.item(0)
    assert second.status == tr.WAITING and not d.disp.done
    assert d.disp.next_wakeup() == d.now + 2.0
    d.advance(1.9)
    assert second.status == tr.WAITING
    d.advance(0.1)
    assert d.sent()[-1] == (1, second.prompt_id)


def test_the_deadline_ends_the_prompts_still_waiting_here():
    d = Disp(n=3, servers=1, per_server=1, deadline=5.0)
    assert d.sent() == [(0, "p0")]
    assert d.disp.next_wakeup() <= d.now + 5.0
    d.advance(4.9)
    assert d.item(1).status == tr.WAITING
    d.advance(0.1)
    for n in (1, 2):
        assert d.item(n).status == tr.TIMEOUT
        assert d.item(n).error["message"] == "not submitted: the deadline of 5 s passed"
    assert d.item(0).status == tr.TIMEOUT  # (the supervisor's own deadline: it was sent)


def test_no_server_answering_at_the_start_ends_the_batch_unsent():
    d = Disp(n=2, connect=False, socket=False)  # (no socket: each is checked over HTTP first)
    assert [type(c) for i, c in d.log] == [sv.CheckServer, sv.CheckServer]
    for i in range(2):
        d.feed(i, ev.ServerChecked(d.now, "cannot connect"))
    assert d.disp.fatal.startswith("none of the servers answers")
    assert all(p.status == tr.ERROR for p in d.made()) and d.disp.done


def test_no_server_whose_socket_ever_opens_and_none_answering_http_ends_the_batch():
    # (each one's socket fails, then its check: sockets were tried, so the prompts had been
    # handed out already; the run must still end, not wait for ever)
    d = Disp(n=3, connect=False)
    assert len(d.made()) == 3 and all(a.server is not None for _, a in d.disp.every())
    for i in range(2):
        d.feed(i, ev.Disconnected(d.now, "refused"))
        d.feed(i, ev.ServerChecked(d.now, "cannot connect"))
    assert d.disp.fatal.startswith("none of the servers answers")
    assert all(p.status == tr.ERROR for p in d.made()) and d.disp.done


def test_each_attempt_has_a_record_of_the_dispatchers_and_the_prompt_carries_none_of_it():
    d = Disp(n=1, retry=backoff.retries(2))
    assert not any(hasattr(d.item(0), name) for name in ("item", "attempt", "server"))
    d.run_and_fail(0, "p0")
    second = d.item(0)
    d.run_and_fail(1, second.prompt_id)
    third = d.item(0)
    made = [(p.prompt_id, a.item, a.number, a.server, a.tried) for p, a in d.disp.every()]
    assert made == [("p0", 0, 1, "s0", ()), (second.prompt_id, 0, 2, "s1", ("s0",)),
                    (third.prompt_id, 0, 3, "s0", ("s0", "s1"))]
    assert d.disp.finals() == [third] and d.disp.attempt("nobody") is None


def test_a_move_is_not_a_try_but_both_remember_where_the_item_went():
    a = Attempt(4, 2, "s1", tried=("s0",))
    moved, retried = a.again(moved=True), a.again(moved=False)
    assert (moved.item, moved.number, moved.server, moved.tried) == (4, 2, None, ("s0", "s1"))
    assert (retried.item, retried.number, retried.server, retried.tried) == (4, 3, None, ("s0", "s1"))


def test_items_from_a_journal_and_prompts_followed_keep_their_records():
    policy = sv.Policy(limits=Limits(), alone=False)
    sups = [sv.Supervisor([], policy, 0.0, wall=0.0, socket_open=True, name=f"s{i}") for i in range(2)]
    wf = Workflow("w.json", "w", dict(GRAPH))
    new = tr.Prompt("new", wf, None, status=tr.WAITING)
    disp = Dispatcher([new], sups, Plan(retry=backoff.retries(1)), 0.0, names=["s0", "s1"], items=[5])
    earlier = tr.Prompt("old", wf, None, status=tr.FAILED)  # ended in an earlier run, on its second try
    disp.known(earlier, 3, 2, "s1")
    theirs = tr.Prompt("theirs", wf, None, status=tr.SUBMITTED)
    disp.follow(theirs, "s0")
    assert disp.finals() == [new, earlier, theirs]
    assert {p.prompt_id: (a.item, a.number, a.server) for p, a in disp.every()} == \
        {"new": (5, 1, None), "old": (3, 2, "s1"), "theirs": (None, 1, "s0")}
