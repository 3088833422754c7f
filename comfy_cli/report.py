"""Results: exit codes per prompt, output files, error messages and the JSON summary."""

from comfy_cli import errors
from comfy_cli import tracker as tr
from comfy_cli.dispatch import Attempt

SCHEMA = "comfy-cli.run/1"

EXIT = {
    tr.SUCCESS: errors.OK,
    tr.FAILED: errors.FAILED,
    tr.INTERRUPTED: errors.FAILED,
    tr.MISMATCH: errors.FAILED,
    tr.REJECTED: errors.INVALID,
    tr.TIMEOUT: errors.TIMEOUT,
    tr.LOST: errors.UNREACHABLE,
    tr.ERROR: errors.UNREACHABLE,
}


# Rejections decided by comfy-cli itself, never by a server's validation.
LOCAL_REFUSALS = ("invalid_workflow", "missing_node_types")


def exit_code(prompt, cancel_code=errors.SIGINT):
    if prompt.status == tr.CANCELLED and (prompt.error or {}).get("earlier"):
        return errors.FAILED  # an earlier `cancel` stopped it: as if interrupted on the server, not this Ctrl-C
    if prompt.status in (tr.CANCELLED, tr.DETACHED):
        return cancel_code
    return EXIT.get(prompt.status, errors.UNREACHABLE)


def output_files(prompt, include_temp=False):
    """[(node_id, item)] for every file the prompt's outputs name (images, gifs, video, audio...)."""
    files = []
    for node, output in prompt.outputs.items():
        for value in output.values():
            if not isinstance(value, list):
                continue
            for item in value:
                if _file_item(item):
                    if item.get("type") == "temp" and not include_temp:
                        continue
                    files.append((node, item))
    return files


def _file_item(item):
    """An output entry naming a file, with text fields a URL and a path can be made of."""
    if not isinstance(item, dict):
        return False
    fields = [item.get("filename"), item.get("subfolder", ""), item.get("type", "output")]
    if not all(isinstance(f, str) for f in fields) or not fields[0]:
        return False
    try:
        "".join(fields).encode("utf-8")  # a lone surrogate cannot be a file name or a URL
    except UnicodeEncodeError:
        return False
    return True


def rejection_lines(prompt):
    """The 400 answer, as lines: the error, then one line per node error."""
    err = prompt.error or {}
    name = prompt.workflow.name
    head = f"{name}: rejected by the server: {err.get('message') or 'validation failed'}"
    details = err.get("details")
    if details:
        head += f" ({details})"
    lines = [head]
    return lines + node_error_lines(prompt.workflow, err.get("node_errors"))


def node_error_lines(workflow, node_errors):
    """One line per error in a /prompt answer's node_errors (node id, title, input, message)."""
    lines = []
    if isinstance(node_errors, dict):
        for node_id, info in node_errors.items():
            lines.extend(_node_error_lines(workflow, node_id, info))
    return lines


def _node_error_lines(workflow, node_id, info):
    if not isinstance(info, dict):
        return [f"  node {node_id}: {info}"]
    label = workflow.title(node_id)
    if label == node_id and isinstance(info.get("class_type"), str):
        label = info["class_type"]
    lines = []
    for e in info.get("errors") or []:
        if not isinstance(e, dict):
            continue
        extra = e.get("extra_info") if isinstance(e.get("extra_info"), dict) else {}
        where = f"  node {node_id} ({label})"
        if extra.get("input_name"):
            where += f" input {extra['input_name']!r}"
        text = e.get("message") or e.get("type") or "error"
        if e.get("details"):
            text += f": {e['details']}"
        lines.append(f"{where}: {text}")
    return lines or [f"  node {node_id} ({label}): invalid"]


def failure_lines(prompt, verbose=False):
    err = prompt.error or {}
    name = prompt.workflow.name
    if prompt.status == tr.FAILED:
        node = err.get("node_id")
        where = f" at node {node} ({err.get('node_type') or prompt.workflow.title(node)})" if node else ""
        kind = f"{err['exception_type']}: " if err.get("exception_type") else ""
        lines = [f"{name}: failed{where}: {kind}{err.get('message', '')}"]
        if verbose and err.get("traceback"):
            lines.extend("  " + line.rstrip("\n") for line in "".join(err["traceback"]).splitlines())
        return lines
    if prompt.status == tr.INTERRUPTED:
        node = err.get("node_id")
        return [f"{name}: interrupted on the server" + (f" at node {node} ({err.get('node_type')})" if node else "")]
    if prompt.status == tr.REJECTED:
        if err.get("type") in LOCAL_REFUSALS:  # refused here, before sending: no server said it
            return [f"{name}: {err.get('message', 'invalid workflow')}"]
        return rejection_lines(prompt)
    if prompt.status in (tr.LOST, tr.TIMEOUT, tr.CANCELLED, tr.ERROR, tr.DETACHED):
        return [f"{name}: {err.get('message', prompt.status)} (prompt {prompt.prompt_id})"]
    if prompt.status == tr.MISMATCH:
        return [f"{name}: mismatch: {line}" for line in err.get("differences") or [err.get("message", "")]]
    return []


