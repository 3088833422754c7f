"""runner.take_burst: one turn of the loop takes one server's waiting news in a burst.

Every event is taken and its commands done one by one, in queue order; a burst ends at the
first item of another server, a signal or an upload note, or after BURST items, and that item
is handed back for the next turn, never dropped."""

import queue
from types import SimpleNamespace

from comfy_cli import runner
from comfy_cli.uploads import Uploaded


class Sup:
    def __init__(self, log, name):
        self.log, self.name = log, name

    def take(self, event, now):
        self.log.append((self.name, event))
        return [("shown", event)]


def run_of(n_servers=2):
    """(a stand-in for the runner's servers, `do` and queue; the events taken; the commands done)"""
    taken, done = [], []
    servers = [SimpleNamespace(sup=Sup(taken, i)) for i in range(n_servers)]
    run = SimpleNamespace(servers=servers, events=queue.SimpleQueue(),
                          do={tuple: lambda server, command: done.append((server.sup.name, command[1]))})
    return run, taken, done


def burst(run, index, item):
    return runner.take_burst(run.servers[index], run.do, run.events, index, item, 1.0)


def test_takes_what_waits_from_the_same_server_each_shown_before_the_next():
    run, taken, done = run_of()
    run.events.put((0, ["b", "c"]))
    run.events.put((0, "accepted"))
    now, held = burst(run, 0, ["a"])
    assert held is None and run.events.empty()
    assert taken == [(0, "a"), (0, "b"), (0, "c"), (0, "accepted")]
    assert done == taken  # each event's commands done as it was taken
    assert now >= 1.0


def test_another_servers_item_or_a_signal_or_an_upload_ends_the_burst_and_is_kept():
    for other in [(1, ["x"]), (None, "signal"), (0, Uploaded(0.0, "a.png", "a.png"))]:
        run, taken, _ = run_of()
        run.events.put((0, ["b"]))
        run.events.put(other)
        run.events.put((0, ["after"]))
        _, held = burst(run, 0, ["a"])
        assert taken == [(0, "a"), (0, "b")]
        assert held == other
        assert run.events.get_nowait() == (0, ["after"])  # nothing further was read


def test_a_flood_is_cut_at_burst_and_the_next_item_waits_for_the_next_turn():
    run, taken, _ = run_of(1)
    for i in range(1, runner.BURST + 5):
        run.events.put((0, [i]))
    _, held = burst(run, 0, [0])
    assert [e for _, e in taken] == list(range(runner.BURST))
    assert held == (0, [runner.BURST])  # read from the queue, not lost
    left = []
    while not run.events.empty():
        left.append(run.events.get_nowait()[1][0])
    assert left == list(range(runner.BURST + 1, runner.BURST + 5))
