"""--events: one JSON object per line on stdout, as things happen; the last line is the summary.

Each line has `event`, `t` (seconds since the run started) and, for prompt events,
`prompt_id` and `name`; `started`, `cached`, `node`, `progress` and `finished` also carry `fill`,
how far the whole prompt is (0..1, the bars' figure). Progress is throttled to about 10 lines a
second per prompt, and a step already said is never said again.
"""

import json
import time

from comfy_cli import tracker as tr
from comfy_cli.report import node_timings

PROGRESS_GAP = 0.1


class EventStream:
    def __init__(self, out, started):
        self.out = out
        self.started = started
        self._seen = {}  # prompt_id -> (status, node, cached count)
        self._progress_at = {}  # prompt_id -> time of the last progress line
        self._said = {}  # prompt_id -> (node, value, max) of its last progress line

    def emit(self, kind, prompt=None, **fields):
        line = {"event": kind, "t": round(time.monotonic() - self.started, 4)}
        if prompt is not None:
            line["prompt_id"] = prompt.prompt_id
            line["name"] = prompt.workflow.name
        line.update(fields)
        self.out.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.out.flush()

    def added(self, prompt, attempt=None):
        """`attempt`: its dispatch.Attempt (None: a first attempt, on no server yet)."""
        self._seen[prompt.prompt_id] = (prompt.status, None, 0)
        self.emit("submitted", prompt, workflow=prompt.workflow.path, server=attempt.server if attempt else None,
                  attempt=attempt.number if attempt else 1)

    def update(self, prompt):
        """Everything but the end, which `finished` reports once its outputs are known."""
        if prompt.ended:
            return
        pid = prompt.prompt_id
        status, node, cached = self._seen.get(pid, (None, None, 0))
        p = prompt.progress
        fill = round(p.fill, 4)
        if status in tr.BEFORE_RUN and prompt.status == tr.RUNNING:
            self.emit("started", prompt, fill=fill)
        if len(p.cached) > cached:
            self.emit("cached", prompt, nodes=sorted(p.cached), fill=fill)
        if p.node is not None and p.node != node:
            self.emit("node", prompt, node=p.node, title=prompt.workflow.title(p.node), fill=fill)
        elif p.step is not None:
            now = time.monotonic()
            value, top = p.step
            said = (p.node, value, top)
            if said != self._said.get(pid) and (now - self._progress_at.get(pid, 0.0) >= PROGRESS_GAP
                                                or value >= top):
                self._progress_at[pid] = now
                self._said[pid] = said
                self.emit("progress", prompt, node=p.node, value=value, max=top, fill=fill)
        self._seen[pid] = (prompt.status, p.node, len(p.cached))

    def output(self, prompt, node, item, url, path=None):
        self.emit("output", prompt, node=node, filename=item.get("filename"), subfolder=item.get("subfolder", ""),
                  type=item.get("type", "output"), url=url, path=path)

    def finished(self, prompt):
        extra = {"expected": [o.as_dict() for o in prompt.checked]} if prompt.checked is not None else {}
        self.emit("finished", prompt, status=prompt.status, error=prompt.error, fill=round(prompt.progress.fill, 4),
                  node_timings=node_timings(prompt), **extra)

    def transport(self, text, polling):
        self.emit("transport", message=text, polling=polling)

    def summary(self, doc):
        self.emit("summary", **doc)