def output_key(node, item):
    return (node, item.get("filename"), item.get("subfolder", ""), item.get("type", "output"))


def summary(attempts, view_url, servers, exit_code_value, include_temp=False, saved=None, lazy=False):
    """The --json document (and the last --events line). `attempts`: (prompt, dispatch.Attempt)
    of every attempt, in order;
    `view_url(prompt, item)`: an output's URL; `servers`: their base URLs, the first the main
    one; `saved`: prompt_id -> {output key: path}. `lazy`: "prompts" is a generator (for
    `write_json`, so a batch of thousands is never held as one document)."""
    saved = saved or {}
    doc = {
        "schema": SCHEMA,
        "server": servers[0],
        "exit_code": exit_code_value,
    }
    if len(servers) > 1:
        doc["servers"] = list(servers)
    each = (prompt_summary(p, view_url, include_temp, saved.get(p.prompt_id, {}), a) for p, a in attempts)
    doc["prompts"] = each if lazy else list(each)
    return doc


def write_json(out, doc):
    """Write the --json document: indented at the top, one line per prompt, each written as
    it is made. Readable, written by json's C encoder (indent= makes json fall back to Python:
    slow for big batches), and never held whole in memory."""
    import json

    from comfy_cli.errors import ascii_only

    plain = ascii_only(out)
    out.write("{")
    first = True
    for key, value in doc.items():
        out.write(("\n" if first else ",\n") + f"  {json.dumps(key)}: ")
        first = False
        if key != "prompts":
            out.write(json.dumps(value, ensure_ascii=plain))
            continue
        out.write("[")
        empty = True
        for item in value:
            out.write(("\n    " if empty else ",\n    ") + json.dumps(item, ensure_ascii=plain))
            empty = False
        out.write("]" if empty else "\n  ]")
    out.write("\n}\n")


def prompt_summary(p, view_url, include_temp=False, saved=None, attempt=None):
    """One prompt's entry; `attempt`: its dispatch.Attempt (None: a first attempt, not sent)."""
    graph = p.workflow.graph
    return {
        "workflow": p.workflow.path,
        "name": p.workflow.name,
        "values": dict(p.workflow.values),
        "prompt_id": p.prompt_id,
        "server": (attempt or FIRST).server,
        "attempt": (attempt or FIRST).number,
        "status": p.status,
        "number": p.number,
        "timings": {
            "queued_s": _span(p.submitted_at, p.started_at),
            "run_s": _span(p.started_at, p.ended_at),
            "total_s": _span(p.submitted_at, p.ended_at),
            "server_run_ms": (p.server_end_ms - p.server_start_ms)
            if p.server_end_ms is not None and p.server_start_ms is not None else None,
        },
        "nodes": {
            "total": len(graph),
            "executed": len((p.progress.ran - p.progress.cached) & graph.keys()),
            "cached": len(p.progress.cached & graph.keys()),
        },
        "node_timings": node_timings(p),
        "outputs": [
            {"node": node, "filename": item.get("filename"), "subfolder": item.get("subfolder", ""),
             "type": item.get("type", "output"), "url": view_url(p, item),
             "path": (saved or {}).get(output_key(node, item))}
            for node, item in output_files(p, include_temp)
        ],
        "ui": p.outputs,
        "error": p.error,
        "warnings": p.warnings,
        **({"expected": [o.as_dict() for o in p.checked]} if p.checked is not None else {}),
    }


def node_timings(p):
    """Every node the prompt ran or took from the cache, in the order they started:
    {"node", "class_type", "title", "seconds", "cached"}. The seconds are the client's view
    (between the messages' receive times, see progress.py); None where no message was seen."""
    graph = p.workflow.graph
    seen = p.progress
    out = []
    for node, (start, end) in seen.spans.items():
        out.append(_node_timing(p.workflow, graph, node, round(end - start, 4) if end is not None else None,
                                node in seen.cached))
    for node in sorted(seen.ran - seen.spans.keys(), key=_node_order):
        out.append(_node_timing(p.workflow, graph, node, None, False))
    return out


def _node_timing(workflow, graph, node, seconds, cached):
    info = graph.get(node)
    kind = info.get("class_type") if isinstance(info, dict) else None
    return {"node": node, "class_type": kind if isinstance(kind, str) else None, "title": workflow.title(node),
            "seconds": 0.0 if cached else seconds, "cached": cached}


