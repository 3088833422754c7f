"""--output-dir DIR: DIR/manifest.jsonl, one JSON line per prompt, written as each one ends.

Each line says what made the prompt (workflow file, name, the values that make it unique) and
what came of it (status, timings, per-node timings, error, the files saved, by paths relative
to DIR), so a script, `jq`, or the HTML report can join every file to its values. Lines are
appended and flushed one by one (by a worker: the run's loop does no I/O): a killed run leaves
a valid prefix (a line cut short at the very end is dropped by the next run that appends); the
file is fsynced once, when the run closes it (a line per fsync would cost a disk flush per
prompt; a crash of the machine mid-run loses at most the lines since the OS last wrote). A
run taken up from its --journal appends only the prompts it adds. Lines of one run share
`run`; an item retried (--retry) has one line per attempt, the last one its outcome.
"""

import json
import os
import stat

from comfy_cli import report
from comfy_cli.errors import UsageError

SCHEMA = "comfy-cli.manifest/1"
NAME = "manifest.jsonl"


def record(prompt, index, run, saved, output_dir, view_url, include_temp=False, plan=None, ended=None, attempt=None):
    """The manifest line of a prompt that ended (a plain dict; pure). `saved`: {output key:
    local path or None}; `output_dir`: what paths are made relative to (None: no folder).
    `plan`: {"fingerprint", "size", "shard"}, the batch and the slice this run took (what
    `merge` joins shards by); `ended`: the wall-clock time (UTC, ISO 8601) it ended; `attempt`:
    its dispatch.Attempt (which try, which server)."""
    doc = report.prompt_summary(prompt, view_url, include_temp, saved, attempt)
    for out in doc["outputs"]:
        if out["path"] is not None and output_dir is not None:
            out["path"] = os.path.relpath(out["path"], output_dir).replace(os.sep, "/")
    lines = report.failure_lines(prompt)
    message = " ".join(lines)
    head = f"{prompt.workflow.name}: "
    return {
        "schema": SCHEMA,
        "run": run,
        "plan": plan,
        "ended": ended,
        "index": index,
        "name": doc["name"],
        "workflow": doc["workflow"],
        "values": dict(prompt.workflow.values),
        "attempt": doc["attempt"],
        "prompt_id": doc["prompt_id"],
        "server": doc["server"],
        "status": doc["status"],
        "message": (message[len(head):] if message.startswith(head) else message) or None,
        "timings": doc["timings"],
        "node_timings": doc["node_timings"],
        "nodes": doc["nodes"],
        "outputs": doc["outputs"],
        "error": doc["error"],
        "warnings": doc["warnings"],
        "ui": doc["ui"],
        **({"expected": _expected(doc["expected"], output_dir)} if "expected" in doc else {}),
    }


def _expected(outcomes, output_dir):
    """--expect's outcomes, with the saved output and its difference image relative to DIR."""
    out = []
    for o in outcomes:
        o = dict(o)
        for key in ("got", "diff"):
            if o.get(key) and output_dir is not None:
                o[key] = os.path.relpath(o[key], output_dir).replace(os.sep, "/")
        out.append(o)
    return out


class Manifest:
    """The file, opened for appending. `earlier`: prompt id -> the lines already in it."""

    def __init__(self, folder):
        self.path = os.path.join(folder, NAME)
        self.earlier = {}
        self.problem = None  # the first write that failed (said once, at the end)
        try:
            self._fh = open(self.path, "a+b")
            if not stat.S_ISREG(os.fstat(self._fh.fileno()).st_mode):
                self._fh.close()
                raise UsageError(f"--output-dir {folder}: {NAME} is not a regular file")
            self._read()
        except OSError as exc:
            raise UsageError(f"--output-dir {folder}: cannot write {NAME}: {exc.strerror or exc}") from None

    def _read(self):
        fh = self._fh
        fh.seek(0)
        data = fh.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a line cut short by a kill: what it said never got written
            fh.truncate(end)
        for line in data[:end].splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("prompt_id"), str):
                self.earlier[doc["prompt_id"]] = doc

    def earlier_line(self, prompt_id):
        """The line an earlier run wrote for this prompt, or None."""
        return self.earlier.get(prompt_id)

    def failure(self):
        """Why a line could not be written, or None."""
        return self.problem

    def write(self, doc):
        """Append one line (run on a worker)."""
        if self.problem is not None:
            return
        try:
            self._fh.write(json.dumps(doc, separators=(",", ":"), default=str).encode() + b"\n")
            self._fh.flush()
        except (OSError, ValueError) as exc:
            self.problem = f"cannot write {self.path}: {getattr(exc, 'strerror', None) or exc}"

    def close(self):
        try:
            try:
                self._fh.flush()
                os.fsync(self._fh.fileno())
            finally:
                self._fh.close()
        except OSError as exc:
            self.problem = self.problem or f"cannot write {self.path}: {exc.strerror or exc}"


def read(path):
    """Every line of a manifest, as dicts (lines that are not JSON objects are skipped)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                out.append(doc)
    return out
