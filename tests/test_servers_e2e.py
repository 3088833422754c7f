"""Several servers in one run (issue J): dispatch by load, --per-server, node types, failover,
--retry and --shard, end to end on several simulators and the loopback proxy."""

import json
import threading
import time

import pytest
from aiohttp import web

from comfy_cli.sim import Faults, SimServer
from netproxy import Proxy
from test_faults_e2e import FAST, close, run_json
from test_run_e2e import cli, start, workflow


def histories(*sims):
    return [set(s.history_ids()) for s in sims]


class Events:
    """Reads a running client's --events lines (and its stderr) on threads, so a test can wait,
    with a bound, for what the client itself has seen."""

    def __init__(self, proc):
        self.proc = proc
        self.lines = []
        self.err = []
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._read, args=(proc.stdout, True), daemon=True),
                         threading.Thread(target=self._read, args=(proc.stderr, False), daemon=True)]
        for t in self._threads:
            t.start()

    def _read(self, stream, is_out):
        for line in stream:
            with self._cond:
                (self.lines if is_out else self.err).append(json.loads(line) if is_out else line)
                self._cond.notify_all()

    def wait(self, predicate, timeout):
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.lines), timeout)

    def seen_running(self, sim):
        """Has the client seen the prompt `sim` runs now start, with another of ours waiting there?
        (One it only saw queued would be moved away, not lost.)"""
        now = sim.running()
        with self._cond:
            return (now is not None and len(sim.engine.pending) >= 1 and
                    any(e["event"] == "started" and e["prompt_id"] == now[0] for e in self.lines))

    def until_seen_running(self, sim, timeout):
        end = time.monotonic() + timeout
        while not self.seen_running(sim):
            if time.monotonic() > end:
                return False
            with self._cond:
                self._cond.wait(0.05)  # a new line, or the server moved on
        return True

    def finish(self, timeout):
        self.proc.wait(timeout)
        for t in self._threads:
            t.join(timeout)
        return self.lines, "".join(self.err)


def test_the_fast_server_runs_more(tmp_path):
    with SimServer() as fast, SimServer(slow=5) as slow:
        path = workflow(tmp_path, "steps", **{"1__seconds_per_step": 0.01, "1__steps": 10})
        proc, doc = run_json(["run", path, "--count", "12", "--url", fast.url, "--url", slow.url, "--json"],
                             timeout=90)
        assert proc.returncode == 0, proc.stderr
        on = [p["server"] for p in doc["prompts"]]
        assert on.count(fast.url) > on.count(slow.url) >= 1
        assert doc["servers"] == [fast.url, slow.url]
        # Each prompt ran exactly once, where the summary says.
        for p in doc["prompts"]:
            owner, other = (fast, slow) if p["server"] == fast.url else (slow, fast)
            assert p["prompt_id"] in owner.submissions and p["prompt_id"] not in other.submissions


def test_per_server_limits_our_prompts_waiting_on_one_server(tmp_path):
    with SimServer() as a, SimServer() as b:
        most = {a.url: 0, b.url: 0}
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                for s in (a, b):
                    most[s.url] = max(most[s.url], len(s.engine.pending))
                stop.wait(0.01)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            proc, doc = run_json(["run", workflow(tmp_path, "steps", **{"1__steps": 10}), "--count", "8",
                                  "--url", f"{a.url},{b.url}", "--per-server", "1", "--json"], timeout=90)
        finally:
            stop.set()
            watcher.join(5)
        assert proc.returncode == 0, proc.stderr
        assert max(most.values()) <= 1 and len(a.submissions) + len(b.submissions) == 8


