"""The second Ctrl-C's backstop: when the process must be gone is decided on the pure side
(Limits.gone_by, from its hurry_grace, fake clock); the watchdog thread only obeys that
time, and does so while the main thread is stuck (in a process of its own here)."""

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from comfy_cli import signals
from comfy_cli.limits import Limits

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(60)


def test_the_grace_is_one_of_the_limits():
    assert Limits().hurry_grace == 2.0
    assert Limits().gone_by(100.0) == 102.0
    assert Limits(hurry_grace=0.5).gone_by(7.25) == 7.75
    assert Limits(hurry_grace=0.0).gone_by(3.0) == 3.0  # no grace: at once


def test_the_watchdog_leaves_at_the_time_it_is_given_not_before():
    left = []
    done = threading.Event()

    def leave(code):
        left.append((code, time.monotonic()))
        done.set()

    at = time.monotonic() + 0.3
    signals.watchdog(at, 130, leave)
    assert done.wait(20)
    code, when = left[0]
    assert code == 130 and when >= at


def test_a_time_already_past_means_now():
    done = threading.Event()
    signals.watchdog(time.monotonic() - 5, 143, lambda code: done.set())
    assert done.wait(20)


STUCK = textwrap.dedent("""
    import os, queue, signal, sys, time
    from comfy_cli import signals
    from comfy_cli.limits import Limits

    events, hurry = queue.SimpleQueue(), []
    signals.catch(events, hurry, Limits(hurry_grace=0.4))
    os.kill(os.getpid(), signal.SIGINT)  # the first: an event for the supervisor
    first = events.get(timeout=5)[1]
    os.kill(os.getpid(), signal.SIGINT)  # the second: stop at once
    print(type(first).__name__, first.code, hurry, events.get(timeout=5), time.monotonic(), flush=True)
    while True:  # a main loop that never gets back to look at `hurry`
        pass
""")


def test_after_a_second_signal_a_stuck_process_still_ends_with_its_code():
    child = subprocess.Popen([sys.executable, "-c", STUCK], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        said = child.stdout.readline().split()
        code = child.wait(30)
        ended = time.monotonic()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert said[:4] == ["Signal", "130", "[130]", "(None,"], said
    assert code == 130
    assert ended - float(said[-1]) >= 0.4  # (the grace it was given: not before)
