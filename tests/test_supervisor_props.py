"""Random interleavings of socket drops, HTTP results and server progress, against a model
server: the supervisor never calls a prompt the server has `lost`, never has one prompt run
twice, never cancels a prompt that is not ours, and always ends every prompt."""

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfy_cli import events as ev
from comfy_cli import supervisor as sv
from comfy_cli import tracker as tr
from comfy_cli.workflow import Workflow

GRAPH = {"1": {"class_type": "TestSteps", "inputs": {}}, "2": {"class_type": "SaveImage", "inputs": {}}}
OUT = {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}


class Model:
    """What the real server does, as far as the supervisor can tell: one queue, one runner,
    a history; events go to the socket only while it is up. Another client's prompt waits too."""

    def __init__(self):
        self.pending = ["foreign"]
        self.running = None
        self.history = {}
        self.arrivals = Counter()
        self.late = []  # (deadline, prompt id): forwarded late by a gateway
        self.cancelled = []

    def arrive(self, pid):
        self.arrivals[pid] += 1
        self.pending.append(pid)

    def step(self):
        """One move of the server; the socket events it sends."""
        if self.running is not None:
            pid, self.running = self.running, None
            self.history[pid] = {"status": {"status_str": "success", "completed": True, "messages": [
                ["execution_start", {"prompt_id": pid, "timestamp": 1}],
                ["execution_success", {"prompt_id": pid, "timestamp": 2}]]}, "outputs": {"2": OUT}}
            return [ev.Executed(0, pid, "2", None, OUT), ev.Succeeded(0, pid, 2), ev.Executing(0, pid, None, None)]
        if self.pending:
            pid = self.running = self.pending.pop(0)
            return [ev.Started(0, pid, 1), ev.Executing(0, pid, "1", None), ev.Progress(0, pid, "1", 1, 2)]
        return []


ACTIONS = ["io", "io", "io", "server", "server", "time", "drop", "connect", "signal"]


@settings(max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.integers(1, 4))
def test_random_interleavings(data, n):
    model = Model()
    now = 0.0
    prompts = [tr.Prompt(f"p{i}", Workflow("w.json", f"w{i}", dict(GRAPH)), None, status=tr.WAITING)
               for i in range(n)]
    download = data.draw(st.booleans())
    no_cancel = data.draw(st.booleans())
    sup = sv.Supervisor(prompts, sv.Policy(poll_interval=0.5, silence_check=5, download=download,
                                           no_cancel=no_cancel), now, wall=0.0)
    signalled = False
    ours = {p.prompt_id for p in prompts}
    pending_io = []
    socket_up = False
    fetching = set()  # (prompt id, key) of downloads with the worker

    def take(commands):
        for c in commands:
            if type(c) in sv.IO_COMMANDS and type(c) is not sv.Reconnect:
                pending_io.append(c)
            if type(c) is sv.Cancel:
                assert set(c.prompt_ids) <= ours, "cancelled a prompt that is not ours"
            if type(c) is sv.Download:
                assert (c.prompt_id, c.key) not in fetching, "one file downloaded twice at once"
                fetching.add((c.prompt_id, c.key))

    def feed(item):
        take(sup.feed(item, now))

    def deliver(events):
        if socket_up and events:
            feed([e._replace(at=now) for e in events])

    def answer(c, ok=True):
        if type(c) is sv.Submit:
            outcome = data.draw(st.sampled_from(["ok", "ok", "ok", "lost", "refused", "late"])) if ok else "ok"
            if outcome == "ok":
                model.arrive(c.prompt_id)
                return ev.Accepted(now, c.prompt_id, 0, None)
            if outcome == "lost":
                model.arrive(c.prompt_id)
                return ev.SubmitFailed(now, c.prompt_id, ev.SENT, "reset", None)
            if outcome == "late":
                model.late.append((now + 1.0, c.prompt_id))
                return ev.SubmitFailed(now, c.prompt_id, ev.SENT, "504", None)
            return ev.SubmitFailed(now, c.prompt_id, ev.NOT_SENT, "refused", None)
        if type(c) is sv.CheckServer:
            return ev.ServerChecked(now, None)
        if type(c) is sv.Download:
            fetching.discard((c.prompt_id, c.key))
            outcome = data.draw(st.sampled_from(["saved", "saved", "retry", "fail"])) if ok else "saved"
            if outcome == "saved":
                return ev.Downloaded(now, c.prompt_id, c.key, "out/a.png", None)
            return ev.Downloaded(now, c.prompt_id, c.key, None, "download failed: reset", retry=outcome == "retry")
        if type(c) is sv.Cancel:
            mine = set(c.prompt_ids)
            deleted = tuple(p for p in model.pending if p in mine)
            model.pending = [p for p in model.pending if p not in mine]
            interrupted = (model.running,) if model.running in mine else ()
            model.cancelled.extend(deleted + interrupted)
            return ev.CancelDone(now, deleted, interrupted, None)
        if ok and data.draw(st.integers(0, 9)) == 0:
            return ev.ReadFailed(now, c.gen, getattr(c, "prompt_id", None) if type(c) is sv.ReadHistory else None,
                                 "connection reset")
        if type(c) is sv.ReadQueue:
            running = (model.running,) if model.running else ()
            return ev.QueueRead(now, c.gen, running, tuple(model.pending))
        return ev.HistoryRead(now, c.gen, c.prompt_id, model.history.get(c.prompt_id))

    take(sup.start(now))
    for _ in range(data.draw(st.integers(10, 120))):
        action = data.draw(st.sampled_from(ACTIONS))
        if action == "io" and pending_io:
            c = pending_io.pop(data.draw(st.integers(0, len(pending_io) - 1)))
            feed(answer(c))
        elif action == "server":
            deliver(model.step())
        elif action == "time":
            now += data.draw(st.sampled_from([0.05, 0.3, 0.6, 2.0]))
            for due, pid in [x for x in model.late if x[0] <= now]:
                model.late.remove((due, pid))
                model.arrive(pid)
            feed(None)
        elif action == "signal" and not signalled and data.draw(st.integers(0, 19)) == 0:
            signalled = True  # Ctrl-C: everything open ends, ours on the server are cancelled
            feed(ev.Signal(now, 130))
        elif action == "drop" and socket_up:
            socket_up = False
            feed(ev.Disconnected(now, "drop"))
        elif action == "connect" and not socket_up:
            socket_up = True
            feed(ev.Connected(now, True))
            if model.running is not None:
                deliver([ev.Executing(now, None, "1", None)])  # the server's prompt-less re-send
        for p in prompts:
            assert p.status != tr.LOST, "lost a prompt the server has"

    # Calm: the socket comes back, every answer arrives, the server works through its queue.
    if not socket_up:
        socket_up = True
        feed(ev.Connected(now, True))
    for _ in range(2000):
        if sup.done:
            break
        for due, pid in list(model.late):
            model.late.remove((due, pid))
            model.arrive(pid)
        while pending_io:
            feed(answer(pending_io.pop(0), ok=False))
        deliver(model.step())
        now += 0.25
        feed(None)
    assert sup.done, [p.status for p in prompts]
    assert not sup.after.downloads and not sup.after.refetch
    assert not fetching or signalled  # (after Ctrl-C the run ends without waiting for files)
    for p in prompts:
        assert p.status != tr.LOST
        assert model.arrivals[p.prompt_id] <= 1, f"{p.prompt_id} was submitted twice"
        if p.status == tr.SUCCESS:
            assert p.prompt_id in model.history
    assert "foreign" not in model.cancelled
