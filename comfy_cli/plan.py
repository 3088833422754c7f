"""The batch as a plan: which prompts a run makes, in which order, and what each one sets.

    batch = workflow files x --params rows x --input files x --sweep product x --count

Prompt i of the batch is found by counting in that order, the last factor fastest: for each
workflow file (as given), each row (in file order), each input file (sorted by name; several
`--input` folders: their product, in option order), each sweep combination (the last `--sweep`
varies fastest), each `--count` copy. That global index is the prompt's place for `--shard`,
`--journal`, `--retry` and the report. The plan keeps only the values: a prompt's graph is built
when first asked for (by the submitter or `--dry-run`), so a 100,000-row file costs its rows,
not 100,000 graphs.
"""

import hashlib
import json
import os
import re
from typing import NamedTuple, Optional

from comfy_cli import batch, check
from comfy_cli.errors import UsageError
from comfy_cli.params import MISSING, Column, parse_value
from comfy_cli.workflow import Workflow, _json_safe

MAX_PROMPTS = 1_000_000
MAX_SWEEP = 100_000
LABEL_CHARS = 24
ROWS, FILES, SWEEP = "rows", "files", "sweep"


class Axis(NamedTuple):
    """One factor of the batch: its choices, each giving a value to every setting (or MISSING)."""

    kind: str  # ROWS, FILES or SWEEP
    source: str  # the option as typed or the data file, for messages
    settings: tuple  # params.Column per input set
    choices: list  # one tuple of values per choice
    labels: list  # what each choice adds to a name: "row 7", "cat.png", "6"
    lines: Optional[list] = None  # ROWS: each row's line in the file
    names: Optional[list] = None  # ROWS: each row's `name` cell, or None

    def where(self, k, setting):
        """Where choice k's value for `setting` came from, for an error line."""
        if self.kind == ROWS:
            return f"--params {self.source}: line {self.lines[k]}, column {setting.key}"
        return f"{self.source}: {_text(self.choices[k][0], 60)}"


def _split(option, spec, what):
    left, eq, raw = spec.partition("=")
    node, dot, name = left.rpartition(".")
    if not eq or not dot or not node or not name:
        raise UsageError(f"{option} {spec!r}: expected NODE.INPUT={what} (NODE is an id, a title or a class_type)")
    return node, name, raw


def sweep(spec):
    """`--sweep NODE.INPUT=V1,V2,...` (or a JSON array, or START..END:STEP) -> Axis."""
    node, name, raw = _split("--sweep", spec, "V1,V2,...")
    source = f"--sweep {spec!r}"
    values = _sweep_values(source, raw)
    if not values:
        raise UsageError(f"{source}: the sweep is empty; give at least one value")
    seen = set()
    for value in values:
        key = json.dumps(value, sort_keys=True)
        if key in seen:
            raise UsageError(f"{source}: the value {_text(value, 40)} is given twice")
        seen.add(key)
    column = Column(f"{node}.{name}", node, name, False, source)
    return Axis(SWEEP, source, (column,), [(v,) for v in values], _value_labels(values))


RANGE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*\.\.\s*(-?\d+(?:\.\d+)?)\s*(?::\s*(\d+(?:\.\d+)?))?\s*$")


def _sweep_values(source, raw):
    if raw.strip().startswith("["):
        try:
            values = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise UsageError(f"{source}: not a JSON array: {str(exc)[:80]}") from None
        if not isinstance(values, list):
            raise UsageError(f"{source}: not a JSON array")
        return values
    found = RANGE.match(raw)
    if found:
        return _range(source, *found.groups())
    if not raw.strip():
        return []
    parts = [part.strip() for part in raw.split(",")]
    if "" in parts:
        raise UsageError(f"{source}: value {parts.index('') + 1} is empty (an empty string needs a JSON array: "
                         "'NODE.INPUT=[\"\", \"b\"]')")
    return [parse_value(part) for part in parts]


