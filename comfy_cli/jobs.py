"""The jobs a run's workers do: each does its I/O and returns one result event.

A job tries once and says what happened; whether and when to try again is the supervisor's
rule (jobs read the clock only to stamp their results). They run on worker threads, never
touch the view and share nothing with the main loop but the queue their result goes on.
"""

import time

from comfy_cli import events as ev
from comfy_cli.client import RETRY_STATUS, Rejected, TlsError, Unsendable, worth_retrying
from comfy_cli.errors import ServerError, UsageError

MAX_DOWNLOAD = 16 << 30  # no real output is bigger; a server sending more is broken or hostile


def submit(client, workflow, client_id, prompt_id, journal=None, files=None):
    """POST one prompt; the local files it names are uploaded first (`files`: the server's
    uploads.Uploads)."""
    try:
        graph = files.graph(workflow) if files is not None else workflow.graph
    except (ServerError, UsageError) as exc:
        return _upload_failed(prompt_id, files.failed, exc)
    if journal is not None:
        journal()  # the `submit` line, before the POST leaves: a crash after sending still knows it
    try:
        reply = client.submit(graph, client_id, prompt_id)
    except Rejected as exc:
        return ev.SubmitFailed(time.monotonic(), prompt_id, ev.REFUSED, str(exc), exc.body)
    except Unsendable as exc:
        from comfy_cli.workflow import unsafe_input

        where = unsafe_input(workflow.graph)
        text = f"node {where[0]!r}: input {where[1]!r} holds NaN or Infinity, which JSON does not allow" \
            if where else str(exc)
        return ev.SubmitFailed(time.monotonic(), prompt_id, ev.LOCAL, f"{workflow.path}: {text}", None)
    except ServerError as exc:
        if isinstance(exc, TlsError) or (exc.status is not None and exc.status not in RETRY_STATUS):
            kind = ev.FATAL
        else:
            kind = ev.SENT if exc.sent else ev.NOT_SENT
        return ev.SubmitFailed(time.monotonic(), prompt_id, kind, str(exc), None)
    node_errors = reply.get("node_errors")
    number = reply.get("number")
    return ev.Accepted(time.monotonic(), prompt_id, number if isinstance(number, int) else None,
                       node_errors if isinstance(node_errors, dict) and node_errors else None)


def _upload_failed(prompt_id, path, exc):
    """An upload before the POST failed: like a POST that never left (tried again), unless no
    retry can help (the file, the credentials, a refusal)."""
    status = getattr(exc, "status", None)
    if isinstance(exc, TlsError) or status in (401, 403, 407):
        kind = ev.FATAL
    elif isinstance(exc, UsageError) or (status is not None and status not in RETRY_STATUS):
        kind = ev.LOCAL
    else:
        kind = ev.NOT_SENT
    return ev.SubmitFailed(time.monotonic(), prompt_id, kind, f"cannot upload {path}: {exc}", None)


def check_server(client):
    try:
        client.system_stats(retry=False)
    except ServerError as exc:
        return ev.ServerChecked(time.monotonic(), str(exc))
    return ev.ServerChecked(time.monotonic(), None)


def withdraw(client, ids):
    """Delete or interrupt prompts moved away from this server; which of them ran here anyway."""
    done = cancel(client, ids)
    if done.problem:  # (what it did delete counts: the retry is for the others)
        return ev.Withdrawn(time.monotonic(), done.deleted, done.interrupted, (), done.problem)
    ran = []
    try:
        for pid in ids:
            if pid not in done.deleted and pid not in done.interrupted and client.history(pid, retry=False):
                ran.append(pid)
    except ServerError as exc:
        return ev.Withdrawn(time.monotonic(), done.deleted, done.interrupted, tuple(ran), str(exc))
    return ev.Withdrawn(time.monotonic(), done.deleted, done.interrupted, tuple(ran), None)


def read_queue(client, gen):
    try:
        running, pending = client.queue(retry=False)
    except ServerError as exc:
        return ev.ReadFailed(time.monotonic(), gen, None, str(exc))
    return ev.QueueRead(time.monotonic(), gen, tuple(running), tuple(pending))


def read_history(client, gen, prompt_id):
    try:
        entry = client.history(prompt_id, retry=False)
    except ServerError as exc:
        return ev.ReadFailed(time.monotonic(), gen, prompt_id, str(exc))
    return ev.HistoryRead(time.monotonic(), gen, prompt_id, entry)


def download(client, folder, c, stop, folder_name, reuse_same=False):
    """One try; whether and when to try again is the supervisor's rule."""
    from comfy_cli.outputs import UnsafeName

    try:
        path = folder.save(c.item, lambda fh: client.download(c.item, fh, MAX_DOWNLOAD, c.until, stop), reuse_same)
        return ev.Downloaded(time.monotonic(), c.prompt_id, c.key, path, None)
    except UnsafeName as exc:
        return ev.Downloaded(time.monotonic(), c.prompt_id, c.key, None, f"not saved: {exc}")
    except OSError as exc:
        return ev.Downloaded(time.monotonic(), c.prompt_id, c.key, None,
                             f"cannot write into {folder_name}: {exc.strerror or exc}")
    except ServerError as exc:
        return ev.Downloaded(time.monotonic(), c.prompt_id, c.key, None, f"download failed: {exc}",
                             retry=worth_retrying(exc))


def cancel(client, ids):
    """One Client.cancel pass as a job: what it deleted and interrupted, even when it stopped
    part way (whether another pass follows is the supervisor's rule)."""
    deleted, interrupted, problem = set(), set(), None
    try:
        client.cancel(ids, deleted, interrupted)
    except ServerError as exc:
        problem = str(exc)
    return ev.CancelDone(time.monotonic(), tuple(sorted(deleted)), tuple(sorted(interrupted)), problem)


def reconnect(listener):
    """Drop the listener's socket (it went deaf); its loop opens a fresh one. Answers nothing."""
    listener.reconnect()


def compare(check, name, found, prompt_id):
    """Check one prompt's outputs against the expected files (decoding images is CPU work: a
    worker's, not the main loop's)."""
    from comfy_cli.expect import check_prompt

    return ev.Compared(time.monotonic(), prompt_id, tuple(check_prompt(check, name, found)))
