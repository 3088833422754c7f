"""Queue, worker, output cache and execution of prompts.

One asyncio task (the worker) takes prompts from a min-heap one at a time and
runs their nodes, emitting the websocket events in the real server's order
(PROTOCOL 4.1).  Everything here runs on the simulator's event-loop thread;
the few values read from other threads (``current``, history ids) are simple
attribute swaps or guarded by ``history_lock``.
"""

import asyncio
import heapq
import inspect
import itertools
import logging
import threading
import time
import traceback
from typing import Dict, List, Optional

from .images import PREVIEW_JPEG
from .nodes import NODES
from .plan import Plan, signatures
from .validation import is_link

log = logging.getLogger("comfy_cli.sim")

MAX_HISTORY = 10000
SECRET_KEYS = ("api_key_comfy_org", "auth_token_comfy_org")  # never stored in history


def now_ms() -> int:
    return int(time.time() * 1000)


class Interrupted(Exception):
    """Raised at an interrupt check once /interrupt has set the flag."""


class CacheEntry:
    __slots__ = ("outputs", "ui", "meta")

    def __init__(self, outputs, ui, meta):
        self.outputs, self.ui, self.meta = outputs, ui, meta


class Progress:
    """The per-prompt progress_state map; every change sends the whole map."""

    def __init__(self, bus, prompt_id, sid):
        self.bus, self.prompt_id, self.sid = bus, prompt_id, sid
        self.nodes: Dict[str, dict] = {}

    def _entry(self, nid):
        entry = self.nodes.get(nid)
        if entry is None:
            entry = self.nodes[nid] = {
                "value": 0, "max": 1, "state": "running", "node_id": nid, "prompt_id": self.prompt_id,
                "display_node_id": nid, "parent_node_id": None, "real_node_id": nid}
        return entry

    def _send(self):
        self.bus.send("progress_state", {"prompt_id": self.prompt_id, "nodes": self.nodes}, self.sid)

    def start(self, nid):
        self._entry(nid).update(value=0.0, max=1.0, state="running")
        self._send()

    def update(self, nid, value, maximum):
        entry = self._entry(nid)
        entry["value"], entry["max"] = value, maximum
        self._send()

    def finish(self, nid):
        entry = self._entry(nid)
        entry["state"], entry["value"] = "finished", entry["max"]
        self._send()


class Run:
    """State of the prompt being executed."""

    def __init__(self, item):
        self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs = item
        self.sid = self.extra_data.get("client_id")
        self.sigs: Dict[str, tuple] = {}
        self.executed: List[str] = []
        self.progress: Optional[Progress] = None


class NodeContext:
    """What a running node may do: wait, report progress, send text frames."""

    def __init__(self, engine, run: Run, node_id: str):
        self.engine, self.run, self.node_id = engine, run, node_id
        self.storage = engine.storage
        self.prompt, self.extra_data = run.prompt, run.extra_data

    async def sleep(self, seconds):
        seconds = (seconds if seconds and seconds > 0 else 0) * self.engine.slow
        await asyncio.sleep(seconds)

    async def progress(self, value, total, preview=False):
        # Same order as the real progress hook: interrupt check, progress_state
        # (+ type-4 preview), progress, then the legacy type-1 preview.
        engine, run, nid = self.engine, self.run, self.node_id
        engine.check_interrupt()
        bus, sid = engine.bus, run.sid
        with_meta = preview and bus.supports(sid, "supports_preview_metadata")
        run.progress.update(nid, value, total)
        if with_meta:
            bus.send_preview(PREVIEW_JPEG, {
                "node_id": nid, "prompt_id": run.prompt_id, "display_node_id": nid,
                "parent_node_id": None, "real_node_id": nid, "image_type": "image/jpeg"}, sid, True)
        bus.send("progress", {"value": value, "max": total, "prompt_id": run.prompt_id, "node": nid}, sid)
        if preview and not with_meta:
            bus.send_preview(PREVIEW_JPEG, {}, sid, False)

    def send_text(self, text):
        # Core callers of send_progress_text pass no sid: always a broadcast.
        self.engine.bus.send_text(self.node_id, text, None)


def _format_value(value):
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return str(value)