def _range(source, start, end, step):
    """START..END:STEP, END included when the steps reach it; integers stay integers."""
    texts = [start, end, step or "1"]
    exact = all("." not in t for t in texts)
    low, high, size = (int(t) if exact else float(t) for t in texts)
    if size == 0:
        raise UsageError(f"{source}: the step is 0")
    places = max(len(t.partition(".")[2]) for t in texts)
    n = int(abs(high - low) / size + 1e-9) + 1
    if n > MAX_SWEEP:
        raise UsageError(f"{source}: {n} values; at most {MAX_SWEEP} in one sweep")
    sign = 1 if high >= low else -1
    if exact:
        return [low + sign * k * size for k in range(n)]
    return [round(low + sign * k * size, places) for k in range(n)]


def _has_magic(text):
    """What glob.has_magic says, without loading glob for a plain path."""
    return any(c in text for c in "*?[")


def input_files(spec):
    """`--input NODE.INPUT=DIR` or `=GLOB` -> Axis of the files, sorted by name; None when it
    names one file (a plain `--input`, the same for every prompt)."""
    node, name, raw = _split("--input", spec, "PATH")
    source = f"--input {spec!r}"
    if os.path.isdir(raw):
        found = sorted(os.path.join(raw, f) for f in os.listdir(raw) if not f.startswith(".")
                       and f.lower().endswith(batch.MEDIA) and os.path.isfile(os.path.join(raw, f)))
        if not found:
            raise UsageError(f"{source}: no image, video or audio file in {raw}")
    elif _has_magic(raw):
        import glob  # (here: most runs have no --input)

        found = sorted(f for f in glob.glob(raw) if os.path.isfile(f))
        if not found:
            raise UsageError(f"{source}: the pattern matches no file")
    else:
        return None
    bases = [os.path.basename(f) for f in found]
    labels = bases if len(set(bases)) == len(bases) else found
    column = Column(f"{node}.{name}", node, name, True, source)
    return Axis(FILES, source, (column,), [(f,) for f in found], [_printable(x) for x in labels])


def rows(data):
    """A params.Rows -> Axis."""
    labels = [f"row {k}" for k in range(1, len(data.rows) + 1)]
    return Axis(ROWS, data.path, tuple(data.columns), data.rows, labels, data.lines, data.names)


def _value_labels(values):
    labels = [_text(v, LABEL_CHARS) for v in values]
    if len(set(labels)) < len(labels):  # cut short alike: number them
        labels = [f"#{k}" for k in range(1, len(values) + 1)]
    return labels


def _text(value, limit):
    text = value if isinstance(value, str) and value.strip() == value and value else json.dumps(value)
    text = _printable(text)
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def _printable(text):
    return "".join(c if c.isprintable() else "?" for c in text)


class Planned(Workflow):
    """One prompt of the plan: its name and values now, its graph when first asked for."""

    def __init__(self, template, index, name, values, sets, uploads, number=0):
        self.number = number  # which of the plan's workflow files it comes from
        self.path = template.path
        self.name = name
        self.ui = None
        self.values = values
        self.index = index
        self.uploads = uploads  # (node id, input, local path) the plan sets: uploaded before the POST
        self._template = template.graph
        self._sets = sets
        self._graph = None

    @property
    def graph(self):
        if self._graph is None:
            self._graph = build(self._template, self._sets)
        return self._graph


def build(template, sets):
    """The template's graph with `sets` ((node id, input, value)) applied: the nodes it changes
    are copied, the others shared (read-only from here on)."""
    graph = dict(template)
    for nid, name, value in sets:
        node = graph[nid]
        if node is template[nid]:
            node = graph[nid] = dict(node)
            node["inputs"] = dict(node.get("inputs", {}))
        node["inputs"][name] = value
    return graph


