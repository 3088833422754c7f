"""runner._one_cpu: the run's threads share one CPU (Linux); COMFY_CLI_ANY_CPU=1 turns it off."""

import os
import threading

import pytest

from comfy_cli import runner

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")


def in_thread(fn):
    """Run fn in a fresh thread (affinity is per thread: the test's own thread is never changed)."""
    out = {}

    def body():
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed back to the test
            out["error"] = exc

    t = threading.Thread(target=body)
    t.start()
    t.join(10)
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_threads_started_after_it_share_the_cpu_and_it_is_undone():
    everything = os.sched_getaffinity(0)

    def body():
        before = os.sched_getaffinity(0)
        allowed = runner._one_cpu()
        mine = os.sched_getaffinity(0)
        child = {}
        t = threading.Thread(target=lambda: child.update(cpus=os.sched_getaffinity(0)))
        t.start()
        t.join(10)
        if allowed is not None:
            os.sched_setaffinity(0, allowed)
        return before, allowed, mine, child["cpus"], os.sched_getaffinity(0)

    before, allowed, mine, child, after = in_thread(body)
    if len(everything) >= 2:
        assert allowed == before and len(mine) == 1 and mine <= before
        assert child == mine  # a thread started afterwards (listener, workers) inherits it
    else:
        assert allowed is None and mine == before  # one CPU: nothing to do
    assert after == before


def test_nothing_changes_with_one_cpu_allowed():
    def body():
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        return runner._one_cpu(), os.sched_getaffinity(0)

    allowed, mine = in_thread(body)
    assert allowed is None and len(mine) == 1


def test_turned_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("COMFY_CLI_ANY_CPU", "1")
    before = os.sched_getaffinity(0)
    assert in_thread(lambda: (runner._one_cpu(), os.sched_getaffinity(0))) == (None, before)


def test_a_run_leaves_the_calling_thread_as_it_was(sim, tmp_path):
    """In-process, the way a library user would run it: the main thread's CPUs are restored."""
    from comfy_cli import workflow
    from test_run_e2e import workflow as example

    wf = example(tmp_path, "steps")

    def body():
        before = os.sched_getaffinity(0)
        run = runner.Run(runner.Options(url=sim.url, workflows=[workflow.load(str(wf))], progress="none"),
                         out=open(os.devnull, "w"), err=open(os.devnull, "w"))
        code = run.execute()
        return before, code, os.sched_getaffinity(0)

    before, code, after = in_thread(body)
    assert code == 0 and after == before
