"""Typed events, and the parser that turns a server text frame into one.

Both sources of truth produce these: the websocket listener (from frames) and the poller
(from /history and /queue answers). The tracker consumes them and never sees raw JSON.

Every event carries `at`, the monotonic time it was received, so the tracker can record
timings without reading a clock itself. The parser is defensive: the server (or a proxy in
front of it) may send missing fields, wrong types or unknown message types; those become
None or are skipped, never an exception.
"""

import json
import math
from typing import NamedTuple, Optional


class Status(NamedTuple):
    at: float
    queue_remaining: Optional[int]
    sid: Optional[str]  # only in the first status after connecting


class Started(NamedTuple):
    at: float
    prompt_id: str
    timestamp: Optional[int]  # server epoch ms


class Cached(NamedTuple):
    at: float
    prompt_id: str
    nodes: tuple


class Executing(NamedTuple):
    at: float
    prompt_id: Optional[str]  # None on the re-send after a reconnect
    node: Optional[str]  # None means "this prompt is done"
    display_node: Optional[str]


class Progress(NamedTuple):
    at: float
    prompt_id: Optional[str]
    node: Optional[str]
    value: float
    max: float


class ProgressState(NamedTuple):
    at: float
    prompt_id: str
    finished: tuple  # the node ids it says are finished (all the tracker needs of it)


class Executed(NamedTuple):
    at: float
    prompt_id: str
    node: str
    display_node: Optional[str]
    output: Optional[dict]


class Succeeded(NamedTuple):
    at: float
    prompt_id: str
    timestamp: Optional[int]


class Failed(NamedTuple):
    at: float
    prompt_id: str
    node_id: Optional[str]
    node_type: Optional[str]
    message: str
    exception_type: Optional[str]
    traceback: tuple
    timestamp: Optional[int]


class Interrupted(NamedTuple):
    at: float
    prompt_id: str
    node_id: Optional[str]
    node_type: Optional[str]
    timestamp: Optional[int]


# Poller events: what /queue says of a prompt.
class Queued(NamedTuple):
    at: float
    prompt_id: str
    running: bool  # in queue_running (else in queue_pending)


class Vanished(NamedTuple):
    """In neither /queue nor /history: deleted by someone, or the server restarted."""

    at: float
    prompt_id: str


# Transport events: the listener's view of the socket, for the runner (not the tracker).
class Connected(NamedTuple):
    at: float
    reconnect: bool  # False for the run's first socket


class Disconnected(NamedTuple):
    at: float
    reason: str


class ListenerStopped(NamedTuple):
    at: float
    error: Optional[str]


# Results of I/O, put on the queue by the runner's workers. `at` is when the answer came.
class Accepted(NamedTuple):
    at: float
    prompt_id: str
    number: Optional[int]
    node_errors: Optional[dict]


# How a POST /prompt failed, which decides what may happen next.
SENT = "sent"  # the answer was lost: the server may have the prompt
NOT_SENT = "not_sent"  # it surely never left (refused): sending again is safe
REFUSED = "rejected"  # HTTP 400: the server's validation refused it
LOCAL = "local"  # it could not even be built (e.g. NaN in the workflow): never retried
FATAL = "fatal"  # TLS, credentials, a status no retry will fix


class SubmitFailed(NamedTuple):
    at: float
    prompt_id: str
    kind: str  # one of SENT, NOT_SENT, REFUSED, LOCAL, FATAL
    message: str
    body: Optional[dict]  # the 400 answer


class QueueRead(NamedTuple):
    at: float
    gen: int  # which round asked
    running: tuple
    pending: tuple


class HistoryRead(NamedTuple):
    at: float
    gen: Optional[int]  # the round that asked, or None for a read after the end
    prompt_id: str
    entry: Optional[dict]  # None: the server does not know it (or not yet)


class ReadFailed(NamedTuple):
    """A GET /queue or /history failed: the server is not answering (or answering junk)."""

    at: float
    gen: Optional[int]
    prompt_id: Optional[str]  # for /history
    message: str


class Compared(NamedTuple):
    """A prompt's outputs checked against the expected files (--expect)."""

    at: float
    prompt_id: str
    outcomes: tuple  # expect.Outcome, one per output and per expected file left over


class Downloaded(NamedTuple):
    at: float
    prompt_id: str
    key: tuple  # report.output_key
    path: Optional[str]  # None: not saved
    problem: Optional[str]  # why not, for the user
    retry: bool = False  # the server failed it: another try may work (the supervisor decides when)


class CancelDone(NamedTuple):
    at: float
    deleted: tuple  # prompt ids removed from the queue
    interrupted: tuple  # prompt ids interrupted while running
    problem: Optional[str]  # the server could not be asked


class ServerChecked(NamedTuple):
    """The answer to a reachability check (GET /system_stats, once, no retries)."""

    at: float
    problem: Optional[str]  # None: the server answers


