"""UI-format conversion cost: converting the largest workflow vs json-loading the same file.

Finds the largest UI-format file among the `comfyui-workflow-templates` package's templates (when
that package is installed in the venv; it is not a dependency) and `tests/data/ui/workflows/`,
then alternately times, in this process: `json.loads` of the file's text (the reference), and
`uiformat.to_api` of the loaded document with the real server's `tests/data/ui/object_info.json`.
If that server lacks some of the file's node types (the largest template uses custom nodes), they
are stubbed (their outputs from the file, a STRING input per widget value) so the whole conversion
runs instead of the quick refusal. It checks the conversion gives the same graph every run.

    .venv/bin/python tests/bench/bench_convert.py [--runs N]
"""
import json
import os
import statistics
import sys
import time

from _common import REPO, header, parse_args

TARGET_MS = 50.0


def candidates():
    folders = [REPO / "tests" / "data" / "ui" / "workflows"]
    try:
        import comfyui_workflow_templates

        folders.append(os.path.join(os.path.dirname(comfyui_workflow_templates.__file__), "templates"))
    except ImportError:
        print("(comfyui-workflow-templates not installed: only tests/data/ui/workflows is searched)")
    for folder in folders:
        for name in os.listdir(folder):
            if name.endswith(".json"):
                yield os.path.join(folder, name)


def stub_missing(doc, info):
    """/object_info entries for the node types the file uses but the server lacks."""
    from comfy_cli import uiformat

    defined = {sg.get("id") for sg in (doc.get("definitions") or {}).get("subgraphs") or []}
    nodes = list(doc["nodes"]) + [n for sg in (doc.get("definitions") or {}).get("subgraphs") or []
                                  for n in sg.get("nodes") or []]
    stubs = {}
    for node in nodes:
        kind = node["type"]
        if kind in info or kind in defined or kind in uiformat.FRONTEND_ONLY:
            continue
        values = node.get("widgets_values") if isinstance(node.get("widgets_values"), list) else []
        optional = {f"w{i}": ["STRING", {}] for i in range(len(values))}
        outputs = [o.get("type") for o in node.get("outputs") or []]
        stubs[kind] = {"input": {"required": {}, "optional": optional}, "input_order": {"optional": list(optional)},
                       "output": outputs, "output_is_list": [False] * len(outputs), "output_name": outputs,
                       "name": kind, "display_name": kind, "category": "stub", "output_node": False}
    return stubs


def main():
    args = parse_args(__doc__.splitlines()[0], default_runs=50)
    sys.path.insert(0, str(REPO))
    from comfy_cli import uiformat
    from comfy_cli.errors import UsageError

    info = json.loads((REPO / "tests" / "data" / "ui" / "object_info.json").read_text())
    usable = []
    for path in candidates():
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        try:
            if uiformat.is_ui_format(json.loads(text)):
                usable.append((len(text), path, text))
        except ValueError:
            continue  # not JSON
    size, path, text = max(usable)
    header("bench_convert: in-process time of one conversion", args.runs)
    doc = json.loads(text)
    stubbed = stub_missing(doc, info)
    if stubbed:
        print(f"stubbed:  {', '.join(sorted(stubbed))} (not on the reference server)")
        info = dict(info, **stubbed)
    try:
        first = uiformat.to_api(doc, info, path)
    except UsageError as exc:
        sys.exit(f"cannot convert it: {exc}")
    print(f"file:     {os.path.relpath(path, REPO)} ({size / 1024:.0f} KiB, {len(doc['nodes'])} top-level nodes, "
          f"{len((doc.get('definitions') or {}).get('subgraphs') or [])} subgraphs -> {len(first)} API nodes)")
    print(f"searched: {len(usable)} UI-format files\n")
    times = {"json.loads(file)": [], "uiformat.to_api(doc)": []}
    for _ in range(args.runs):
        start = time.perf_counter()
        json.loads(text)
        times["json.loads(file)"].append(time.perf_counter() - start)
        start = time.perf_counter()
        graph = uiformat.to_api(doc, info, path)
        times["uiformat.to_api(doc)"].append(time.perf_counter() - start)
        if graph != first:
            sys.exit("the conversion gave a different graph on a later run")
    ref = statistics.median(times["json.loads(file)"])
    print(f"{'step':<22}  {'median ms':>9}  {'min ms':>8}  {'max ms':>8}  {'ratio':>6}  target")
    for label, values in times.items():
        med = statistics.median(values)
        target = "(reference)" if label.startswith("json") else f"<= {TARGET_MS:g} ms: " + (
            "ok" if med * 1e3 <= TARGET_MS else "OVER")
        print(f"{label:<22}  {med * 1e3:9.2f}  {min(values) * 1e3:8.2f}  {max(values) * 1e3:8.2f}"
              f"  {med / ref:5.2f}x  {target}")


if __name__ == "__main__":
    main()
