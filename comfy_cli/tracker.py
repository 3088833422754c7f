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

Each prompt's nodes (cached, ran, done, when each ran, the one running and its steps) and how
far it is (`fill`) are kept in its `Progress` (progress.py, which says how `fill` and the node
timings are reckoned): the tracker hands it each node's news and tells it how the prompt ended.
"""

from comfy_cli import events as ev
from comfy_cli.progress import Progress

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


def ended_before(prompt_id, workflow, status, error=None, outputs=None, number=None, times=(None, None, None)):
    """A prompt that ended before this process began (a --journal's end line, a shard's manifest
    line), as it was recorded: settled, so nothing the server says now changes it. `times`:
    (submitted, started, ended)."""
    prompt = Prompt(prompt_id, workflow, times[0], status=status, error=error)
    prompt.started_at, prompt.ended_at = times[1], times[2]
    prompt.number = number
    if isinstance(outputs, dict):
        prompt.outputs = outputs
    prompt.settle()
    return prompt


class Prompt:
    def __init__(self, prompt_id, workflow, submitted_at=None, status=SUBMITTED, error=None, cancelled_earlier=None):
        """`error`: for one that ended before (taken up from a journal), why it did not succeed;
        `cancelled_earlier`: for one `wait` follows, what an earlier `comfy-cli cancel` did to it."""
        self.prompt_id = prompt_id
        self.workflow = workflow
        self.status = status
        self.number = None  # the server's priority number, from the /prompt reply
        self.submitted_at = submitted_at
        self.started_at = None
        self.ended_at = None
        self.server_start_ms = None
        self.server_end_ms = None
        self.progress = Progress(workflow)  # its nodes: cached, ran, done, timings, the running one, fill
        self.outputs = {}  # node id -> UI output dict, in arrival order
        self.error = error  # dict describing why it did not succeed
        self.warnings = []
        self.checked = None  # --expect: how its outputs compared (expect.Outcome list), once they have
        self.needs_history = False  # our picture may be incomplete: ask /history
        self.server_done = False  # `executing {node: null}` came before any terminal event
        self.history_done = False  # its /history entry was replayed after the end
        self.settled = False  # ended, outputs complete, end reported: nothing more to do
        self.cancelled_earlier = cancelled_earlier
        self.on_end = None  # set by Board: keeps its set of open prompts without rescans

    # ---- queries -------------------------------------------------------------------
    @property
    def ended(self):
        return self.status in ENDED

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
        """The server refused it (or it was refused before sending): it never had the prompt,
        whatever we had assumed, even if we had stopped waiting for it meanwhile."""
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

    def warn(self, kind, message):
        """Something the user should hear of that does not change how it ended (a file not
        saved, a refusal of a prompt the server ran, a run twice, ...)."""
        self.warnings.append({"type": kind, "message": message})

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
        if self.status in ENDED and (self.settled or type(event) is not ev.Executed):
            return False
        method = _HANDLERS.get(type(event))
        if method is None or not method(self, event):
            return False
        if self.status not in ENDED:  # (`ended`, spelt out: this runs once per message)
            self.progress.advance()
        return True

    def _start(self, e):
        if self.status not in BEFORE_RUN:
            return False
        self.status = RUNNING
        self.started_at = e.at
        self.server_start_ms = e.timestamp
        return True

    def _running(self, at, missed=True):
        """News, before the run, that the prompt runs (callers check it is before the run: the
        check is on the per-message path). Seen first in the middle of a run, what came before
        was missed (`missed`); but execution_cached comes right after execution_start, so seeing
        it means nothing of note was missed even if the start itself was."""
        self.status = RUNNING
        self.started_at = at
        if missed:
            self.needs_history = True

    def _node(self, e):
        """Cached, progress, progress_state, executing {node}: the Progress keeps them."""
        kind = type(e)
        if kind is ev.Executing and e.node is None:
            # The done marker. Before any terminal event it means we missed that event.
            if self.server_done:
                return False
            self.server_done = self.needs_history = True
            return True
        if self.status in BEFORE_RUN:
            self._running(e.at, missed=kind is not ev.Cached)
        return _NODE_NEWS[kind](self.progress, e)

    def _executed(self, e):
        node = e.display_node or e.node
        if not self.ended:
            self.progress.executed(node, e.at)
        if e.output is not None and self.outputs.get(node) != e.output:
            self.outputs[node] = e.output
            return True
        return False

    def _succeeded(self, e):
        self.server_end_ms = e.timestamp
        self.progress.succeeded(self.outputs)
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
        self.progress.stop(at, status == SUCCESS, status in SERVER_ENDS)
        self.status = status
        self.ended_at = at
        self.error = error
        if self.on_end is not None:
            self.on_end(self)


# Event type -> what takes it: the prompt's phase here, its nodes in its Progress.
_HANDLERS = {
    ev.Started: Prompt._start,
    ev.Cached: Prompt._node,
    ev.Executing: Prompt._node,
    ev.Progress: Prompt._node,
    ev.ProgressState: Prompt._node,
    ev.Executed: Prompt._executed,
    ev.Succeeded: Prompt._succeeded,
    ev.Failed: Prompt._failed,
    ev.Interrupted: Prompt._interrupted,
    ev.Queued: Prompt._queued,
    ev.Vanished: Prompt._vanished,
}
_NODE_NEWS = {
    ev.Cached: Progress.from_cache,
    ev.Executing: Progress.executing,
    ev.Progress: Progress.stepped,
    ev.ProgressState: Progress.finished,
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
        changed = prompt.handle(event)
        # Which of ours runs now (for the prompt-less re-sends), kept here: this runs per message.
        if prompt.status == RUNNING:
            self.running_id = pid
        elif self.running_id == pid:
            self.running_id = None
        return prompt if changed else None

    def running_from_queue(self, running_ids):
        """What /queue says is running now (the poller's view), for prompt-less re-sends."""
        mine = [pid for pid in running_ids if pid in self.prompts]
        self.running_id = mine[0] if mine else None

    @property
    def open_prompts(self):
        """A live view of the prompts not ended yet (do not end them while iterating)."""
        return self._open.values()