class Withdrawn(NamedTuple):
    at: float
    deleted: tuple
    interrupted: tuple
    ran: tuple  # moved prompts that ran on this server anyway (in its history)
    problem: Optional[str]


class Signal(NamedTuple):
    """SIGINT or SIGTERM arrived (put on the queue by the signal handler)."""

    at: float
    code: int  # the exit code it maps to (130, 143)


class WorkerCrashed(NamedTuple):
    at: float
    error: str


TERMINAL = (Succeeded, Failed, Interrupted)


def _str(value):
    if type(value) is str:
        return value
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # node ids are strings, but be lenient with numeric ones
    return None


def _num(value):
    if type(value) is int:  # (not bool; JSON gives no other int types)
        return value
    if isinstance(value, float) and math.isfinite(value):  # JSON may carry NaN or 1e999
        return value
    return None


def _int(value):
    v = _num(value)
    return int(v) if v is not None else None


def _status(d, at):
    status = d.get("status")
    info = status.get("exec_info") if isinstance(status, dict) else None
    remaining = _int(info.get("queue_remaining")) if isinstance(info, dict) else None
    return Status(at, remaining, _str(d.get("sid")))


def _started(d, at):
    pid = _str(d.get("prompt_id"))
    return Started(at, pid, _int(d.get("timestamp"))) if pid else None


def _cached(d, at):
    pid = _str(d.get("prompt_id"))
    nodes = d.get("nodes")
    if not pid:
        return None
    ids = tuple(n for n in map(_str, nodes) if n is not None) if isinstance(nodes, list) else ()
    return Cached(at, pid, ids)


def _executing(d, at):
    node = d.get("node")
    name = _str(node)
    if name is None and node is not None:
        return None  # junk, not the done marker (that is an explicit null)
    return Executing(at, _str(d.get("prompt_id")), name, _str(d.get("display_node")))


def _progress(d, at):
    value, top = _num(d.get("value")), _num(d.get("max"))
    if value is None or top is None:
        return None
    return Progress(at, _str(d.get("prompt_id")), _str(d.get("node")), value, top)


def _progress_state(d, at):
    pid, nodes = _str(d.get("prompt_id")), d.get("nodes")
    if not pid or not isinstance(nodes, dict):
        return None
    finished = tuple(_str(info.get("display_node_id")) or node_id for node_id, info in nodes.items()
                     if type(info) is dict and info.get("state") == "finished")
    return ProgressState(at, pid, finished)


def _executed(d, at):
    pid, node = _str(d.get("prompt_id")), _str(d.get("node"))
    if not pid or not node:
        return None
    output = d.get("output")
    return Executed(at, pid, node, _str(d.get("display_node")), output if isinstance(output, dict) else None)


def _succeeded(d, at):
    pid = _str(d.get("prompt_id"))
    return Succeeded(at, pid, _int(d.get("timestamp"))) if pid else None


def _failed(d, at):
    pid = _str(d.get("prompt_id"))
    if not pid:
        return None
    tb = d.get("traceback")
    message = d.get("exception_message")
    return Failed(
        at,
        pid,
        _str(d.get("node_id")),
        _str(d.get("node_type")),
        message.strip() if isinstance(message, str) else "unknown error",
        _str(d.get("exception_type")),
        tuple(x for x in tb if isinstance(x, str)) if isinstance(tb, list) else (),
        _int(d.get("timestamp")),
    )


def _interrupted(d, at):
    pid = _str(d.get("prompt_id"))
    if not pid:
        return None
    return Interrupted(at, pid, _str(d.get("node_id")), _str(d.get("node_type")), _int(d.get("timestamp")))


PARSERS = {
    "status": _status,
    "execution_start": _started,
    "execution_cached": _cached,
    "executing": _executing,
    "progress": _progress,
    "progress_state": _progress_state,
    "executed": _executed,
    "execution_success": _succeeded,
    "execution_error": _failed,
    "execution_interrupted": _interrupted,
}


_decode = json.JSONDecoder().raw_decode  # json.loads without its whitespace checks around a frame


def parse(text, at):
    """One websocket text frame -> an event, or None for anything unknown or unusable."""
    try:
        # Frames are UTF-8 (RFC 6455); decoding first spares json its encoding detection.
        text = text.decode() if type(text) is bytes else text
        msg, end = _decode(text)
        if end != len(text) and text[end:].strip():
            return None  # something after the message
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        try:
            msg = json.loads(text)  # (leading whitespace, say)
        except (ValueError, RecursionError, TypeError):
            return None
    if type(msg) is not dict:
        return None
    kind = msg.get("type")
    parser = PARSERS.get(kind) if type(kind) is str else None
    if parser is None:
        return None
    data = msg.get("data")
    return parser(data if type(data) is dict else {}, at)


def from_message(kind, data, at):
    """A (type, data) pair, as stored in a history entry's status.messages -> an event."""
    parser = PARSERS.get(kind) if type(kind) is str else None
    if parser is None or not isinstance(data, dict):
        return None
    return parser(data, at)
