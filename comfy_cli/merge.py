"""`comfy-cli merge`: the shards of one batch (each a --output-dir with its manifest.jsonl) put
back together as if one run had made them.

Pure: takes each folder's manifest lines and answers with the batch's lines (every attempt of
each item's latest run, in batch order), what is missing, and the exit code `run` would give.
Reading, copying and writing files are the CLI's.

Each manifest line carries `plan` = {"fingerprint", "size", "shard"}: which batch it belongs to
(a hash of what shapes the batch), how many items the whole batch has, and the slice (K/N) the
run took. Shards of different batches or different N are refused; a slice no folder holds, or
an item missing from a slice, is named.
"""

from typing import List, NamedTuple

from comfy_cli import errors, report
from comfy_cli import shard as sh
from comfy_cli import tracker as tr
from comfy_cli.dispatch import Attempt
from comfy_cli.errors import UsageError

SHOWN_MISSING = 10  # item numbers named per incomplete slice


class Shard(NamedTuple):
    folder: str
    plan: str  # the batch's fingerprint
    k: int
    n: int
    size: int  # items in the whole batch
    lines: list  # [(line number, record)] of this slice, in file order


class Merged(NamedTuple):
    plan: str
    n: int
    size: int
    items: dict  # index -> [records of the winning run's attempts, in order]
    origin: dict  # index -> the folder those records came from
    gaps: List[str]  # "slice 3/8 absent: 125 prompts", ...
    exit_code: int


def split(folder, lines):
    """A folder's manifest lines [(line number, record)] -> its Shards (one per slice it holds;
    usually one). UsageError naming the folder and line if a line does not say its plan."""
    found = {}
    for number, record in lines:
        plan = record.get("plan")
        index = record.get("index")
        where = f"{folder}/manifest.jsonl line {number}"
        if not isinstance(plan, dict) or not isinstance(plan.get("fingerprint"), str):
            raise UsageError(f"{where}: no plan recorded (only `run` records one: written by `wait`, or by an "
                             "older comfy-cli?); merge the folders of `run --output-dir`")
        k_n = sh.k_of_n(str(plan.get("shard") or "1/1"))
        size = plan.get("size")
        if k_n is None or not isinstance(size, int) or size < 0:
            raise UsageError(f"{where}: the plan's shard or size is malformed: {plan!r}"[:300])
        k, n = k_n
        if not isinstance(index, int) or not 0 <= index < size or index % n != k - 1:
            raise UsageError(f"{where}: index {index!r} is not an item of slice {k}/{n} of {size}")
        key = (plan["fingerprint"], k, n, size)
        found.setdefault(key, []).append((number, record))
    return [Shard(folder, fp, k, n, size, got) for (fp, k, n, size), got in found.items()]


def combine(shards):
    """The Shards of one batch -> Merged. UsageError (exit 2) for shards of different batches."""
    if not shards:
        raise UsageError("no prompt in any manifest: nothing to merge")
    plans = {}
    for s in shards:
        plans.setdefault((s.plan, s.size), []).append(s.folder)
    if len(plans) > 1:
        said = "; ".join(f"{', '.join(_unique(folders))} (plan {fp[:12]}, {size} prompts)"
                         for (fp, size), folders in plans.items())
        raise UsageError(f"shards of different batches (other files, data or options): {said}; merge the "
                         "shards of one batch")
    ns = {s.n for s in shards}
    if len(ns) > 1:
        said = ", ".join(f"{s.folder} ({s.k}/{s.n})" for s in shards)
        raise UsageError(f"the shards split the batch differently: {said}; merge shards of one --shard K/N series")
    first = shards[0]
    items, origin = _latest(shards)
    gaps = _gaps(shards, first.n, first.size, items)
    codes = [report.exit_code(_prompt(attempts[-1])) for attempts in items.values()]
    codes += [errors.UNREACHABLE] if gaps else []
    return Merged(first.plan, first.n, first.size, dict(sorted(items.items())), origin, gaps, errors.worst(codes))


def _latest(shards):
    """Per item, the attempts of its latest run (the run whose last line ended last; on a tie,
    the folder given later): as with --journal, the later run of a prompt wins."""
    runs = {}  # index -> {(folder position, run): [(line number, record)]}
    for position, s in enumerate(shards):
        for number, record in s.lines:
            runs.setdefault(record["index"], {}).setdefault((position, record.get("run")), []).append(
                (number, record))
    items, origin = {}, {}
    for index, by_run in runs.items():
        def when(key):
            last = by_run[key][-1][1]
            return (str(last.get("ended") or ""), key[0], by_run[key][-1][0])

        best = max(by_run, key=when)
        items[index] = [record for _, record in by_run[best]]
        origin[index] = shards[best[0]].folder
    return items, origin


def _gaps(shards, n, size, items):
    held = {s.k for s in shards}
    gaps = []
    for k in range(1, n + 1):
        expected = sh.indices(size, k, n)
        if k not in held:
            if len(expected):
                gaps.append(f"slice {k}/{n} absent: {report._plural(len(expected), 'prompt')}")
            continue
        missing = [i for i in expected if i not in items]
        if missing:
            shown = ", ".join(str(i + 1) for i in missing[:SHOWN_MISSING]) + (", ..." if len(missing) > SHOWN_MISSING
                                                                               else "")
            gaps.append(f"slice {k}/{n}: {len(missing)} of {report._plural(len(expected), 'prompt')} missing "
                        f"(batch items {shown})")
    return gaps


def summary(merged, paths):
    """The `run --json` document of the merged batch. `paths(record, output)`: where an output
    file is now (None if it was not saved)."""
    prompts, servers = [], []
    # the keys of a prompt in `run --json` (a manifest line holds them and more), in its order
    keys = list(report.prompt_summary(_prompt({}), lambda p, item: None))
    for attempts in merged.items.values():
        for record in attempts:
            entry = {key: record.get(key) for key in keys}
            entry["outputs"] = [dict(out, path=paths(record, out)) for out in record.get("outputs") or ()]
            prompts.append(entry)
            if record.get("server") and record["server"] not in servers:
                servers.append(record["server"])
    doc = {"schema": report.SCHEMA, "server": servers[0] if servers else None, "exit_code": merged.exit_code}
    if len(servers) > 1:
        doc["servers"] = servers
    doc["prompts"] = prompts
    return doc


def prompts(merged):
    """Every attempt as (tracker Prompt, dispatch.Attempt): what report.junit_xml reads."""
    return [(_prompt(record), Attempt(index, record.get("attempt") or 1, record.get("server")))
            for index, attempts in merged.items.items() for record in attempts]


def _prompt(record):
    from comfy_cli.workflow import Workflow

    timings = record.get("timings") or {}
    return tr.ended_before(record.get("prompt_id") or "",
                           Workflow(record.get("workflow") or "", record.get("name") or "", {}),
                           record.get("status"), record.get("error"), number=record.get("number"),
                           times=(0.0, timings.get("queued_s"), timings.get("total_s")))


def _unique(items):
    return list(dict.fromkeys(items))

