"""Turning workflow files and options into the prompts of one batch, before anything is sent.

`--set NODE.INPUT=VALUE` and `--input NODE.INPUT=PATH` name a node by id, by `_meta.title`,
or by a class_type that occurs once (plan.py resolves sweeps and data columns the same way;
`--count` copies are the plan's too). Every mistake is found here, with the candidates named,
so a batch is refused whole rather than half submitted.
"""

import copy
import json
import os
from dataclasses import dataclass

from comfy_cli.errors import UsageError
from comfy_cli.workflow import Workflow

SEED_INPUTS = ("seed", "noise_seed")


@dataclass
class Assignment:
    option: str  # "--set" or "--input", for messages
    spec: str  # as typed
    node: str
    input: str
    value: object


def parse_assignment(option, spec, as_path=False):
    """'NODE.INPUT=VALUE' -> Assignment. VALUE is JSON when it parses, else a string."""
    left, eq, raw = spec.partition("=")
    node, dot, name = left.rpartition(".")
    if not eq or not dot or not node or not name:
        raise UsageError(f"{option} {spec!r}: expected NODE.INPUT=VALUE (NODE is an id, a title or a class_type)")
    if as_path:
        if not raw:
            raise UsageError(f"{option} {spec!r}: no file named after '='")
        if not os.path.isfile(raw):
            raise UsageError(f"{option} {spec!r}: {raw}: no such file")
        value = raw
    else:
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        except RecursionError:
            raise UsageError(f"{option} {spec[:60]!r}...: the value is nested too deeply") from None
    return Assignment(option, spec, node, name, value)


def find_node(graph, key):
    """The node ids `key` names in one graph: an id, else a title, else a class_type.
    Returns (ids, how) with how in {"id", "title", "class_type"}; ids may be empty or many."""
    if key in graph:
        return [key], "id"
    titled = [nid for nid, node in graph.items() if _title(node) == key]
    if titled:
        return titled, "title"
    typed = [nid for nid, node in graph.items() if node.get("class_type") == key]
    return typed, "class_type"


def apply(workflows, assignments):
    """Apply every assignment to every workflow with a matching node; return new Workflows.
    An assignment that matches no workflow, is ambiguous, or names a missing input is an error."""
    out = [Workflow(wf.path, wf.name, copy.deepcopy(wf.graph)) for wf in workflows]
    for a in assignments:
        matched = False
        for wf in out:
            ids, how = find_node(wf.graph, a.node)
            if not ids:
                continue
            if len(ids) > 1:
                raise UsageError(f"{a.option} {a.spec!r}: {wf.path}: {how} {a.node!r} matches nodes "
                                 f"{', '.join(ids)}; name one by id")
            node = wf.graph[ids[0]]
            inputs = node.setdefault("inputs", {})
            if a.input not in inputs:
                have = ", ".join(sorted(inputs)) or "no inputs"
                raise UsageError(f"{a.option} {a.spec!r}: {wf.path}: node {ids[0]} ({wf.title(ids[0])}) has no "
                                 f"input {a.input!r}; it has: {have}")
            inputs[a.input] = a.value
            matched = True
        if not matched:
            raise UsageError(f"{a.option} {a.spec!r}: no node {a.node!r} in "
                             f"{'any workflow' if len(out) > 1 else out[0].path}; candidates: "
                             f"{candidates(out)}")
    return out


# Nodes that read a file from the server's input folder, and the input naming it. Only these
# are uploaded on their own (with --input any node works): a workflow from elsewhere must not be
# able to send an arbitrary local file to the server.
LOADERS = {"LoadImage": "image", "LoadImageMask": "image", "LoadImageOutput": "image", "LoadAudio": "audio",
           "LoadVideo": "file", "VHS_LoadVideo": "video", "VHS_LoadAudioUpload": "audio"}
MEDIA = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".exr", ".mp4", ".webm", ".mov",
         ".mkv", ".avi", ".wav", ".mp3", ".flac", ".ogg", ".m4a", ".opus")


def upload_targets(wf, inputs=()):
    """(node id, input name, local path) to upload for one workflow: the `--input` assignments
    (Assignment objects) that match it, and the file input of a known loader node whose value is
    an existing local media file."""
    targets = []
    for a in inputs:
        ids, _how = find_node(wf.graph, a.node)
        if len(ids) == 1:
            targets.append((ids[0], a.input, a.value))
    named = {(nid, name) for nid, name, _path in targets}
    for nid, node in wf.graph.items():
        name = LOADERS.get(node.get("class_type"))
        value = node.get("inputs", {}).get(name) if name else None
        if (nid, name) in named or not isinstance(value, str):
            continue
        if value.lower().endswith(MEDIA) and os.path.isfile(value):
            targets.append((nid, name, value))
    return targets


def _title(node):
    meta = node.get("_meta")
    return meta.get("title") if isinstance(meta, dict) else None


def candidates(workflows, limit=12):
    """Some node ids and titles to pick from, for an error line."""
    groups, shown = [], 0
    for wf in workflows:
        labels = [f"{nid} ({wf.title(nid)})" for nid in wf.graph][: max(0, limit - shown)]
        shown += len(labels)
        if labels:
            groups.append((f"{wf.path}: " if len(workflows) > 1 else "") + ", ".join(labels))
    total = sum(len(wf.graph) for wf in workflows)
    return "; ".join(groups) + (f"; and {total - shown} more" if total > shown else "")
