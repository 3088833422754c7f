"""`--dry-run`: what the server's validation would say about a prompt, found without sending it.

`check(graph, object_info)` returns the problems in the shape of a `POST /prompt` 400 answer,
`{"error": {...} or None, "node_errors": {id: {"errors": [...], "class_type": ...}}}`, so the
report module prints them exactly like a real rejection. The server validates only what output
nodes need; this checks every node, which is stricter but never misses what the server would
refuse. Covered: unknown node types, no output node, required inputs missing, a combo value not
among the choices, numbers outside min/max or not numbers, links to a missing node, to an
output slot the node lacks, or of the wrong type.

Not covered (only the server knows): files a loader names (an upload input is checked when sent),
custom VALIDATE_INPUTS rules, and what a node does with its values.
"""

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "file_upload", "animated_image_upload")


def check(graph, object_info, only=None, known=None):
    """Problems with one API-format graph, as a 400 body: {"error", "node_errors"}; empty when fine.
    With `only` (node ids), only those nodes' inputs are checked; the other nodes' errors are
    taken from `known`, the answer for a graph that differs from this one only in those nodes
    (a plan's prompts differ from their workflow in a few inputs)."""
    node_errors = {}
    if known:
        node_errors = {nid: e for nid, e in known["node_errors"].items() if nid not in only}
    outputs = []
    unknown = []
    for nid, node in graph.items():
        kind = node.get("class_type")
        info = object_info.get(kind)
        mine = only is None or nid in only
        if not isinstance(info, dict):
            unknown.append(nid)
            if mine:
                _add(node_errors, nid, kind, "invalid_prompt", f"Node type {kind} is not on the server", "")
            continue
        if info.get("output_node"):
            outputs.append(nid)
        if not mine:
            continue
        for name, (typ, opts, required) in _declared(info).items():
            if name not in node.get("inputs", {}):
                if required:
                    _add(node_errors, nid, kind, "required_input_missing", "Required input is missing", "", name)
                continue
            value = node["inputs"][name]
            if _is_link(value):
                _check_link(graph, object_info, node_errors, nid, kind, name, typ, value)
            else:
                _check_value(node_errors, nid, kind, name, typ, opts, value)
    if only is not None:
        node_errors = {nid: node_errors[nid] for nid in graph if nid in node_errors}  # in graph order
    error = None
    if unknown:
        kinds = sorted({str(graph[n].get("class_type")) for n in unknown})
        error = {"type": "invalid_prompt", "message": f"node type{'s' if len(kinds) > 1 else ''} not on the "
                 f"server: {', '.join(kinds)}", "details": "", "extra_info": {}}
    elif not outputs:
        error = {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}
    elif node_errors:
        error = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                 "details": "", "extra_info": {}}
    return {"error": error, "node_errors": node_errors} if error else {}


_DECLARED = {}  # id(node type info) -> (info, its declared inputs): read once per type, not per prompt


def _declared(info):
    """{name: (type, opts, required)} for every declared input."""
    cached = _DECLARED.get(id(info))
    if cached is not None and cached[0] is info:
        return cached[1]
    found = _read_declared(info)
    if len(_DECLARED) > 4096:
        _DECLARED.clear()
    _DECLARED[id(info)] = (info, found)
    return found


def _read_declared(info):
    spec = info.get("input") if isinstance(info.get("input"), dict) else {}
    out = {}
    for section in ("required", "optional"):
        for name, entry in (spec.get(section) or {}).items():
            if isinstance(entry, list) and entry:
                opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
                out[name] = (entry[0], opts, section == "required")
    return out


def _check_link(graph, object_info, node_errors, nid, kind, name, typ, value):
    src, slot = value
    if src not in graph:
        _add(node_errors, nid, kind, "bad_linked_input", f"Bad linked input, node {src} does not exist", "", name)
        return
    src_info = object_info.get(graph[src].get("class_type"))
    if not isinstance(src_info, dict):
        return  # reported as an unknown type already
    returns = src_info.get("output") if isinstance(src_info.get("output"), list) else []
    if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < len(returns):
        _add(node_errors, nid, kind, "bad_linked_input", f"Bad linked input, node {src} has no output {slot}",
             "", name)
        return
    received = returns[slot]
    if isinstance(typ, str) and isinstance(received, str) and not _types_match(received, typ):
        _add(node_errors, nid, kind, "return_type_mismatch", "Return type mismatch between linked nodes",
             f"received {received}, the input wants {typ}", name)


def _types_match(received, wanted):
    if "*" in (received, wanted) or received == wanted:
        return True
    # A combo output feeds a combo input; "A,B" accepts either.
    if wanted == "COMBO" and received == "COMBO":
        return True
    return bool(set(received.split(",")) & set(wanted.split(",")))


def _check_value(node_errors, nid, kind, name, typ, opts, value):
    choices = typ if isinstance(typ, list) else (opts.get("options") if typ == "COMBO" else None)
    if isinstance(choices, list):
        if any(opts.get(flag) for flag in UPLOAD_FLAGS) or opts.get("multiselect") or isinstance(value, list):
            return  # a file the server checks itself, or several choices at once
        if value not in choices:
            shown = ", ".join(repr(c) for c in choices[:8]) + (", ..." if len(choices) > 8 else "")
            _add(node_errors, nid, kind, "value_not_in_list", "Value not in list",
                 f"{value!r} not in [{shown}]" if choices else f"{value!r}: the server offers no choices (no such "
                 "files installed?)", name)
        return
    if typ in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = (int if typ == "INT" else float)(value)
            except (TypeError, ValueError, OverflowError):
                _add(node_errors, nid, kind, "invalid_input_type", f"Failed to convert an input value to a {typ} "
                     "value", repr(value), name)
                return
        low, high = opts.get("min"), opts.get("max")
        if isinstance(low, (int, float)) and value < low:
            _add(node_errors, nid, kind, "value_smaller_than_min", f"Value {value} smaller than min of {low}",
                 "", name)
        elif isinstance(high, (int, float)) and value > high:
            _add(node_errors, nid, kind, "value_bigger_than_max", f"Value {value} bigger than max of {high}",
                 "", name)


def _add(node_errors, nid, kind, err_type, message, details, input_name=None):
    entry = node_errors.setdefault(nid, {"errors": [], "dependent_outputs": [], "class_type": kind})
    extra = {"input_name": input_name} if input_name else {}
    entry["errors"].append({"type": err_type, "message": message, "details": details, "extra_info": extra})


def _is_link(value):
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def value_problem(info, name, value):
    """What the server's validation would say of `value` for input `name` of a node type
    (its /object_info entry), or None: for checking data before any graph is built."""
    declared = _declared(info).get(name)
    if declared is None or _is_link(value):
        return None
    errors = {}
    _check_value(errors, "", "", name, declared[0], declared[1], value)
    if not errors:
        return None
    found = errors[""]["errors"][0]
    return found["message"] + (f": {found['details']}" if found["details"] else "")