def test_a_server_without_a_node_type_is_not_given_that_workflow(tmp_path):
    with SimServer() as a, SimServer(lacks=["TestFail"]) as b:
        fail = workflow(tmp_path, "fail")
        steps = workflow(tmp_path, "steps")
        proc, doc = run_json(["run", fail, steps, "--count", "3", "--url", a.url, "--url", b.url, "--json"],
                             timeout=60)
        assert proc.returncode == 1, proc.stderr  # the fail workflow fails, on purpose
        for p in doc["prompts"]:
            if p["name"].startswith("fail"):
                assert p["server"] == a.url and p["status"] == "failed"
            else:
                assert p["status"] == "success"


def test_a_workflow_no_server_can_run_is_refused(tmp_path):
    with SimServer(lacks=["TestFail"]) as a, SimServer(lacks=["TestFail"]) as b:
        proc, doc = run_json(["run", workflow(tmp_path, "fail"), "--url", a.url, "--url", b.url, "--json"])
        assert proc.returncode == 2
        p = doc["prompts"][0]
        assert p["status"] == "rejected" and p["error"]["message"] == "no server has the node types TestFail"
        assert a.submissions == [] and b.submissions == []


def test_failover_moves_waiting_prompts_and_retries_the_running_one(tmp_path):
    with SimServer() as a, SimServer() as b:
        proxy = Proxy(b.port).up()
        path = workflow(tmp_path, "steps", **{"1__steps": 120})  # about 1.2 s each: b cannot finish it while we cut
        proc = start("run", path, "--count", "8", "--url", a.url, "--url", proxy.url, "--events", "--retry", "1",
                     "--failover-after", "1", "--per-server", "2", *FAST)
        events = Events(proc)
        try:
            assert events.until_seen_running(b, 20)
            proxy.down()
            lines, err = events.finish(60)
        finally:
            proc.kill()
            close(proxy)
        assert proc.returncode == 0, err
        doc = lines[-1]
        assert doc["event"] == "summary"
        finals = {}
        for p in doc["prompts"]:
            finals[p["name"]] = p
        assert sorted(finals) == [f"steps#{i}" for i in range(1, 9)]
        assert all(p["status"] == "success" for p in finals.values())
        moved = [p for p in doc["prompts"] if p["status"] == "error" and p["error"]["message"].startswith("moved")]
        lost = [p for p in doc["prompts"] if p["status"] == "lost"]
        assert moved and len(lost) == 1
        # Every item succeeded exactly once on a server that answered (b's later runs are its own).
        for name, p in finals.items():
            assert p["server"] == a.url


