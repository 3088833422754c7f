"""/history answers turned into the same events the websocket gives.

A history entry holds `status.messages` (execution_start, execution_cached and the terminal
message, each with its data) and `outputs` (the UI output of every output node). Replaying
them in that order through the tracker gives the same end state as the socket would have.
When to read /queue and /history is the supervisor's business (supervisor.py).
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
