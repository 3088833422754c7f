"""SIGINT and SIGTERM during a run, and the watchdog that ends the process after a second one.

A handler only puts on the run's queue (`SimpleQueue.put` is reentrant) and never draws: the
first signal is a `Signal` event for the supervisor (cancel, then end), a second one asks to
stop at once (the loop stops between two draws and leaves a clean screen), a third ends the
process there and then. When the process must be gone after the second is decided with the
run's other limits (`Limits.gone_by`, pure); the watchdog only obeys it. It is a thread, the
one timer that is, because it must fire exactly when the main loop cannot: a loop stuck in a
long draw or a write to a paused terminal never gets to a wake-up.
"""

import os
import signal
import threading
import time

from comfy_cli import errors
from comfy_cli import events as ev


def watchdog(at, code, leave=os._exit):
    """A daemon thread that calls `leave(code)` (ends the process) at monotonic time `at`,
    whatever the main thread is doing."""
    timer = threading.Timer(max(0.0, at - time.monotonic()), leave, (code,))
    timer.daemon = True
    timer.start()
    return timer


def catch(events, hurry, limits):
    """SIGINT and SIGTERM become events for the supervisor; a second one asks to stop at once
    (its exit code goes into `hurry`, a list the main loop watches) and starts the watchdog;
    returns what restores the handlers before. An inherited SIG_IGN is kept: a shell that
    starts us in the background means it. Only the main thread may set handlers: a run started
    from another thread (a library user's) leaves the signals to its program."""
    saved = {}
    signalled = []

    def on(code):
        def handler(signum, frame):
            if hurry:
                os._exit(code)  # a third time: not even a last draw
            if signalled:
                # Asked twice: stop without waiting for the cancel. The loop sees it at its next
                # turn (within a tick, never in the middle of a draw: this handler draws nothing)
                # and leaves a clean screen; the watchdog ends the process should it not get there.
                hurry.append(code)
                watchdog(limits.gone_by(time.monotonic()), code)
                events.put((None, None))
                return
            signalled.append(code)
            events.put((None, ev.Signal(time.monotonic(), code)))

        return handler

    for signum, code in ((signal.SIGINT, errors.SIGINT), (signal.SIGTERM, errors.SIGTERM)):
        if threading.current_thread() is not threading.main_thread():
            break
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue
        saved[signum] = signal.signal(signum, on(code))

    def restore():
        for signum, handler in saved.items():
            signal.signal(signum, handler)

    return restore
