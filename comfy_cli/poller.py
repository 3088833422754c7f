"""The poller: turn /history and /queue answers into the same events the websocket gives.

A history entry holds `status.messages` (execution_start, execution_cached and the terminal
message, each with its data) and `outputs` (the UI output of every output node). Replaying
them in that order through the tracker gives the same end state as the socket would have.
"""

from comfy_cli import events as ev


def history_events(prompt_id, entry, at):
    """Events for one finished prompt, from its /history entry (start, cached, outputs, end)."""
    status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
    messages = status.get("messages") if isinstance(status.get("messages"), list) else []
    parsed = []
    for item in messages:
        if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str):
            event = ev.from_message(item[0], item[1], at)
            if event is not None and getattr(event, "prompt_id", None) == prompt_id:
                parsed.append(event)
    head = [e for e in parsed if not isinstance(e, ev.TERMINAL)]
    ends = [e for e in parsed if isinstance(e, ev.TERMINAL)]
    out = head
    outputs = entry.get("outputs")
    if isinstance(outputs, dict):
        for node, output in outputs.items():
            if isinstance(output, dict):
                out.append(ev.Executed(at, prompt_id, str(node), None, output))
    if ends:
        # An ExecutionBlocked error is not the end; the real end is the last message.
        out.extend(ends)
    elif status.get("completed") is True or status.get("status_str") == "success":
        out.append(ev.Succeeded(at, prompt_id, None))
    elif status.get("status_str") == "error":
        out.append(ev.Failed(at, prompt_id, None, None, "the server reports an error (no details in history)",
                             None, (), None))
    return out


class Poller:
    """One reconciliation round over HTTP: a GET /queue, then /history only for our open
    prompts that have left the queue, so the request rate does not grow with the number of
    prompts waiting. Used while the socket is down, after every (re)connect, and when a
    quiet socket needs checking."""

    MISSES_FOR_LOST = 2  # a prompt must be missing from both lists twice before it is lost

    def __init__(self, client):
        self.client = client
        self.missing = {}  # prompt_id -> rounds in a row it was nowhere

    def round(self, open_prompts, at):
        """Return (events, running prompt ids). Raises ServerError if /queue cannot be read."""
        running, pending = self.client.queue(retry=False)
        running, pending = set(running), set(pending)
        open_ids = {p.prompt_id for p in open_prompts}
        self.missing = {pid: n for pid, n in self.missing.items() if pid in open_ids}
        out = []
        for prompt in open_prompts:
            pid = prompt.prompt_id
            if pid in running or pid in pending:
                self.missing.pop(pid, None)
                out.append(ev.Queued(at, pid, pid in running))
                continue
            entry = self.client.history(pid, retry=False)
            if entry is not None:
                self.missing.pop(pid, None)
                out.extend(history_events(pid, entry, at))
                continue
            misses = self.missing[pid] = self.missing.get(pid, 0) + 1
            if misses >= self.MISSES_FOR_LOST:
                out.append(ev.Vanished(at, pid))
        return out, running
