"""UI-format workflows (what ComfyUI's *Save* writes) turned into API-format prompts.

A UI file stores a drawing: nodes with positions, numbered links, and each node's widget values
as a bare list. The server wants `{id: {class_type, inputs, _meta}}`. Only the server's
`/object_info` says which input each position in `widgets_values` is, so the conversion needs it.
The target is what ComfyUI's current page (frontend 1.58) sends for the file.

Theory of operation (the rules the page follows, checked against what it built):

* Widget values become inputs by position (uiwidgets.py). Values beyond the node's widgets are
  dropped, with a note when there are more than the page's own extras.
* An input fed by a link becomes `["source id", slot]`, whether or not it was once a widget.
  The source is followed through `Reroute` nodes, through bypassed nodes (mode 4: the bypassed
  node's first input of the same type, or nothing) and through subgraph borders. A `PrimitiveNode`
  source writes its value in. A muted (mode 2) source, or a path that ends nowhere, leaves the
  input out. A *required* input left out that way because a bypassed node had nothing to pass
  on is a gap: the page sends the prompt anyway and the server refuses it. `Conversion.gaps`
  names each; `to_api` refuses the file.
* Muted and bypassed nodes are not sent; nor are frontend-only nodes (notes, reroutes,
  primitives).
* Subgraphs (`definitions.subgraphs`, read as uisubgraph.py says) are flattened: the instance is
  not sent; an inner node's id is `"<instance id>:<inner id>"` (nested: `"a:b:c"`), so one
  subgraph used twice gives distinct nodes. A subgraph input that the instance leaves unlinked
  takes the instance's widget value for it, else the inner node keeps its own. Legacy group
  nodes (`extra.groupNodes`, type `workflow>NAME`) are expanded the same way, inner ids
  `"<instance id>:<index>"`.
* `_meta` is the title the page shows and the node pack's `cnr_id`/`aux_id`/`ver` (uilabels.py).

Everything here is pure: a document and an /object_info in, a graph and notes out, or a
UsageError whose one line names the file and the node.
"""

from dataclasses import dataclass, field

from comfy_cli import uilabels, uisubgraph, uiwidgets
from comfy_cli.uisubgraph import INPUT_NODE, OUTPUT_NODE
from comfy_cli.errors import UsageError

# Nodes that live only in the page: never sent, never looked up in /object_info.
FRONTEND_ONLY = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode", "Label (rgthree)",
                           "Note Plus (mtb)", "Fast Groups Bypasser (rgthree)", "Fast Groups Muter (rgthree)"})
MUTED, BYPASSED = 2, 4
KEEP = ("keep",)  # a subgraph input left open: the inner node keeps its own widget value


@dataclass
class Conversion:
    graph: dict  # the API-format prompt, as the page would send it
    notes: list = field(default_factory=list)  # what was dropped on the way, one line each
    gaps: list = field(default_factory=list)  # required inputs left out (the server will refuse them)


def is_ui_format(doc):
    return isinstance(doc, dict) and "nodes" in doc and "links" in doc


def to_api(doc, object_info, label):
    """The graph of one UI-format document; raise UsageError on anything the server would refuse."""
    result = convert(doc, object_info, label)
    if result.gaps:
        raise UsageError(f"{label}: {result.gaps[0]}")
    return result.graph


def convert(doc, object_info, label):
    """Convert one UI-format document as the page would: a Conversion, or UsageError when it cannot."""
    if not is_ui_format(doc):
        raise UsageError(f"{label}: not a UI-format workflow (no 'nodes' and 'links')")
    if not isinstance(object_info, dict):
        raise UsageError(f"{label}: the server's /object_info is not an object")
    converter = _Converter(doc, object_info, label)
    try:
        return Conversion(converter.run(), converter.notes, converter.gaps)
    except (TypeError, AttributeError, KeyError, IndexError, ValueError, RecursionError) as exc:
        # A shape the checks above did not foresee: still one line, never a traceback.
        where = f" near node {converter.where}" if converter.where is not None else ""
        raise UsageError(f"{label}: malformed UI-format workflow{where} ({type(exc).__name__}: "
                         f"{str(exc)[:80]})") from None


class _Scope:
    """One graph level: the top level, or one subgraph instance's inside."""

    def __init__(self, prefix, nodes, links, parent=None, instance=None):
        self.prefix = prefix  # "" or "12:" or "12:7:"
        self.nodes = nodes  # id -> node dict
        self.links = links  # link id -> (origin id, origin slot, target id, target slot, type)
        self.parent = parent
        self.instance = instance  # the node in `parent` this scope is the inside of

    def api_id(self, node_id):
        return f"{self.prefix}{node_id}"


