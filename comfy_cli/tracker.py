"""The state of every prompt in a run, as a pure state machine.

Theory of operation
-------------------
A `Prompt` follows one prompt from the batch to its end, and a little beyond:

    waiting --sending--> submitting --accepted--> submitted --execution_start--> running
                            |   ^                                                  |
                            |   +-- lost answer: resolved by the supervisor        |
                            +--> rejected (HTTP 400, or refused before sending)    |
    running --execution_success--> success | --execution_error--> failed | --execution_interrupted--> interrupted
    any open state --> lost, cancelled, timeout, error, detached: decided by the supervisor

`submitting` covers a POST in flight and a POST whose answer was lost: the server may or
may not have the prompt, so no "lost" check applies to it. Any event for the prompt from
the server proves the server has it and moves it on.

The end is not the last phase. After it, outputs missed in a gap may still come (from
/history), and the supervisor may still read /history and download files. The prompt is
`settled` once all that is done and its end was reported; only then is it over.

Events come from the websocket listener or from the poller (/history, /queue: `Queued`,
`Vanished` and a finished prompt's replayed messages); both
produce the same typed events (see events.py), so the tracker cannot tell them apart and
does not need to. The tracker does no I/O, starts no threads and reads no clock: every
time it records comes from an event's `at`, or from an argument.

The real server is not tidy, and the rules below come from its recordings:
- duplicates (`progress_state` repeats, two `status` per enqueue) change nothing twice;
- events for other prompts are ignored (routing is by prompt_id, in `Board`);
- the first terminal event wins; after it only `executed` is still taken, because outputs
  missed during a socket gap come back from /history after the end; once settled (reported),
  nothing is taken: what was reported stays what the summary says;
- `executing {node: null}` can come hundreds of ms after the terminal event, so the end
  never waits for it; if it arrives first (we missed the terminal event), the prompt is
  marked `needs_history` (a visible change) and the runner asks /history for the outcome;
- after a reconnect the server re-sends `executing {node}` without a prompt_id; `Board`
  gives it to the prompt that is running;
- `execution_error` with exception_type ExecutionBlocked is a warning: execution goes on;
- cached nodes never get `executing`; they count as done, so a bar can reach 100%.

How far a prompt is (`fill`, 0..1) is the one figure bars, lines and --events show: nodes done
(cached ones included) plus the running node's step fraction, over the prompt's nodes (`share`).
It only moves forward (a node that starts its steps again, a `progress_state` that marks the
running node finished before its last step, never pull it back), is 1 only on success, and stays
where it was on any other end.

Per-node timings (`spans`) are the client's view: a node starts when its `executing` (or its
first `progress`) is received and is done when the next node's is, its `executed` or a
`progress_state` saying it finished, or the prompt's end, whichever comes first. A cached node
takes no time. Nodes known only from /history (no messages seen) have no span.
"""

import math

from comfy_cli import events as ev

WAITING = "waiting"  # in the batch, not sent yet
SUBMITTING = "submitting"  # POST /prompt in flight, or its answer lost and not yet resolved
SUBMITTED = "submitted"  # the server has it
RUNNING = "running"
SUCCESS = "success"
FAILED = "failed"
INTERRUPTED = "interrupted"
REJECTED = "rejected"
LOST = "lost"
CANCELLED = "cancelled"
TIMEOUT = "timeout"
ERROR = "error"  # the server could not be used for this prompt (e.g. submission failed)
DETACHED = "detached"  # we stopped following it and left it running on the server
MISMATCH = "mismatch"  # it succeeded, but its outputs differ from the expected files (--expect)

BEFORE_RUN = frozenset({WAITING, SUBMITTING, SUBMITTED})
SEEN_ON_SERVER = frozenset({SUBMITTED, RUNNING, SUCCESS, FAILED, INTERRUPTED})  # the server said it has it
ENDED = frozenset({SUCCESS, FAILED, INTERRUPTED, REJECTED, LOST, CANCELLED, TIMEOUT, ERROR, DETACHED, MISMATCH})
SERVER_ENDS = frozenset({SUCCESS, FAILED, INTERRUPTED})  # ends the server told us about

ALMOST = 0.99  # the most an unfinished prompt's fill reaches: 100% means it succeeded