class Plan:
    """The batch's prompts by global index; `len(plan)` of them, each made when asked for."""

    def __init__(self, templates, axes=(), count=1, same_seed=False):
        self.templates = list(templates)
        self.axes = list(axes)
        self.count = count
        self.same_seed = same_seed
        self.labels = _unique([wf.name for wf in self.templates])
        self.nodes = _resolve(self.templates, self.axes)  # [template][axis][setting] -> node id or None
        self.prefixes = _prefixes(self.axes)
        self.seeded = [_seeded(wf.graph) for wf in self.templates]
        self._checked = {}  # workflow file number -> its check.check answer (for `problems`)
        self.sizes = [len(axis.choices) for axis in self.axes] + [count]
        self.per_template = 1
        for size in self.sizes:
            self.per_template *= size
        self.size = len(self.templates) * self.per_template
        if self.size > MAX_PROMPTS:
            raise UsageError(f"the batch would make {self.size} prompts; at most {MAX_PROMPTS} in one run "
                             "(split it with --shard or into several files)")

    @property
    def varies(self):
        """Does anything but the workflow files make prompts?"""
        return bool(self.axes) or self.count > 1

    def __len__(self):
        return self.size

    def __iter__(self):
        return (self[i] for i in range(self.size))

    def __getitem__(self, i):
        if not 0 <= i < self.size:
            raise IndexError(i)
        t, rest = divmod(i, self.per_template)
        ks = []
        for size in reversed(self.sizes):
            rest, k = divmod(rest, size)
            ks.append(k)
        ks.reverse()
        copy = ks.pop()
        values, sets, uploads, keys = {}, [], [], {}
        for axis, k, ids in zip(self.axes, ks, self.nodes[t]):
            for setting, value, nid in zip(axis.settings, axis.choices[k], ids):
                if nid is None or value is MISSING:
                    continue
                values[setting.key] = value
                keys[(nid, setting.input)] = setting.key
                sets.append((nid, setting.input, value))
                if setting.upload:
                    uploads.append((nid, setting.input, value))
        if self.count > 1 and not self.same_seed:
            self._seeds(t, copy, values, sets, keys)
        return Planned(self.templates[t], i, self._name(t, ks, copy), values, sets, uploads, t)

    def _seeds(self, t, copy, values, sets, keys):
        """Copy `copy` of a --count batch: every integer seed + copy."""
        graph = self.templates[t].graph
        given = {(nid, name): value for nid, name, value in sets}
        for nid, name, label in self.seeded[t]:
            seed = given.get((nid, name), graph[nid]["inputs"].get(name))
            if isinstance(seed, int) and not isinstance(seed, bool):
                values[keys.get((nid, name), label)] = seed + copy
                sets.append((nid, name, seed + copy))

    def _name(self, t, ks, copy):
        head, parts = self.labels[t], []
        for axis, k, prefix in zip(self.axes, ks, self.prefixes):
            if axis.kind == ROWS and axis.names[k] is not None:
                head = axis.names[k] if len(self.templates) == 1 else f"{head}/{axis.names[k]}"
            else:
                parts.append(prefix + axis.labels[k])
        name = f"{head}[{','.join(parts)}]" if parts else head
        return f"{name}#{copy + 1}" if self.count > 1 else name

    def select(self, shard=None):
        """The prompts of slice K of N ((K, N) or None: all), by global index."""
        if shard is None:
            return list(self)
        from comfy_cli.shard import indices

        return [self[i] for i in indices(self.size, *shard)]

    def problems(self, wf, object_info):
        """check.check of one planned prompt: its workflow file is checked once, then each prompt
        only in the nodes it changes (a 10,000-row dry run checks rows, not whole graphs)."""
        base = self._checked.get(wf.number)
        if base is None:
            base = self._checked[wf.number] = check.check(self.templates[wf.number].graph, object_info)
        changed = {nid for nid, _, _ in wf._sets}
        if not changed:
            return base
        return check.check(wf.graph, object_info, only=changed, known=base)

    def check_values(self, object_info):
        """Refuse, before anything is sent, a value the server's /object_info would refuse
        (as --dry-run checks a whole prompt), naming where it came from."""
        for t, wf in enumerate(self.templates):
            for axis, ids in zip(self.axes, self.nodes[t]):
                for j, (setting, nid) in enumerate(zip(axis.settings, ids)):
                    if nid is None or setting.upload:
                        continue
                    info = object_info.get(wf.graph[nid].get("class_type"))
                    for k, choice in enumerate(axis.choices):
                        problem = _problem(info, setting.input, choice[j])
                        if problem:
                            raise UsageError(f"{axis.where(k, setting)}: {wf.path}: node {nid} ({wf.title(nid)}) "
                                             f"input {setting.input!r}: {problem}")

    def digest(self):
        """What makes this batch this batch, for --journal: the workflows (after --set), every
        value of the data files and sweeps, --count."""
        h = hashlib.sha256()
        for label, wf in zip(self.labels, self.templates):
            h.update(json.dumps([label, wf.graph], sort_keys=True).encode())
        for axis in self.axes:
            h.update(json.dumps([axis.kind, axis.source, [s.key for s in axis.settings], axis.labels, axis.names],
                                default=repr).encode())
            for choice in axis.choices:
                h.update(json.dumps(choice, sort_keys=True, default=repr).encode())
        h.update(json.dumps([self.count, self.same_seed]).encode())
        return h.hexdigest()[:32]