class _Converter:
    def __init__(self, doc, object_info, label):
        self.doc, self.info, self.label = doc, object_info, label
        self.notes, self.gaps = [], []
        self.subgraphs = uisubgraph.definitions(doc, self._fail)
        extra = doc.get("extra") if isinstance(doc.get("extra"), dict) else {}
        groups = extra.get("groupNodes")
        self.groups = groups if isinstance(groups, dict) else {}
        self.out = {}
        self.missing = {}  # class_type -> [api ids]
        self.pending = []  # (scope, node, api id) to fill once every type is known
        self.gap = None  # the bypassed node where the last source search ended empty-handed
        self.where = None  # the node being converted, for the last-resort message
        self.parsed = {}  # subgraph id -> (nodes, links), see _inside

    def run(self):
        top = _Scope("", self._nodes(self.doc.get("nodes"), "the workflow"),
                     self._links(self.doc.get("links"), "the workflow"))
        self._walk(top, depth=0)
        if self.missing:
            parts = [f"{t} (node{'s' if len(ids) > 1 else ''} {', '.join(ids)})" for t, ids in self.missing.items()]
            raise UsageError(f"{self.label}: node types not on the server: {'; '.join(parts)}; install the "
                             "custom nodes that provide them, or remove those nodes")
        for scope, node, api_id in self.pending:
            self.out[api_id] = self._emit(scope, node, api_id)
        if not self.out:
            self._fail("no nodes to run (every node is a note, muted or bypassed)")
        self._check_cycles()
        return dict(sorted(self.out.items(), key=lambda kv: _id_key(kv[0])))

    # -- reading the file -------------------------------------------------------------------

    def _fail(self, message):
        raise UsageError(f"{self.label}: {message}")

    def _nodes(self, nodes, where):
        if not isinstance(nodes, list):
            self._fail(f"{where}: 'nodes' is not a list")
        out = {}
        for node in nodes:
            if not isinstance(node, dict) or not _is_id(node.get("id")) or not isinstance(node.get("type"), str):
                self._fail(f"{where}: a node without an id or a type")
            if not isinstance(node.get("inputs", []), list) or not isinstance(node.get("outputs", []), list):
                self._fail(f"{where}: node {node['id']}: 'inputs' and 'outputs' must be lists")
            if node["id"] in out:
                self._fail(f"{where}: node id {node['id']} is used twice")
            out[node["id"]] = node
        return out

    def _links(self, links, where):
        out = {}
        for link in links or []:
            if isinstance(link, dict):  # subgraphs (and newer files) store objects
                try:
                    link = [link["id"], link["origin_id"], link["origin_slot"], link["target_id"],
                            link["target_slot"], link.get("type")]
                except KeyError as exc:
                    self._fail(f"{where}: a link without {exc.args[0]!r}")
            if (not isinstance(link, list) or len(link) < 5 or not all(_is_id(x) for x in link[:5])
                    or not all(isinstance(x, int) for x in (link[2], link[4]))):
                self._fail(f"{where}: a link that is not [id, from, slot, to, slot, type]: {str(link)[:60]}")
            out[link[0]] = (link[1], link[2], link[3], link[4], link[5] if len(link) > 5 else None)
        return out

    def _inside(self, kind):
        """A subgraph definition's (nodes, links), read once however many instances use it."""
        if kind not in self.parsed:
            sg = self.subgraphs[kind]
            where = f"subgraph {sg.get('name') or kind}"
            self.parsed[kind] = (self._nodes(sg.get("nodes"), where), self._links(sg.get("links"), where))
        return self.parsed[kind]

    # -- walking scopes ---------------------------------------------------------------------

    def _walk(self, scope, depth):
        if depth > 32:
            self._fail(f"subgraphs nested more than 32 deep at node {scope.instance.get('id')} (a subgraph "
                       "that contains itself?)")
        for nid, node in scope.nodes.items():
            kind = node["type"]
            mode = node.get("mode", 0)
            if mode in (MUTED, BYPASSED) or kind in FRONTEND_ONLY:
                continue
            api_id = scope.api_id(nid)
            if kind in self.subgraphs:
                self._walk(_Scope(api_id + ":", *self._inside(kind), parent=scope, instance=node), depth + 1)
            elif kind in self.groups or _group_name(kind) in self.groups:
                self._walk(self._group_scope(scope, node, api_id), depth + 1)
            elif _looks_like_uuid(kind):
                self._fail(f"node {api_id} uses subgraph {kind}, which is not defined in the file")
            elif kind not in self.info:
                self.missing.setdefault(kind, []).append(api_id)
            else:
                self.pending.append((scope, node, api_id))

    def _group_scope(self, scope, node, api_id):
        """A legacy group node as a scope: inner nodes by index, border links made explicit."""
        name = node["type"] if node["type"] in self.groups else _group_name(node["type"])
        inner, links, border_out = uisubgraph.group_scope(self.groups[name], node, api_id, name, self._fail)
        group_scope = _Scope(api_id + ":", inner, links, parent=scope, instance=node)
        group_scope.group_outputs = border_out
        return group_scope

    # -- one node ----------------------------------------------------------------------------

    def _emit(self, scope, node, api_id):
        self.where = api_id
        kind = node["type"]
        info = self.info[kind]
        inputs = {k: uiwidgets.sent(v) for k, v in self._widget_values(node, info, api_id).items()}
        required = info["input"].get("required") or {} if isinstance(info.get("input"), dict) else {}
        for slot, entry in enumerate(node.get("inputs") or []):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                self._fail(f"node {api_id} ({kind}): input {slot} has no name")
            name = entry["name"]
            if entry.get("link") is None:
                continue
            if not _is_id(entry["link"]):
                self._fail(f"node {api_id} ({kind}): input {name!r} has a bad link {str(entry['link'])[:40]}")
            self.gap = None
            source = self._source_of_link(scope, entry["link"], api_id, name)
            if source is None and self.gap is not None and name in required and name not in inputs:
                gap_id, gap_kind, gap_type = self.gap
                self.gaps.append(f"node {api_id} ({kind}): required input {name!r} is left empty: its source, "
                                 f"node {gap_id} ({gap_kind}), is bypassed and has no {gap_type} input to pass on")
            if source is None or source == KEEP:
                if source is None or entry.get("widget") is None:
                    inputs.pop(name, None)  # a link that leads nowhere: left out, like the frontend
                continue
            inputs[name] = uiwidgets.sent(source[1]) if source[0] == "value" else [source[1], source[2]]
        return {"inputs": inputs, "class_type": kind, "_meta": uilabels.meta(node, info)}

    def _widget_values(self, node, info, api_id):
        kind = node["type"]
        values = node.get("widgets_values")
        if isinstance(values, dict):  # some nodes save values by name
            return uiwidgets.by_name(values, info, kind).inputs
        if values is not None and not isinstance(values, list):
            self._fail(f"node {api_id} ({kind}): 'widgets_values' is neither a list nor an object")
        got = uiwidgets.by_position(values or [], info, kind)
        if got.dropped:
            self.notes.append(f"node {api_id} ({kind}): {len(values)} widget values for {got.slots} widget slots; "
                              f"kept the first {got.slots} and dropped the rest, as the page does (the file was "
                              "saved for another version of the node?)")
        return got.inputs

    # -- following links ---------------------------------------------------------------------

    def _source_of_link(self, scope, link_id, api_id, name):
        link = scope.links.get(link_id)
        if link is None:
            self._fail(f"node {api_id}: input {name!r} uses link {link_id}, which is not in the file")
        return self._source(scope, link[0], link[1], api_id, name, set())

    def _source(self, scope, node_id, slot, api_id, name, seen):
        """What feeds an input: ("link", api id, slot), ("value", v), or None (left out)."""
        key = (scope.prefix, node_id, slot)
        if key in seen:
            self._fail(f"node {api_id}: input {name!r} goes round in a loop of reroutes or bypassed nodes")
        seen.add(key)
        if node_id == INPUT_NODE and scope.parent is not None:
            return self._from_instance_input(scope, slot, api_id, name, seen)
        node = scope.nodes.get(node_id)
        if node is None:
            self._fail(f"node {api_id}: input {name!r} is linked to node {scope.api_id(node_id)}, "
                       "which is not in the file")
        kind, mode = node["type"], node.get("mode", 0)
        if mode == MUTED:
            return None
        if kind == "Reroute":
            entry = (node.get("inputs") or [{}])[0]
            link = entry.get("link") if isinstance(entry, dict) else None
            return self._follow(scope, link, api_id, name, seen)
        if kind == "PrimitiveNode":
            values = node.get("widgets_values")
            if not isinstance(values, list) or not values:
                self._fail(f"node {scope.api_id(node_id)} (PrimitiveNode) has no value")
            return ("value", values[0])
        if mode == BYPASSED:
            return self._bypass(scope, node, slot, api_id, name, seen)
        if kind in self.subgraphs or kind in self.groups or _group_name(kind) in self.groups:
            return self._from_instance_output(scope, node, slot, api_id, name, seen)
        if kind in FRONTEND_ONLY:
            return None
        if _looks_like_uuid(kind):
            self._fail(f"node {scope.api_id(node_id)} uses subgraph {kind}, which is not defined in the file")
        return ("link", scope.api_id(node_id), slot)

    def _follow(self, scope, link_id, api_id, name, seen):
        if link_id is None:
            return None
        link = scope.links.get(link_id) if _is_id(link_id) else None
        if link is None:
            self._fail(f"node {api_id}: input {name!r} goes through link {link_id}, which is not in the file")
        return self._source(scope, link[0], link[1], api_id, name, seen)

    def _bypass(self, scope, node, slot, api_id, name, seen):
        """A bypassed node passes on its first input of the output's type, if any."""
        outputs = node.get("outputs") or []
        want = outputs[slot].get("type") if 0 <= slot < len(outputs) and isinstance(outputs[slot], dict) else None
        for entry in node.get("inputs") or []:
            if isinstance(entry, dict) and entry.get("type") == want and entry.get("link") is not None:
                return self._follow(scope, entry["link"], api_id, name, seen)
        self.gap = (scope.api_id(node["id"]), node["type"], want)
        return None

    def _from_instance_output(self, scope, node, slot, api_id, name, seen):
        kind = node["type"]
        inner_prefix = scope.api_id(node["id"]) + ":"
        if kind in self.subgraphs:
            inner = _Scope(inner_prefix, *self._inside(kind), parent=scope, instance=node)
            for origin, oslot, target, tslot, _t in inner.links.values():
                if target == OUTPUT_NODE and tslot == slot:
                    return self._source(inner, origin, oslot, api_id, name, seen)
            return None
        inner = self._group_scope(scope, node, scope.api_id(node["id"]))
        if not 0 <= slot < len(inner.group_outputs):
            self._fail(f"node {api_id}: input {name!r} uses output {slot} of group node {scope.api_id(node['id'])}, "
                       "which it does not have")
        idx, oslot = inner.group_outputs[slot]
        return self._source(inner, idx, oslot, api_id, name, seen)

    def _from_instance_input(self, scope, slot, api_id, name, seen):
        """Leave a subgraph by its input `slot`: the instance's link, or its widget value."""
        instance, parent = scope.instance, scope.parent
        sg = self.subgraphs.get(instance["type"])
        border = (sg.get("inputs") or []) if sg else []
        sg_input = border[slot] if 0 <= slot < len(border) and isinstance(border[slot], dict) else {}
        entries = [e for e in instance.get("inputs") or [] if isinstance(e, dict)]
        entry = None
        if sg_input.get("name") is not None:
            entry = next((e for e in entries if e.get("name") == sg_input["name"]), None)
        elif sg is None and 0 <= slot < len(entries):
            entry = entries[slot]  # group nodes: inputs by position
        if entry is not None and entry.get("link") is not None:
            return self._follow(parent, entry["link"], api_id, name, seen)
        if sg is not None and sg_input.get("type") in uiwidgets.WIDGET_TYPES:
            values = instance.get("widgets_values")
            widget_inputs = [i for i in border if isinstance(i, dict) and i.get("type") in uiwidgets.WIDGET_TYPES]
            if isinstance(values, list) and len(values) == len(widget_inputs) and sg_input in widget_inputs:
                return ("value", values[widget_inputs.index(sg_input)])
        return KEEP

    # -- whole-graph checks ------------------------------------------------------------------

    def _check_cycles(self):
        state = {}
        for start in self.out:
            if start in state:
                continue
            stack = [(start, iter(self._deps(start)))]
            state[start] = 1
            while stack:
                nid, it = stack[-1]
                dep = next(it, None)
                if dep is None:
                    state[nid] = 2
                    stack.pop()
                elif state.get(dep) == 1:
                    self._fail(f"node {dep} ({self.out[dep]['class_type']}) depends on itself through its links "
                               "(a cycle)")
                elif dep not in state:
                    state[dep] = 1
                    stack.append((dep, iter(self._deps(dep))))

    def _deps(self, nid):
        return [v[0] for v in self.out[nid]["inputs"].values()
                if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and v[0] in self.out]


def _is_id(value):
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _group_name(kind):
    for sep in (">", "/"):
        if kind.startswith("workflow" + sep):
            return kind[len("workflow") + 1:]
    return None


def _looks_like_uuid(kind):
    return len(kind) == 36 and kind.count("-") == 4


def _id_key(api_id):
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in api_id.split(":"))
