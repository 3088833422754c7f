"""Play a recording of a real ComfyUI run back, for every prompt the simulator is given.

The simulator's own nodes are small test nodes; a recording shows what a real model does (a
checkpoint that loads for seconds before the first step, `progress_state` sent many times, a
preview frame before each step). With a `Script`, the simulator answers every prompt with the
recorded frames, in order and with the recorded gaps (times `speed`), under the prompt's own id,
and saves a fresh image for each output the recording names, so /view and downloads work.

Recordings are the real_sd15 format: one JSON object a line; `kind: text` lines hold the server's
message as `msg`, `kind: binary` lines describe a binary frame (`type`: 1 or 4). The queue's
`status` messages and the closing `executing {node: null}` are the engine's own, not replayed.
"""

import asyncio
import json
import re

from .images import PREVIEW_JPEG, seeded_image

PLAYED = frozenset({"execution_start", "execution_cached", "executing", "progress", "progress_state", "executed",
                    "execution_success", "execution_error", "execution_interrupted"})
LOGGED = frozenset({"execution_start", "execution_cached", "execution_success", "execution_error",
                    "execution_interrupted"})  # the messages the history entry keeps
_COUNTER = re.compile(r"_\d+_\.png$")


class Script:
    """The frames of one recorded prompt, with their times."""

    def __init__(self, lines, speed=1.0):
        self.speed = speed
        self.frames = []  # (t, "text", message JSON with the recorded prompt id) | (t, "binary", type)
        self.recorded_id = None
        for line in lines:
            if line.get("kind") == "binary" and self.frames:
                self.frames.append((line["t"], "binary", line.get("type")))
                continue
            msg = line.get("msg") if line.get("kind") == "text" else None
            if not isinstance(msg, dict) or msg.get("type") not in PLAYED:
                continue
            data = msg.get("data") or {}
            if msg["type"] == "executing" and data.get("node") is None:
                continue
            if self.recorded_id is None:
                self.recorded_id = data.get("prompt_id")
            self.frames.append((line["t"], "text", json.dumps(msg)))
        if not self.frames or self.recorded_id is None:
            raise ValueError("the recording holds no prompt's messages")

    @classmethod
    def load(cls, path, speed=1.0):
        with open(path, encoding="utf-8") as fh:
            return cls([json.loads(text) for text in fh if text.strip()], speed)

    async def play(self, engine, run, messages):
        """Send the recording as prompt `run`'s; return (outputs, meta) for its history entry."""
        pid, sid, bus = run.prompt_id, run.sid, engine.bus
        outputs, meta = {}, {}
        node, last = None, self.frames[0][0]
        engine.success = True
        for t, kind, payload in self.frames:
            if t > last:
                await asyncio.sleep((t - last) * self.speed * engine.slow)
            last = t
            if engine.interrupted:
                engine.interrupted = False
                engine.success = False
                engine._message(run, messages, "execution_interrupted", {
                    "prompt_id": pid, "node_id": node, "node_type": _class(run, node),
                    "executed": list(run.executed)}, broadcast=True)
                return outputs, meta
            if kind == "binary":
                if sid is not None:
                    bus.send_preview(PREVIEW_JPEG, {"node_id": node, "prompt_id": pid, "display_node_id": node,
                                                    "parent_node_id": None, "real_node_id": node,
                                                    "image_type": "image/jpeg"}, sid, payload == 4)
                continue
            msg = json.loads(payload.replace(self.recorded_id, pid))
            event, data = msg["type"], msg["data"]
            if event in LOGGED:
                if event == "execution_error":
                    engine.success = False
                engine._message(run, messages, event, data)
                continue
            if event == "executing":
                if node is not None:
                    run.executed.append(node)
                node = data.get("node")
                engine.last_node_id = node if sid is not None else None
                engine.current = (pid, node)
                engine.notify()
            elif event == "executed":
                data["output"] = _saved(engine.storage, data.get("output"), pid)
                outputs[data["node"]] = data["output"]
                meta[data["node"]] = {"node_id": data["node"], "display_node": data["node"], "parent_node": None,
                                      "real_node_id": data["node"]}
            if sid is not None:
                bus.send(event, data, sid)
        engine.current = (pid, None)
        return outputs, meta


def _class(run, node):
    entry = run.prompt.get(node) if node is not None else None
    return entry.get("class_type") if isinstance(entry, dict) else None


def _saved(storage, output, pid):
    """The recorded output with a new file in the simulator's folders for each image it names."""
    if not isinstance(output, dict):
        return output
    out = dict(output)
    images = []
    for item in output.get("images") or ():
        kind = item.get("type", "output")
        if kind not in ("output", "temp") or not isinstance(item.get("filename"), str):
            images.append(item)
            continue
        prefix = _COUNTER.sub("", item["filename"]) if kind == "output" else storage.temp_prefix
        name, sub = storage.save_png(seeded_image(abs(hash(pid)) % (1 << 32)), prefix or "ComfyUI", kind)
        images.append({"filename": name, "subfolder": sub, "type": kind})
    if "images" in output:
        out["images"] = images
    return out