def _node_order(node):
    return (0, int(node), "") if node.isdigit() else (1, 0, node)


def _span(a, b):
    return round(b - a, 4) if a is not None and b is not None else None


FAILURES = (tr.FAILED, tr.INTERRUPTED, tr.MISMATCH)  # JUnit failures; other ends are errors
FIRST = Attempt()  # what a prompt given without its Attempt is taken for: a first, of no batch


def junit_xml(attempts, duration):
    """A JUnit XML report: one testcase per batch item (its last attempt), with its time, the
    server that ran it, every attempt, and the failure message. `attempts`: (prompt,
    dispatch.Attempt or None) of every attempt, in order."""
    from xml.etree import ElementTree as ET

    attempts = [(p, a or FIRST) for p, a in attempts]
    last = {}
    for p, a in attempts:
        last[a.item if a.item is not None else p.prompt_id] = (p, a)
    prompts = [p for p, _ in last.values()]
    failed = sum(p.status in FAILURES for p in prompts)
    broken = sum(p.status not in FAILURES and p.status != tr.SUCCESS for p in prompts)
    suite = ET.Element("testsuite", name="comfy-cli", tests=str(len(prompts)), failures=str(failed),
                       errors=str(broken), skipped="0", time=f"{duration:.3f}")
    for p, at in last.values():
        case = ET.SubElement(suite, "testcase", classname=p.workflow.path, name=p.workflow.name,
                             time=f"{_span(p.submitted_at, p.ended_at) or 0.0:.3f}")
        props = ET.SubElement(case, "properties")
        props.append(ET.Element("property", name="prompt_id", value=p.prompt_id))
        if at.server:
            props.append(ET.Element("property", name="server", value=at.server))
        earlier = [(e, a) for e, a in attempts if e is not p and a.item is not None and a.item == at.item]
        for e, a in earlier:
            props.append(ET.Element("property", name=f"attempt {a.number}",
                                    value=f"{e.status} on {a.server} (prompt {e.prompt_id})"))
        if p.status == tr.SUCCESS:
            continue
        message = " ".join(failure_lines(p))[:2000] or p.status
        kind = "failure" if p.status in FAILURES else "error"
        element = ET.SubElement(case, kind, message=_xml_safe(message), type=p.status)
        detail = "\n".join(failure_lines(p, verbose=True))
        element.text = _xml_safe(detail)
    return ET.tostring(ET.ElementTree(suite).getroot(), encoding="unicode", xml_declaration=True) + "\n"


def _xml_safe(text):
    # XML 1.0 cannot carry most control characters; a server message might.
    return "".join(c if c in "\t\n\r" or ord(c) >= 0x20 else "?" for c in text)


# The end-of-run line: how many prompts ended how, in this order (most wanted first).
SUMMARY_WORDS = [
    (tr.SUCCESS, "succeeded"),
    (tr.FAILED, "failed"),
    (tr.INTERRUPTED, "interrupted"),
    (tr.MISMATCH, "mismatched"),
    (tr.REJECTED, "rejected"),
    (tr.TIMEOUT, "timed out"),
    (tr.LOST, "lost"),
    (tr.CANCELLED, "cancelled"),
    (tr.DETACHED, "left running"),
    (tr.ERROR, "in error"),
]


def summary_line(prompts, files, seconds):
    """One line for the end of a run, e.g. "12 prompts: 11 succeeded, 1 failed, 3 files, 14.2 s".

    `prompts`: the run's Prompt objects (any iterable, or a dict of them); only their `status` is read.
    `files`: how many output files were listed or saved (an int, or a collection of them).
    `seconds`: the run's wall time (None leaves it out). Pure: no I/O, no clock."""
    if hasattr(prompts, "values"):
        prompts = prompts.values()
    counts = {}
    for prompt in prompts:
        counts[prompt.status] = counts.get(prompt.status, 0) + 1
    total = sum(counts.values())
    parts = [f"{counts[status]} {word}" for status, word in SUMMARY_WORDS if counts.get(status)]
    still_open = total - sum(counts.get(status, 0) for status, _ in SUMMARY_WORDS)
    if still_open:
        parts.append(f"{still_open} not ended")
    head = _plural(total, "prompt")
    n_files = files if isinstance(files, int) else len(files)
    tail = [_plural(n_files, "file")]
    if seconds is not None and seconds == seconds and abs(seconds) != float("inf"):
        tail.append(_duration(seconds))
    return (f"{head}: " if parts else f"{head}, ") + ", ".join(parts + tail)


def _plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def _duration(seconds):
    seconds = max(0.0, float(seconds))
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds + 0.5)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