def step_share(step):
    """(value, max) of a node's steps as a fraction 0..1, or None when it cannot be one (max <= 0,
    not a number, infinite)."""
    try:
        value, top = float(step[0]), float(step[1])
    except (OverflowError, TypeError, ValueError, IndexError):
        return None
    if not (top > 0 and math.isfinite(top) and math.isfinite(value)):
        return None
    return min(max(value / top, 0.0), 1.0)


def share(done, total, running_share=None):
    """How far a prompt is: `done` of its `total` nodes, plus the running node's step fraction
    (None: no steps known), below 1 (ALMOST at most) until it has ended."""
    if total <= 0:
        return 0.0
    return min(ALMOST, (done + (running_share or 0.0)) / total)


class Prompt:
    def __init__(self, prompt_id, workflow, submitted_at=None, status=SUBMITTED, error=None):
        """`error`: for one that ended before (taken up from a journal), why it did not succeed."""
        self.prompt_id = prompt_id
        self.workflow = workflow
        self.status = status
        self.number = None  # the server's priority number, from the /prompt reply
        self.submitted_at = submitted_at
        self.started_at = None
        self.ended_at = None
        self.server_start_ms = None
        self.server_end_ms = None
        self.cached = set()
        self.ran = set()  # nodes the server really executed
        self.done = set()  # nodes finished, cached ones included
        # node id -> [first seen running, seen done or None], in the order they started; the
        # times are events' `at` (when the client received them): the client's view of the run.
        self.spans = {}
        self.node = None  # node running now
        self.node_at = None  # when it started (the `executing` event's time)
        self.step = None  # (value, max) of that node's progress
        self.fill = 0.0  # how far the whole prompt is, 0..1: only moves forward (see the module doc)
        self.outputs = {}  # node id -> UI output dict, in arrival order
        self.error = error  # dict describing why it did not succeed
        self.warnings = []
        self.checked = None  # --expect: how its outputs compared (expect.Outcome list), once they have
        self.needs_history = False  # our picture may be incomplete: ask /history
        self.server_done = False  # `executing {node: null}` came before any terminal event
        self.history_done = False  # its /history entry was replayed after the end
        self.settled = False  # ended, outputs complete, end reported: nothing more to do
        self.cancelled_earlier = None  # what an earlier `comfy-cli cancel` did to it, if it did (`wait`)
        self.attempt = 1  # which try this is (--retry)
        self.item = None  # its place in the batch (the dispatcher's); attempts of one item share it
        self.server = None  # the server it was sent to
        self.on_end = None  # set by Board: keeps its set of open prompts without rescans

    # ---- queries -------------------------------------------------------------------
    @property
    def ended(self):
        return self.status in ENDED

    @property
    def total(self):
        return len(self.workflow.graph)

    @property
    def done_count(self):
        return len(self.done & self.workflow.graph.keys())

    def figure(self):
        """How far the prompt is now, from its nodes and steps alone (`fill` is this, kept from
        going back)."""
        graph = self.workflow.graph
        node = self.node
        running = None
        if node is not None and node in graph and node not in self.done and self.step is not None:
            running = step_share(self.step)
        return share(self.done_count, self.total, running)

    @property
    def on_server(self):
        """The server has (or may have) it: only such a prompt can be cancelled there."""
        return self.status in (SUBMITTING, SUBMITTED, RUNNING)

    @property
    def wants_history(self):
        """Ended by the server, but our picture (outputs, outcome) may be incomplete."""
        return (self.status in SERVER_ENDS and not self.history_done
                and (self.needs_history or (self.status == SUCCESS and not self.outputs)))

    # ---- inputs from the supervisor ---------------------------------------------------
    def sending(self, at):
        """POST /prompt is about to leave (again, after a retry)."""
        if self.status == WAITING:
            self.status = SUBMITTING
            self.submitted_at = at

    def accepted(self, number, node_errors=None):
        if self.status in (WAITING, SUBMITTING):
            self.status = SUBMITTED
        if number is not None:
            self.number = number
        if node_errors:
            self.warnings.append({"type": "node_errors", "node_errors": node_errors})

    def reject(self, at, error):
        self._end(REJECTED, at, error)

    def refused_late(self, at, error):
        """We had stopped waiting (cancelled, timed out, detached) while its POST was out, and
        the server then refused it: it never had the prompt, whatever we had assumed."""
        self._end(REJECTED, at, error)

    def give_up(self, status, at, message):
        """End for a reason the server never told us: lost, cancelled, timeout, error."""
        if not self.ended:
            self._end(status, at, {"type": status, "message": message})

    def explain(self, more):
        """Add to why it ended what became of it on the server after we gave up on it
        (removed, interrupted, left running)."""
        if self.error is not None:
            self.error["message"] += more

    def gap(self):
        """The socket was down while this prompt was open: events may have been missed."""
        if not self.ended:
            self.needs_history = True

    # ---- events ---------------------------------------------------------------------
    def history_read(self):
        """The supervisor has replayed this prompt's /history entry: the picture is complete."""
        self.needs_history = False
        self.history_done = True

    def compared(self, outcomes):
        """Its outputs were compared with the expected files (--expect): a success whose outputs
        differ becomes a mismatch, with each difference in its error."""
        self.checked = list(outcomes)
        failing = [o for o in self.checked if o.failed]
        if failing and self.status == SUCCESS:
            self.status = MISMATCH
            self.error = {"type": MISMATCH,
                          "message": f"{len(failing)} of {len(self.checked)} outputs differ from the expected files",
                          "differences": [o.line() for o in failing]}

    def settle(self):
        self.settled = True

    def handle(self, event):
        """Apply one event; return True if anything visible changed."""
        if self.ended and (self.settled or type(event) is not ev.Executed):
            return False
        method = _HANDLERS.get(type(event))
        if method is None or not method(self, event):
            return False
        if not self.ended:
            self.fill = max(self.fill, self.figure())
        return True

    def _start(self, e):
        if self.status not in BEFORE_RUN:
            return False
        self.status = RUNNING
        self.started_at = e.at
        self.server_start_ms = e.timestamp
        return True

    def _running(self, at):
        if self.status in BEFORE_RUN:
            self.status = RUNNING
            self.started_at = at
            # We are seeing the middle of a run; what came before was missed.
            self.needs_history = True

    def _cached(self, e):
        self._start_silently(e.at)
        new = set(e.nodes) - self.cached
        self.cached |= new
        self.done |= new
        for node in e.nodes:
            if node in new:
                self.spans.setdefault(node, [e.at, e.at])
        return bool(new)

    def _switch(self, node, at):
        """`node` runs now: the one before it is done."""
        if self.node is not None:
            self.done.add(self.node)
            self._close(self.node, at)
        self.node = node
        self.node_at = at
        self.ran.add(node)
        span = self.spans.get(node)
        if span is None:
            self.spans[node] = [at, None]
        else:
            span[1] = None  # (runs again: its span reaches to its last end)

    def _close(self, node, at):
        span = self.spans.get(node)
        if span is not None and span[1] is None:
            span[1] = at

    def _start_silently(self, at):
        # execution_cached comes right after execution_start: seeing it means the prompt
        # started, and nothing of note was missed even if the start itself was.
        if self.status in BEFORE_RUN:
            self.status = RUNNING
            self.started_at = at

    def _executing(self, e):
        if e.node is None:
            # The done marker. Before any terminal event it means we missed that event.
            if self.server_done:
                return False
            self.server_done = self.needs_history = True
            return True
        self._running(e.at)
        node = e.display_node or e.node
        if node == self.node:
            return False
        self._switch(node, e.at)
        self.step = None
        return True

    def _progress(self, e):
        self._running(e.at)
        node = e.node or self.node
        if node != self.node and node is not None:
            self._switch(node, e.at)
        step = (e.value, e.max)
        if step == self.step:
            return False
        self.step = step
        return True

    def _progress_state(self, e):
        self._running(e.at)
        before = len(self.done)
        for node in e.finished:
            self.done.add(node)
            self._close(node, e.at)
            if node not in self.cached:
                self.ran.add(node)
        return len(self.done) != before

    def _executed(self, e):
        node = e.display_node or e.node
        if not self.ended:
            self.done.add(node)
            self._close(node, e.at)
            if node not in self.cached:
                self.ran.add(node)
        if e.output is not None and self.outputs.get(node) != e.output:
            self.outputs[node] = e.output
            return True
        return False

    def _succeeded(self, e):
        self.server_end_ms = e.timestamp
        graph = self.workflow.graph.keys()
        if not self.ran - self.outputs.keys():
            # We saw no node run (the picture came from /history, which lists only the cached
            # nodes and the outputs): every node the server did not take from its cache ran.
            self.ran |= graph - self.cached
        self.done |= graph
        self._end(SUCCESS, e.at, None)
        return True

    def _failed(self, e):
        error = {
            "type": "execution_error",
            "message": e.message,
            "node_id": e.node_id,
            "node_type": e.node_type,
            "exception_type": e.exception_type,
            "traceback": list(e.traceback),
        }
        if e.exception_type == "ExecutionBlocked":
            self.warnings.append(error)  # the server goes on after a blocked node
            return True
        self.server_end_ms = e.timestamp
        self._end(FAILED, e.at, error)
        return True

    def _interrupted(self, e):
        self.server_end_ms = e.timestamp
        error = {"type": "interrupted", "message": "interrupted on the server", "node_id": e.node_id,
                 "node_type": e.node_type}
        self._end(INTERRUPTED, e.at, error)
        return True

    def _queued(self, e):
        if self.status in (WAITING, SUBMITTING):
            self.status = SUBMITTED
            if e.running:
                self._running(e.at)
            return True
        if e.running and self.status == SUBMITTED:
            self._running(e.at)
            return True
        return False

    def _vanished(self, e):
        if self.cancelled_earlier:  # `comfy-cli cancel` removed it: gone, as it should be
            self._end(CANCELLED, e.at, {"type": CANCELLED, "earlier": True,
                                        "message": f"cancelled earlier with comfy-cli cancel ({self.cancelled_earlier})"})
            return True
        self._end(LOST, e.at, {"type": LOST, "message": "lost: the prompt is in neither the server's queue nor "
                                                        "its history (deleted, or the server restarted)"})
        return True

    def _end(self, status, at, error):
        if self.node is not None and status == SUCCESS:
            self.done.add(self.node)
        if self.node is not None and status in SERVER_ENDS:
            self._close(self.node, at)  # (given up on: when it ended is not known)
        self.status = status
        self.ended_at = at
        self.error = error
        if status == SUCCESS:
            self.fill = 1.0  # any other end keeps the fill where it was
        self.node = None
        self.node_at = None
        self.step = None
        if self.on_end is not None:
            self.on_end(self)


