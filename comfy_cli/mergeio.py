"""`comfy-cli merge`, its edges: read the shards' manifests, copy their files (--output-dir),
write the merged manifest, JUnit, HTML report and JSON summary. What is merged how is decided in
merge.py (pure); this reads and writes."""

import json
import os
import shutil

from comfy_cli import errors, merge, report
from comfy_cli.errors import UsageError
from comfy_cli.manifest import NAME
from comfy_cli.outputs import write_new


def execute(folders, output_dir=None, html=None, junit=None, json_out=False, overwrite=False, out=None, err=None):
    """Merge the shard folders (`distinct`; `output_dir` made by `prepare`); write what was asked;
    return the exit code `run` would give."""
    shards = []
    for folder in folders:
        lines = read_folder(folder)
        if not lines:
            err.write(f"comfy-cli: note: {folder}: its {NAME} holds no prompt yet\n")
        shards.extend(merge.split(folder, lines))
    merged = merge.combine(shards)
    where, missing = _files(merged, output_dir, err)
    for gap in merged.gaps:
        err.write(f"comfy-cli: {gap}\n")
    code = errors.worst([merged.exit_code] + ([errors.UNREACHABLE] if missing else []))

    def now(record, output):
        return where.get((merged.origin[record["index"]], output.get("path")))

    problems = []
    if output_dir is not None:
        records = [_moved(r, now, output_dir) for r in _records(merged)]
        text = "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in records)
        problems += _write("--output-dir", os.path.join(output_dir, NAME), text, overwrite)
    if junit is not None:
        attempts = merge.prompts(merged)
        took = sum(p.ended_at or 0.0 for p, _ in attempts)
        problems += _write("--junit", junit, errors.redact(report.junit_xml(attempts, took)), overwrite)
    if html is not None:
        problems += _write("--report", html, _html(merged, now, html, code), overwrite)
    for problem in problems:
        err.write(f"comfy-cli: {problem}\n")
    if problems:
        code = errors.worst([code, errors.UNREACHABLE])  # a report that was asked for is missing
    finals = [attempts[-1] for attempts in merged.items.values()]
    saved = [p for p in where.values() if p is not None]
    err.write(report.summary_line([_Status(r["status"]) for r in finals], len(saved), None)
              + f" (merged from {report._plural(len(shards), 'shard')}; the batch has {merged.size})\n")
    if json_out:
        doc = merge.summary(merged, now)
        doc["exit_code"] = code
        report.write_json(out, doc)
    else:
        for path in saved:
            out.write(path + "\n")
    out.flush()
    return code


class _Status:
    def __init__(self, status):
        self.status = status


def distinct(folders):
    """Each folder once (the same folder given twice is one shard, not two)."""
    seen, out = set(), []
    for folder in folders:
        key = os.path.realpath(folder)
        if key not in seen:
            seen.add(key)
            out.append(folder)
    return out


def prepare(output_dir, folders, overwrite):
    """Make --output-dir; refuse a shard's own folder and a merged manifest already there."""
    real = os.path.realpath(output_dir)
    if any(os.path.realpath(f) == real for f in folders):
        raise UsageError(f"--output-dir {output_dir}: is one of the shards; give a new folder")
    if os.path.exists(os.path.join(output_dir, NAME)) and not overwrite:
        raise UsageError(f"--output-dir {output_dir}: holds a {NAME} already; add --overwrite to replace it")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--output-dir {output_dir}: cannot create: {exc.strerror or exc}") from None


def _records(merged):
    for attempts in merged.items.values():
        yield from attempts


def _files(merged, output_dir, err):
    """(folder, path in its manifest) -> where the file is now (copied into `output_dir` if
    given), or None; and whether a file a manifest names is missing."""
    where, missing = {}, False
    for record in _records(merged):
        folder = merged.origin[record["index"]]
        for output in record.get("outputs") or ():
            key = (folder, output.get("path"))
            if key in where or output.get("path") is None:
                continue
            src = inside(folder, output["path"])
            if src is None:
                err.write(f"comfy-cli: {folder}: {output['path']!r} ({record.get('name')}) is not there\n")
                where[key], missing = None, True
                continue
            where[key] = src if output_dir is None else _copy(src, output_dir, output["path"])
    return where, missing


def _copy(src, output_dir, rel):
    """Copy a shard's file to the same relative path in `output_dir` (a name taken by another
    file gets a numbered suffix, as a run's downloads do; the very same file is kept)."""
    dst = os.path.join(output_dir, *rel.split("/"))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(src, "rb") as fh:
        return write_new(dst, lambda out: shutil.copyfileobj(fh, out), numbered=True, reuse_same=True)


def _moved(record, now, output_dir):
    """A merged manifest line: its files' paths relative to `output_dir`; the whole batch's."""
    doc = dict(record)
    doc["outputs"] = [dict(o, path=_rel(now(record, o), output_dir)) for o in record.get("outputs") or ()]
    doc["plan"] = dict(record["plan"], shard="1/1")
    return doc


def _rel(path, folder):
    return None if path is None else os.path.relpath(path, folder).replace(os.sep, "/")


def _html(merged, now, html, code):
    from comfy_cli.htmlreport import render

    here = os.path.dirname(os.path.abspath(html))
    records = [_moved(r, now, here) for r in _records(merged)]
    servers = list(dict.fromkeys(r.get("server") for r in records if r.get("server")))
    meta = {"title": "comfy-cli merge", "finished": True, "exit_code": code, "servers": servers,
            "total": merged.size, "files": ""}
    return render(records, meta)


def _write(option, path, text, overwrite):
    try:
        write_new(path, lambda fh: fh.write(text.encode("utf-8")), overwrite)
    except FileExistsError:
        return [f"{option} {path}: the file exists; add --overwrite to replace it"]
    except OSError as exc:
        return [f"{option} {path}: cannot write: {exc.strerror or exc}"]
    return []
def read_folder(folder):
    """A shard folder's manifest lines [(line number, record)]. UsageError if there is none."""
    path = os.path.join(folder, NAME)
    if not os.path.isdir(folder):
        raise UsageError(f"{folder}: no such folder")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise UsageError(f"{folder}: no {NAME} in it (give the --output-dir folders of the shards' runs)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    lines = []
    rows = text.split("\n")
    for number, row in enumerate(rows, 1):
        if not row.strip():
            continue
        try:
            record = json.loads(row)
        except ValueError:
            if number == len(rows):
                break  # a line cut short by a kill: it never got written
            raise UsageError(f"{path}: line {number} is not JSON; not a comfy-cli manifest?") from None
        if not isinstance(record, dict):
            raise UsageError(f"{path}: line {number} is not a JSON object; not a comfy-cli manifest?")
        lines.append((number, record))
    return lines


def inside(folder, rel):
    """`folder`/`rel` if `rel` is a plain relative path that stays inside `folder`, else None (a
    manifest is data: a path in it must not reach out of its shard)."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or "\\" in rel or "\0" in rel:
        return None
    if ".." in rel.split("/"):
        return None
    path = os.path.join(folder, *rel.split("/"))
    root = os.path.realpath(folder)
    real = os.path.realpath(path)
    return path if real.startswith(root + os.sep) and os.path.isfile(real) else None