def test_retry_never_resends_a_rejected_prompt_and_records_attempts(sim, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"1": {"class_type": "TestSteps", "inputs": {"steps": "x", "seconds_per_step": 0,
                                                                              "seed": 1}},
                               "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}))
    proc, doc = run_json(["run", str(bad), workflow(tmp_path, "fail"), "--url", sim.url, "--json", "--retry", "2"],
                         timeout=60)
    assert proc.returncode == 2, proc.stderr
    rejected = [p for p in doc["prompts"] if p["name"] == "bad"]
    failed = [p for p in doc["prompts"] if p["name"] == "fail"]
    assert [p["status"] for p in rejected] == ["rejected"]
    assert [(p["attempt"], p["status"]) for p in failed] == [(1, "failed"), (2, "failed"), (3, "failed")]
    assert len(sim.submissions) == 3


def test_shards_cover_a_batch_exactly(sim, tmp_path):
    path = workflow(tmp_path, "steps", **{"1__steps": 1})
    names, seeds = [], []
    for k in (1, 2, 3):
        proc, doc = run_json(["run", path, "--count", "7", "--shard", f"{k}/3", "--url", sim.url, "--json"])
        assert proc.returncode == 0, proc.stderr
        names += [p["name"] for p in doc["prompts"]]
    assert sorted(names, key=lambda n: int(n.split("#")[1])) == [f"steps#{i}" for i in range(1, 8)]
    assert sim.wait_for(lambda s: set(s.submissions) <= set(s.history_ids()), 10)
    for pid in sim.submissions:
        seeds.append(sim.history_entry(pid)["prompt"][2]["1"]["inputs"]["seed"])
    assert len(set(seeds)) == 7


def test_bad_server_options_are_refused_before_anything_is_sent(sim, tmp_path):
    path = workflow(tmp_path, "steps")
    cases = [(["--url", sim.url, "--url", sim.url + "/"], "the same server is named twice"),
             (["--shard", "4/3"], "--shard 4/3: expected K/N"), (["--shard", "x"], "--shard x: expected K/N"),
             (["--per-server", "0"], "--per-server"), (["--retry", "-1"], "--retry")]
    for args, message in cases:
        proc = cli("run", path, *args, *([] if "--url" in args else ["--url", sim.url]))
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
    assert sim.submissions == []


def summary_ids(summary):
    return [p["prompt_id"] for p in summary["prompts"]]


def cut_b_off_until_moved(b, proxy, finish_within, *args):
    """Run comfy-cli with `args`; once it has seen one of its prompts running on b, cut b off (the
    proxy) until the client has moved b's prompts away, note what still waits on b, let b answer
    again and run to the end. Returns (events, stderr, ids waiting on b when it came back,
    exit code)."""
    proc = start(*args)
    events = Events(proc)
    try:
        assert events.until_seen_running(b, 20)
        proxy.down()
        assert events.wait(lambda lines: any(
            e["event"] == "finished" and (e["error"] or {}).get("message", "").startswith("moved")
            for e in lines), 30)
        waiting_on_b = [item[1] for item in b.engine.pending_items()]
        proxy.up()
        lines, err = events.finish(finish_within)
    finally:
        proc.kill()
        close(proxy)
    return lines, err, waiting_on_b, proc.returncode


def test_a_server_that_comes_back_has_our_moved_prompts_deleted_first(tmp_path):
    with SimServer() as a, SimServer() as b:
        proxy = Proxy(b.port).up()
        path = workflow(tmp_path, "steps", **{"1__steps": 60})
        # b went on with its queue while cut off; what still waits there when it answers again
        # must be deleted before it runs.
        lines, err, waiting_on_b, code = cut_b_off_until_moved(
            b, proxy, 60, "run", path, "--count", "10", "--url", a.url, "--url", proxy.url, "--events",
            "--failover-after", "1", "--per-server", "2", *FAST)
        summary = lines[-1]
        assert summary["event"] == "summary"
        # The prompts moved away that still waited on b never ran there: deleted when it came back.
        assert b.wait_for(lambda s: not s.engine.pending and s.running() is None, 10)
        assert set(waiting_on_b) <= set(summary_ids(summary))  # (ours: prompt ids, not queue numbers)
        assert not set(waiting_on_b) & set(b.history_ids())
        assert "removed" in err and "answering again" in err
        finals = {p["name"]: p for p in summary["prompts"]}
        assert len(finals) == 10
        # The one running on b when it went silent is lost (no --retry): exit 4.
        assert code == 4, err
        lost = [p for p in finals.values() if p["status"] == "lost"]
        assert len(lost) == 1
        # It went on running on b while b was cut off: when b answered again, that was noticed.
        assert [w["type"] for w in lost[0]["warnings"]] == ["ran_twice"]


def test_status_reports_every_server_and_fails_only_if_none_answers(sim):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    proc = cli("status", "--url", sim.url, "--url", dead, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [(d["server"], d["reachable"]) for d in doc["servers"]] == [(sim.url, True), (dead, False)]
    assert doc["servers"][0]["queue"] == {"running": 0, "pending": 0}
    none = cli("status", "--url", dead)
    assert none.returncode == 4 and none.stderr.strip().endswith(f"cannot connect to {dead}: is ComfyUI running "
                                                                 "there? set --url or COMFY_URL")


def test_retry_gets_a_prompt_through_a_node_that_fails_the_first_time(sim, tmp_path):
    path = workflow(tmp_path, "flaky")
    proc, doc = run_json(["run", path, "--url", sim.url, "--json", "--retry", "1"])
    assert proc.returncode == 0, proc.stderr
    assert [(p["attempt"], p["status"]) for p in doc["prompts"]] == [(1, "failed"), (2, "success")]
    assert len(sim.submissions) == 2
    without = cli("run", workflow(tmp_path, "flaky", **{"1__seed": 8}), "--url", sim.url)
    assert without.returncode == 1  # no --retry: the failure stands


def test_a_retry_goes_to_another_server_when_there_is_one(tmp_path):
    with SimServer() as a, SimServer() as b:
        path = workflow(tmp_path, "flaky")
        proc, doc = run_json(["run", path, "--url", a.url, "--url", b.url, "--json", "--retry", "2"], timeout=60)
        assert proc.returncode == 0, proc.stderr
        attempts = [(p["attempt"], p["server"], p["status"]) for p in doc["prompts"]]
        # Each server fails it the first time: the second attempt goes elsewhere; the third then works
        # on either.
        assert [s for _, _, s in attempts] == ["failed", "failed", "success"]
        assert attempts[0][1] != attempts[1][1]


class FailingDeletes(Faults):
    """POST /queue (deleting from the queue) answers 500, the first `times` times."""

    def __init__(self, times):
        self.times = times
        self.failed = 0

    def on_http(self, request):
        if request.method == "POST" and request.path == "/queue" and self.failed < self.times:
            self.failed += 1
            return web.Response(status=500, text="oops")
        return None


@pytest.mark.parametrize("times", [1, 10 ** 6])
def test_a_failed_withdrawal_is_tried_again_and_what_it_never_removed_is_listed(tmp_path, times):
    faults = FailingDeletes(times)
    # b is slow: the moved prompts still wait there at every try, until the run ends.
    with SimServer() as a, SimServer(faults=faults, slow=5) as b:
        proxy = Proxy(b.port).up()
        path = workflow(tmp_path, "steps", **{"1__steps": 60, "1__seconds_per_step": 0.03})
        # Two on each; the one moved from b goes to a (it has room), so b has no new work.
        lines, err, waiting_on_b, _code = cut_b_off_until_moved(
            b, proxy, 90, "run", path, "--count", "4", "--url", a.url, "--url", proxy.url, "--events",
            "--failover-after", "1", "--per-server", "3", *FAST)
        assert lines[-1]["event"] == "summary" and waiting_on_b
        assert "could not delete the prompts moved away from it" in err and "trying again" in err
        if times == 1:  # the second try removed them: none ran to its end on b
            assert faults.failed == 1 and "removed" in err
            ran = [pid for pid in waiting_on_b if pid in b.history_ids()
                   and b.engine.history[pid]["status"]["status_str"] == "success"]
            assert not ran, err
            assert "may still be in its queue" not in err
        else:  # tried until the run ended; the end says which may still be there
            assert faults.failed >= 2, err
            line = next((x for x in err.splitlines() if "may still be in its queue" in x), None)
            assert line, err
            assert "could not delete them there" in line
            assert set(waiting_on_b) <= set(line.split(":")[-1].split())
            assert not set(waiting_on_b) & set(b.history_ids())  # (still waiting there: b is slow)


def test_a_batch_none_of_whose_servers_can_be_reached_ends_at_once(tmp_path):
    import socket

    ports = []
    for _ in range(2):  # ports nothing listens on
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    path = workflow(tmp_path, "steps")
    began = time.monotonic()
    proc = cli("run", path, "--count", "3", "--url", f"http://127.0.0.1:{ports[0]}",
               "--url", f"http://127.0.0.1:{ports[1]}", "--progress", "none", timeout=60)
    assert proc.returncode == 4, proc.stderr
    assert "none of the servers answers" in proc.stderr
    assert time.monotonic() - began < 20  # (it used to wait for ever, moving the batch between the two)