_HANDLERS = {
    ev.Started: Prompt._start,
    ev.Cached: Prompt._cached,
    ev.Executing: Prompt._executing,
    ev.Progress: Prompt._progress,
    ev.ProgressState: Prompt._progress_state,
    ev.Executed: Prompt._executed,
    ev.Succeeded: Prompt._succeeded,
    ev.Failed: Prompt._failed,
    ev.Interrupted: Prompt._interrupted,
    ev.Queued: Prompt._queued,
    ev.Vanished: Prompt._vanished,
}


class Board:
    """All prompts of one run, and the routing of events to them."""

    def __init__(self):
        self.prompts = {}  # prompt_id -> Prompt, in submission order
        self._open = {}  # the prompts not ended yet (a dict keeps submission order)
        self.queue_remaining = None
        self.running_id = None  # the prompt the server is executing, as far as we know

    def add(self, prompt):
        self.prompts[prompt.prompt_id] = prompt
        if not prompt.ended:
            self._open[prompt.prompt_id] = prompt
            prompt.on_end = self._closed
        return prompt

    def _closed(self, prompt):
        self._open.pop(prompt.prompt_id, None)

    def feed(self, event):
        """Route one event; return the Prompt it changed, or None."""
        if type(event) is ev.Status:
            self.queue_remaining = event.queue_remaining
            return None
        pid = getattr(event, "prompt_id", None)
        if pid is None:
            # The reconnect re-send: `executing {node}` with no prompt_id belongs to the
            # prompt that is running, if it is one of ours.
            pid = self.running_id
            if pid is None or type(event) is not ev.Executing:
                return None
            event = event._replace(prompt_id=pid)
        prompt = self.prompts.get(pid)
        if prompt is None:
            return None
        if prompt.handle(event):
            self._note_running(prompt)
            return prompt
        self._note_running(prompt)
        return None

    def running_from_queue(self, running_ids):
        """What /queue says is running now (the poller's view), for prompt-less re-sends."""
        mine = [pid for pid in running_ids if pid in self.prompts]
        self.running_id = mine[0] if mine else None

    def _note_running(self, prompt):
        if prompt.status == RUNNING:
            self.running_id = prompt.prompt_id
        elif self.running_id == prompt.prompt_id:
            self.running_id = None

    @property
    def open(self):
        return list(self._open.values())

    @property
    def open_prompts(self):
        """A live view of the prompts not ended yet (do not end them while iterating)."""
        return self._open.values()

    @property
    def all_ended(self):
        return not self._open