class Engine:
    def __init__(self, bus, storage, faults, notify=lambda: None):
        self.bus, self.storage, self.faults, self.notify = bus, storage, faults, notify
        self.counter = 0                # next priority number for POST /prompt
        self._seq = itertools.count()   # heap tie-breaker: equal numbers run FIFO
        self.pending: list = []         # heap of (number, seq, item)
        self.running: Optional[list] = None
        self.history: Dict[str, dict] = {}
        self.history_lock = threading.Lock()
        self.cache: Dict[tuple, CacheEntry] = {}
        self.interrupted = False
        self.slow = 1.0  # multiplies every node's sleep
        self.prompt_cost = 0.0  # seconds added to every prompt
        self.client_id: Optional[str] = None    # submitter of the current/last prompt
        self.last_node_id: Optional[str] = None  # node running now (for reconnects)
        self.success = True  # like the real executor, never reset between prompts
        self.current = None  # (prompt_id, node_id|None) snapshot for other threads
        self.script = None  # a replay.Script: every prompt plays that recording instead of running
        self._free_pending = False
        self._wake = asyncio.Event()

    # --- queue ------------------------------------------------------------------
    def remaining(self) -> int:
        return len(self.pending) + (1 if self.running is not None else 0)

    def queue_info(self) -> dict:
        return {"exec_info": {"queue_remaining": self.remaining()}}

    def broadcast_status(self):
        self.bus.send("status", {"status": self.queue_info()}, None)

    def enqueue(self, item: list):
        heapq.heappush(self.pending, (item[0], next(self._seq), item))
        self.broadcast_status()
        self._wake.set()
        self.notify()

    def holds(self, prompt_id) -> bool:
        """Is the prompt queued, running or in the history?"""
        if self.running is not None and self.running[1] == prompt_id:
            return True
        if any(entry[2][1] == prompt_id for entry in self.pending):
            return True
        with self.history_lock:
            return prompt_id in self.history

    def pending_items(self) -> list:
        return [entry[2] for entry in self.pending]

    def delete_pending(self, prompt_id) -> bool:
        for i, entry in enumerate(self.pending):
            if entry[2][1] == prompt_id:
                if len(self.pending) == 1:
                    self.clear_pending()  # the real server then reports twice
                else:
                    self.pending.pop(i)
                    heapq.heapify(self.pending)
                self.broadcast_status()
                self.notify()
                return True
        return False

    def clear_pending(self):
        self.pending = []
        self.broadcast_status()
        self.notify()

    def interrupt(self, prompt_id=None):
        if prompt_id:
            if self.running is not None and self.running[1] == prompt_id:
                self.interrupted = True
        else:
            self.interrupted = True  # lost if nothing runs: reset at each prompt start

    def check_interrupt(self):
        if self.interrupted:
            self.interrupted = False
            raise Interrupted()

    def free(self, free_memory: bool):
        if free_memory:
            if self.running is None:
                self.cache.clear()
            else:
                self._free_pending = True

    # --- history ---------------------------------------------------------------
    def get_history(self, max_items=None, offset=-1) -> dict:
        with self.history_lock:
            out, keys = {}, list(self.history)
            if offset < 0 and max_items is not None:
                offset = len(keys) - max_items
            for i, key in enumerate(keys):
                if i >= offset:
                    out[key] = self.history[key]
                    if max_items is not None and len(out) >= max_items:
                        break
            return out

    def history_entry(self, prompt_id) -> dict:
        with self.history_lock:
            entry = self.history.get(prompt_id)
            return {prompt_id: entry} if entry is not None else {}

    def delete_history(self, prompt_id):
        with self.history_lock:
            self.history.pop(prompt_id, None)

    def clear_history(self):
        with self.history_lock:
            self.history.clear()

    # --- worker -------------------------------------------------------------------
    async def worker(self):
        while True:
            while not self.pending:
                self._wake.clear()
                await self._wake.wait()
            item = heapq.heappop(self.pending)[2]
            self.running = item
            self.current = (item[1], None)
            self.broadcast_status()
            self.notify()
            try:
                await self._execute(Run(item))
            except asyncio.CancelledError:
                raise
            except Exception:  # a simulator bug must not kill the worker
                log.exception("simulator failed running prompt %s", item[1])
                self.running, self.current = None, None
                self.broadcast_status()
                self.notify()

    def _message(self, run, messages, event, data, broadcast=False):
        data["timestamp"] = now_ms()
        messages.append([event, data])
        if run.sid is not None or broadcast:
            self.bus.send(event, data, run.sid)

    async def _execute(self, run: Run):
        pid, messages = run.prompt_id, []
        self.interrupted = False
        self.client_id = run.sid
        if self.script is not None:
            outputs, meta = await self.script.play(self, run, messages)
        else:
            outputs, meta = await self._run_nodes(run, messages)
        self.last_node_id = None

        # The gap in which /history still answers {} after the terminal event.
        delay = self.faults.history_delay(pid)
        if inspect.isawaitable(delay):
            delay = await delay
        if delay and delay > 0:
            await asyncio.sleep(delay)

        extra = {k: v for k, v in run.extra_data.items() if k not in SECRET_KEYS}
        entry = {"prompt": [run.number, pid, run.prompt, extra, run.outputs], "outputs": outputs,
                 "status": {"status_str": "success" if self.success else "error",
                            "completed": self.success, "messages": messages},
                 "meta": meta}
        with self.history_lock:
            if len(self.history) > MAX_HISTORY:
                self.history.pop(next(iter(self.history)))
            self.history[pid] = entry
            self.running, self.current = None, None
        self.broadcast_status()
        if run.sid is not None:
            self.bus.send("executing", {"node": None, "prompt_id": pid}, run.sid)
        if self._free_pending:
            self._free_pending = False
            self.cache.clear()
        self.notify()

    async def _run_nodes(self, run: Run, messages):
        """Run the prompt's test nodes; return (outputs, meta) for its history entry."""
        pid = run.prompt_id
        self._message(run, messages, "execution_start", {"prompt_id": pid})
        run.sigs = signatures(run.prompt)
        keep = set(run.sigs.values())
        # Classic cache: only entries this prompt can use survive.
        self.cache = {k: v for k, v in self.cache.items() if k in keep}
        cached = [n for n in run.prompt if run.sigs[n] in self.cache]
        self._message(run, messages, "execution_cached", {"nodes": cached, "prompt_id": pid})
        if self.prompt_cost:
            await asyncio.sleep(self.prompt_cost)  # a fixed cost per prompt (model loading, say)
        current_outputs = list(run.prompt)
        run.progress = Progress(self.bus, pid, run.sid)
        plan = Plan(run.prompt, run.outputs, lambda n: run.sigs[n] in self.cache)
        while plan.waiting:
            nid = plan.pick()
            if nid is None:
                error = {"node_id": next(iter(plan.waiting)), "exception_message": "Dependency cycle detected\n",
                         "exception_type": "RuntimeError", "traceback": [], "current_inputs": {}}
            else:
                error = await self._run_node(run, nid)
            self.success = error is None
            if error is not None:
                self._report_error(run, messages, error, current_outputs)
                break
            plan.done(nid)
        else:
            self._message(run, messages, "execution_success", {"prompt_id": pid})

        outputs, meta = {}, {}
        for nid in run.prompt:
            entry = self.cache.get(run.sigs[nid])
            if entry is not None and entry.ui is not None:
                outputs[nid], meta[nid] = entry.ui, entry.meta
        return outputs, meta

    def _report_error(self, run, messages, error, current_outputs):
        nid = error["node_id"]
        base = {"prompt_id": run.prompt_id, "node_id": nid,
                "node_type": run.prompt[nid]["class_type"], "executed": list(run.executed)}
        if error.get("interrupted"):
            # Broadcast when the prompt has no client_id, unlike execution_error.
            self._message(run, messages, "execution_interrupted", base, broadcast=True)
        else:
            base.update(exception_message=error["exception_message"],
                        exception_type=error["exception_type"], traceback=error["traceback"],
                        current_inputs=error["current_inputs"], current_outputs=current_outputs)
            self._message(run, messages, "execution_error", base)

    def _inputs(self, run: Run, nid: str, nodedef):
        inputs = run.prompt[nid]["inputs"]
        values = {}
        for name in nodedef.declared_inputs():
            if name in inputs:
                value = inputs[name]
                if is_link(value):
                    value = self.cache[run.sigs[value[0]]].outputs[value[1]]
                values[name] = value
        return values

    def _hidden(self, run: Run, nodedef):
        sources = {"PROMPT": run.prompt, "EXTRA_PNGINFO": run.extra_data.get("extra_pnginfo")}
        return {name: sources.get(kind) for name, kind in nodedef.hidden.items()}

    async def _run_node(self, run: Run, nid: str) -> Optional[dict]:
        """Run (or replay from cache) one node; returns None or error details."""
        pid, sid, bus = run.prompt_id, run.sid, self.bus
        nodedef = NODES[run.prompt[nid]["class_type"]]
        hit = self.cache.get(run.sigs[nid])
        if hit is not None:
            # Cached: no executing, no progress; its UI is replayed.
            if sid is not None:
                bus.send("executed", {"node": nid, "display_node": nid, "output": hit.ui,
                                      "prompt_id": pid}, sid)
            run.progress.finish(nid)
            return None
        run.progress.start(nid)
        if sid is not None:
            self.last_node_id = nid
            bus.send("executing", {"node": nid, "display_node": nid, "prompt_id": pid}, sid)
        self.current = (pid, nid)
        self.notify()
        values = {}
        try:
            values = self._inputs(run, nid, nodedef)
            self.check_interrupt()
            outputs, ui = await nodedef.run(NodeContext(self, run, nid), **values)
        except Interrupted:
            return {"interrupted": True, "node_id": nid}
        except Exception as ex:
            shown = dict(values, **self._hidden(run, nodedef))
            kind = type(ex)
            return {"node_id": nid, "exception_message": f"{ex}\n",
                    "exception_type": kind.__qualname__ if kind.__module__ == "builtins"
                    else f"{kind.__module__}.{kind.__qualname__}",
                    "traceback": traceback.format_tb(ex.__traceback__),
                    "current_inputs": {k: [_format_value(v)] for k, v in shown.items()}}
        finally:
            self.current = (pid, None)
            self.notify()
        meta = {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
        self.cache[run.sigs[nid]] = CacheEntry(outputs, ui or None, meta)
        if ui and sid is not None:
            bus.send("executed", {"node": nid, "display_node": nid, "output": ui, "prompt_id": pid}, sid)
        run.progress.finish(nid)
        run.executed.append(nid)
        return None