def _problem(info, name, value):
    if value is MISSING:
        return None
    if not _json_safe(value):
        return "NaN or Infinity, which JSON does not allow"
    if not isinstance(info, dict):
        return None  # an unknown node type: the server's validation says so
    return check.value_problem(info, name, value)


def _resolve(templates, axes):
    """Per template, per axis, per setting: the node id it sets there (None: not in that file).
    A setting found in no workflow, ambiguous, or naming a missing input is refused."""
    out = [[[None] * len(axis.settings) for axis in axes] for _ in templates]
    for a, axis in enumerate(axes):
        for j, setting in enumerate(axis.settings):
            found = False
            for t, wf in enumerate(templates):
                ids, how = batch.find_node(wf.graph, setting.node)
                if not ids:
                    continue
                if len(ids) > 1:
                    raise UsageError(f"{setting.where}: {wf.path}: {how} {setting.node!r} matches nodes "
                                     f"{', '.join(ids)}; name one by id")
                inputs = wf.graph[ids[0]].get("inputs", {})
                if setting.input not in inputs:
                    have = ", ".join(sorted(inputs)) or "no inputs"
                    raise UsageError(f"{setting.where}: {wf.path}: node {ids[0]} ({wf.title(ids[0])}) has no input "
                                     f"{setting.input!r}; it has: {have}")
                out[t][a][j] = ids[0]
                found = True
            if not found:
                where = "any workflow" if len(templates) > 1 else templates[0].path
                raise UsageError(f"{setting.where}: no node {setting.node!r} in {where}; candidates: "
                                 f"{batch.candidates(templates)}")
    _once(templates, axes, out)
    return out


def _once(templates, axes, nodes):
    """One input varied by two factors would make the same prompts twice, or hide one."""
    for t, wf in enumerate(templates):
        seen = {}
        for a, axis in enumerate(axes):
            for setting, nid in zip(axis.settings, nodes[t][a]):
                if nid is None:
                    continue
                if (nid, setting.input) in seen:
                    raise UsageError(f"{setting.where}: {wf.path}: node {nid} input {setting.input!r} is already "
                                     f"varied by {seen[(nid, setting.input)]}")
                seen[(nid, setting.input)] = axis.source if axis.kind != ROWS else f"--params {axis.source}"


def _prefixes(axes):
    """What a sweep's value is shown after in a name: its input ("cfg="), or the whole
    NODE.INPUT when two sweeps share an input name."""
    inputs = [axis.settings[0].input for axis in axes if axis.kind == SWEEP]
    return [(axis.settings[0].input if inputs.count(axis.settings[0].input) == 1 else axis.settings[0].key) + "="
            if axis.kind == SWEEP else "" for axis in axes]


def _seeded(graph):
    """(node id, input, label) of every seed a --count copy moves."""
    counts = {}
    for node in graph.values():
        counts[node.get("class_type")] = counts.get(node.get("class_type"), 0) + 1
    out = []
    for nid, node in graph.items():
        for name in batch.SEED_INPUTS:
            if name in node.get("inputs", {}):
                kind = node.get("class_type")
                out.append((nid, name, f"{kind if counts[kind] == 1 else nid}.{name}"))
    return out


def _unique(labels):
    """The workflows' names, a repeated one numbered: a.json a.json -> a, a(2)."""
    out, seen = [], set()
    for label in labels:
        name, n = label, 1
        while name in seen:
            n += 1
            name = f"{label}({n})"
        seen.add(name)
        out.append(name)
    return out


def line(wf):
    """One line of a --dry-run listing: the name and the values that vary."""
    shown = " ".join(f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in wf.values.items())
    return f"{wf.name}\t{shown}" if shown else wf.name


def entry(wf):
    return {"index": wf.index, "name": wf.name, "workflow": wf.path, "values": wf.values}

