"""Reading workflow files, with errors a person can act on.

API-format files are checked and used as they are. A UI-format file (what ComfyUI's *Save*
writes) is kept as its document, `ui`, with an empty graph: only the server's /object_info says
what its widget values mean, so `convert` fills the graph once the caller has fetched it.
"""

import json
import os
from dataclasses import dataclass, field
from typing import Optional

from comfy_cli.errors import UsageError

# A real API workflow is a few KB to a few hundred KB; anything this big is not one.
MAX_BYTES = 32 * 1024 * 1024


@dataclass
class Workflow:
    path: str  # as the user gave it ("-" for stdin)
    name: str  # short label for bars and summaries
    graph: dict  # {node_id: {"class_type", "inputs", "_meta"?}}; {} until a UI-format file is converted
    ui: Optional[dict] = None  # the UI-format document, when the file is one
    # What makes this prompt of the batch unique, for names, the manifest and the report's grid:
    # {"NODE.INPUT": value} in the order the plan applied them (sweeps, --params cells, --input
    # files, the seed of a --count copy). Empty for a plain run of one file.
    values: dict = field(default_factory=dict)
    index: Optional[int] = None  # its place in the batch (the plan's global index; --shard keeps it)

    def title(self, node_id):
        """The node's `_meta.title`, else its class_type, else its id."""
        node = self.graph.get(node_id)
        if not isinstance(node, dict):
            return str(node_id)
        meta = node.get("_meta")
        if isinstance(meta, dict) and isinstance(meta.get("title"), str) and meta["title"]:
            return meta["title"]
        return str(node.get("class_type") or node_id)



def load(path, stdin=None):
    """Read and check one workflow file; raise UsageError naming the file and the problem."""
    label = "<stdin>" if path == "-" else path
    raw = _read(path, label, stdin)
    if not raw.strip():
        raise UsageError(f"{label}: the file is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{label}: not UTF-8 text (bad byte at offset {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{label}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise UsageError(f"{label}: invalid JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal of thousands of digits
        raise UsageError(f"{label}: invalid JSON: {str(exc).splitlines()[0][:120]}") from None
    if is_ui_format(data):
        if not isinstance(data["nodes"], list) or not isinstance(data["links"], list):
            raise UsageError(f"{label}: a UI-format workflow whose 'nodes' or 'links' is not a list")
        if not data["nodes"]:
            raise UsageError(f"{label}: this UI-format workflow has no nodes")
        return Workflow(path=path, name=_name(path), graph={}, ui=data)
    check_graph(data, label)
    return Workflow(path=path, name=_name(path), graph=data)


def is_ui_format(data):
    return isinstance(data, dict) and "nodes" in data and "links" in data


def convert(wf, object_info, strict=True, say=None):
    """The workflow with its graph built from its UI document (unchanged if it is API format).

    What the conversion dropped is said on stderr (or to `say(line)`). A required input left
    empty by a bypassed node is refused when `strict` (the server would refuse the prompt);
    otherwise the graph is what the page would send, with a warning."""
    if wf.ui is None:
        return wf
    from comfy_cli import uiformat

    label = "<stdin>" if wf.path == "-" else wf.path
    result = uiformat.convert(wf.ui, object_info, label)
    if result.gaps and strict:
        raise UsageError(f"{label}: {result.gaps[0]}; un-bypass that node or link the input, then run it again")
    check_graph(result.graph, label)
    say = say or _to_stderr
    for note in result.notes:
        say(f"note: {label}: {note}")
    for gap in result.gaps:
        say(f"warning: {label}: {gap}; this is what the page would send, and the server will refuse it")
    return Workflow(path=wf.path, name=wf.name, graph=result.graph)


def _to_stderr(line):
    import sys

    sys.stderr.write(f"comfy-cli: {line}\n")


def _read(path, label, stdin):
    if path == "-":
        import sys

        stream = stdin if stdin is not None else sys.stdin.buffer
        data = stream.read(MAX_BYTES + 1)
    else:
        data = read_bytes(path, label, MAX_BYTES)
    if len(data) > MAX_BYTES:
        raise UsageError(f"{label}: larger than {MAX_BYTES // (1024 * 1024)} MB, too large to be a workflow")
    return data


def read_bytes(path, label, limit, kind="a workflow file"):
    """A local file's bytes, at most limit + 1 of them; a UsageError naming `label` if it
    cannot be read."""
    if os.path.isdir(path):
        raise UsageError(f"{label}: is a directory, not {kind}")
    try:
        with open(path, "rb") as fh:
            return fh.read(limit + 1)
    except FileNotFoundError:
        raise UsageError(f"{label}: no such file") from None
    except PermissionError:
        raise UsageError(f"{label}: permission denied") from None
    except OSError as exc:
        raise UsageError(f"{label}: cannot read: {exc.strerror or exc}") from None


def check_graph(data, label):
    """Check the API-format shape: {id: {class_type: str, inputs: {...}}}, links to real nodes."""
    if is_ui_format(data):
        raise UsageError(f"{label}: this is a UI-format workflow (it has 'nodes' and 'links'); "
                         "it must be converted with the server's /object_info first")
    if not isinstance(data, dict):
        raise UsageError(f"{label}: expected a JSON object of nodes, got {_kind(data)}")
    if isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]:
        # A saved POST /prompt body; the graph is inside.
        raise UsageError(f"{label}: this looks like a /prompt request body; pass the graph under 'prompt' on its own")
    if not data:
        raise UsageError(f"{label}: the workflow has no nodes")
    for node_id, node in data.items():
        where = f"{label}: node {node_id!r}"
        if not isinstance(node, dict):
            raise UsageError(f"{where}: expected an object with class_type and inputs, got {_kind(node)}")
        if not isinstance(node.get("class_type"), str) or not node["class_type"]:
            raise UsageError(f"{where}: missing 'class_type'")
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            raise UsageError(f"{where}: 'inputs' must be an object, got {_kind(inputs)}")
        for name, value in inputs.items():
            if not _json_safe(value):
                # Python's json reads NaN and Infinity; no server can: refuse before sending.
                raise UsageError(f"{where}: input {name!r} holds NaN or Infinity, which JSON does not allow")
            if (isinstance(value, list) and len(value) == 2 and isinstance(value[0], int)
                    and not isinstance(value[0], bool) and isinstance(value[1], int) and str(value[0]) in data):
                raise UsageError(f"{where}: input {name!r} links to node {value[0]} with a number; "
                                 f"node ids are strings: [\"{value[0]}\", {value[1]}]")
            if _is_link(value):
                src, index = value
                if str(src) not in data:
                    raise UsageError(f"{where}: input {name!r} links to node {src!r}, which is not in the workflow")
                if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                    raise UsageError(f"{where}: input {name!r} has a bad output index {index!r}")


def unsafe_input(graph):
    """(node id, input name) of the first value JSON cannot carry (NaN, Infinity), or None."""
    for node_id, node in graph.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        for name, value in (inputs.items() if isinstance(inputs, dict) else ()):
            if not _json_safe(value):
                return node_id, name
    return None


def _json_safe(value, depth=0):
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if depth > 50 or not isinstance(value, (list, dict)):
        return True
    items = value.values() if isinstance(value, dict) else value
    return all(_json_safe(v, depth + 1) for v in items)


def _is_link(value):
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _kind(value):
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _name(path):
    if path == "-":
        return "stdin"
    base = os.path.basename(path)
    return base[:-5] if base.endswith(".json") else base
