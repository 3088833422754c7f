"""--expect DIR: where each output's expected file is, checking a prompt's outputs against
them, and --update-expected.

The layout (the one --update-expected writes):

    DIR/<prompt name>/<node>_<index><ext>          a file output: the node's index-th file (from 0)
    DIR/<prompt name>/<node>_<key>_<index>.txt     a text output: the index-th string of the node's
                                                   `key` list (e.g. "text")

Names are made safe as file names on every system: characters other than letters, digits and
` ._+-=,@()[]#` are written as %XX (so two names never share a folder), as are a leading dot
and trailing dots and spaces; a very long name is cut and ends with a hash of the whole.
`txt2img#2` is `DIR/txt2img#2/9_0.png`; node `12:5` is `12%3A5_0.png`.

An expected file is found by its stem: the output's own extension first, else any (a picture
that moved from PNG to WebP is still compared by its pixels). Every other file in the
prompt's folder is an expected output that was not produced. Without --update-expected nothing
in DIR is written; with it, outputs that are missing or differ are written (atomically),
expected files of outputs no longer produced are removed, and matching ones are left alone.
"""

import hashlib
import os
from types import SimpleNamespace
from typing import NamedTuple, Optional

from comfy_cli import compare
from comfy_cli.report import output_files, output_key

_KEEP = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ._+-=,@()[]#")
_NODE_KEEP = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{d}{i}" for d in ("COM", "LPT") for i in range(1, 10)}
MAX_NAME = 120

NO_EXPECTED = "no expected file: run once with --update-expected"

# Outcome statuses. The first four fail the prompt; the last three are --update-expected's.
MATCH, MISMATCH, MISSING, EXTRA, BROKEN = "match", "mismatch", "missing", "extra", "error"
ADDED, UPDATED, REMOVED = "added", "updated", "removed"
FAILING = frozenset({MISMATCH, MISSING, EXTRA, BROKEN})


def _escape(text, keep):
    return "".join(c if c in keep else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
                   for c in text)


def safe_name(name):
    """A prompt's name as one file name that is safe everywhere, and different for different names."""
    text = _escape(str(name), _KEEP)
    if text.startswith("."):
        text = "%2E" + text[1:]
    tail = len(text) - len(text.rstrip(". "))
    if tail:
        text = text[:len(text) - tail] + _escape(text[len(text) - tail:], ())
    if text.split(".")[0].upper() in _RESERVED:
        text = _escape(text[0], ()) + text[1:]
    if not text:
        text = "%00"  # (an empty name)
    if len(text) > MAX_NAME:
        text = text[:MAX_NAME - 17].rstrip(". ") + "~" + hashlib.sha256(str(name).encode("utf-8", "surrogatepass")
                                                                       ).hexdigest()[:16]
    return text


def node_name(node):
    return _escape(str(node), _NODE_KEEP)


class Entry(NamedTuple):
    """One output of a prompt to check: a file (`path`, where it was saved; None when it was
    not) or a text (`text`)."""

    node: str
    kind: str  # "image", "gif", "audio", "file", "text", ...: for the label
    index: int
    stem: str  # its expected file's name without the extension
    ext: str
    path: Optional[str] = None
    text: Optional[str] = None

    @property
    def label(self):
        return f"node {self.node} {self.kind} {self.index}"


def entries(outputs, saved, include_temp=False):
    """The outputs of a prompt to check, in order: its files (`saved`: output key -> the local
    path, or None if not saved), then its texts. `outputs`: the prompt's node -> UI dict."""
    found, per_node = [], {}
    for node, item in output_files(SimpleNamespace(outputs=outputs), include_temp):
        index = per_node.get(node, 0)
        per_node[node] = index + 1
        kind = _kind_of(outputs[node], item)
        ext = os.path.splitext(item.get("filename") or "")[1].lower()
        found.append(Entry(str(node), kind, index, f"{node_name(node)}_{index}", _safe_ext(ext),
                           path=saved.get(output_key(node, item))))
    for node, ui in outputs.items():
        if not isinstance(ui, dict):
            continue
        for key, value in ui.items():
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                for i, text in enumerate(value):
                    found.append(Entry(str(node), key, i, f"{node_name(node)}_{_escape(key, _NODE_KEEP)}_{i}",
                                       ".txt", text=text))
    return found


def _kind_of(ui, item):
    for key, value in ui.items():
        if isinstance(value, list) and any(v is item for v in value):
            return key[:-1] if key.endswith("s") and len(key) > 1 else key
    return "file"


def _safe_ext(ext):
    return ext if ext[1:].isalnum() and len(ext) <= 10 else ".bin"


class Outcome(NamedTuple):
    label: str  # "node 9 image 0"
    status: str  # MATCH, MISMATCH, MISSING, EXTRA, BROKEN, ADDED, UPDATED, REMOVED
    expected: str  # the expected file's path
    message: Optional[str] = None  # what differs, with the figures
    got: Optional[str] = None  # the saved output's path
    diff: Optional[str] = None  # the difference image's path
    mean: Optional[float] = None
    share: Optional[float] = None
    file: Optional[str] = None  # the expected file's path inside DIR ("NAME/9_0.png"), "/"-separated

    @property
    def failed(self):
        return self.status in FAILING

    def line(self):
        return f"{self.label}: {self.message}" if self.message else f"{self.label}: {self.status}"

    def as_dict(self):
        doc = {"output": self.label, "status": self.status, "expected": self.expected, "file": self.file,
               "got": self.got, "message": self.message}
        if self.diff:
            doc["diff"] = self.diff
        if self.mean is not None:
            doc["mean_difference"] = round(self.mean, 4)
            doc["pixels_off"] = round(self.share, 6)
        return doc


class Check(NamedTuple):
    """How to check: the folder, the tolerance, and what may be written."""

    root: str
    tolerance: compare.Tolerance = compare.DEFAULT
    update: bool = False  # --update-expected
    decode: bool = True  # decode images (False: bytes only)
    diffs: bool = True  # write a difference image beside each output that differs
    overwrite: bool = False  # a difference image may replace an existing file
    cpus: Optional[frozenset] = None  # where images may be decoded (compare.compare_files)


def check_prompt(check, name, found):
    """Check one prompt's outputs (`found`, from `entries`) against DIR/<name>/: one Outcome
    each, then one per expected file no output claimed. Does the file I/O (a worker's job)."""
    folder = os.path.join(check.root, safe_name(name))
    on_disk = _expected_files(folder)
    outcomes = []
    for entry in found:
        expected = _find(on_disk, entry)
        if expected is not None:
            on_disk.pop(expected)
        outcomes.append(_check_one(check, folder, entry, expected))
    for leftover in sorted(on_disk):
        path = os.path.join(folder, leftover)
        label = f"expected file {leftover}"
        if not check.update:
            outcomes.append(Outcome(label, EXTRA, path, "expected, but this run produced no such output"))
            continue
        try:
            os.unlink(path)
            outcomes.append(Outcome(label, REMOVED, path, "removed: this run produced no such output"))
        except OSError as exc:
            outcomes.append(Outcome(label, BROKEN, path, f"cannot remove: {exc.strerror or exc}"))
    return [o._replace(file=f"{safe_name(name)}/{os.path.basename(o.expected)}") for o in outcomes]


def _expected_files(folder):
    """{file name: its stem} of the expected files in a prompt's folder (hidden ones are not)."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return {n: os.path.splitext(n)[0] for n in names
            if not n.startswith(".") and os.path.isfile(os.path.join(folder, n))}


def _find(on_disk, entry):
    exact = entry.stem + entry.ext
    if exact in on_disk:
        return exact
    same_stem = sorted(n for n, stem in on_disk.items() if stem == entry.stem)
    return same_stem[0] if same_stem else None


def _check_one(check, folder, entry, name):
    """Compare one output with its expected file `name` (None: there is none); write it with
    --update-expected when it is missing or differs."""
    target = os.path.join(folder, name or entry.stem + entry.ext)
    if entry.text is None and entry.path is None:
        return Outcome(entry.label, BROKEN, target, "not saved, so not compared")
    if name is None:
        if check.update:
            return _write(check, entry, target, ADDED, "added")
        return Outcome(entry.label, MISSING, target, NO_EXPECTED, entry.path)
    try:
        result = _compare(check, entry, target)
    except OSError as exc:
        return Outcome(entry.label, BROKEN, target, f"cannot compare: {exc.strerror or exc}", entry.path)
    if result.same:
        return Outcome(entry.label, MATCH, target, None, entry.path, None, result.mean, result.share)
    if check.update:
        new_target = os.path.join(folder, entry.stem + entry.ext)
        done = _write(check, entry, new_target, UPDATED, f"updated (it had: {result.problem})")
        if new_target != target and done.status == UPDATED:
            try:
                os.unlink(target)  # the extension changed: the old file goes
            except OSError:
                pass
        return done
    diff = None
    if check.diffs and result.diff is not None:
        try:
            diff = compare.write_diff(result, entry.path, compare.diff_path(entry.path), check.overwrite)
        except OSError:
            diff = None  # a difference image is a help, not the verdict
    return Outcome(entry.label, MISMATCH, target, result.problem, entry.path, diff, result.mean, result.share)


def _compare(check, entry, target):
    if entry.text is not None:
        with open(target, "rb") as fh:
            expected = fh.read().decode("utf-8", "replace")
        if expected == entry.text:
            return compare.Result(True, "text")
        return compare.Result(False, "text", f"the text differs: expected {_short(expected)}, got {_short(entry.text)}")
    return compare.compare_files(target, entry.path, check.tolerance, check.decode, check.cpus)


def _short(text, limit=60):
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _write(check, entry, target, status, message):
    from comfy_cli.outputs import write_new

    def fill(fh):
        if entry.text is not None:
            fh.write(entry.text.encode("utf-8"))
        else:
            with open(entry.path, "rb") as src:
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    fh.write(chunk)

    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        write_new(target, fill, overwrite=status == UPDATED)
    except OSError as exc:
        return Outcome(entry.label, BROKEN, target, f"cannot write the expected file: {exc.strerror or exc}",
                       entry.path)
    return Outcome(entry.label, status, target, message, entry.path)


class ForRun:
    """--expect for one run: the check, where outputs are saved without --output-dir (a
    temporary folder, removed at the end unless something differed), and what to say."""

    def __init__(self, root, tolerance=None, update=False, output_dir=None, overwrite=False, include_temp=False):
        import tempfile

        self.pillow = compare.pillow() is not None
        self.check = Check(root, tolerance or compare.DEFAULT, update, decode=self.pillow, overwrite=overwrite,
                           cpus=compare.cpus_allowed())  # (made before the run keeps to one CPU)
        self.include_temp = include_temp
        self.scratch = None if output_dir else tempfile.mkdtemp(prefix="comfy-cli-expect-")
        self.kept = False  # the temporary folder is kept (something differed)

    def start_notes(self):
        if self.pillow:
            return []
        return ["note: Pillow is not installed, so images are compared byte for byte; "
                "pip install 'comfy-run-cli[images]' to compare their pixels within --tolerance"]

    def job(self, prompt, saved):
        """The arguments of jobs.compare for a prompt (`saved`: its output key -> local path)."""
        return self.check, prompt.workflow.name, entries(prompt.outputs, saved, self.include_temp), prompt.prompt_id

    @staticmethod
    def changes(prompt):
        """--update-expected: what it wrote or removed for this prompt, one line each."""
        return [f"{prompt.workflow.name}: {o.label}: {o.status} {o.expected}" for o in prompt.checked or ()
                if o.status in (ADDED, UPDATED, REMOVED)]

    @staticmethod
    def diffs(prompt):
        """Where the difference images of a prompt's mismatches are, one line each."""
        return [f"{prompt.workflow.name}: {o.label}: difference image {o.diff}" for o in prompt.checked or () if o.diff]

    def finish(self, prompts):
        """At the end: lines to say, and the temporary folder removed unless a prompt differed."""
        outcomes = [o for p in prompts for o in p.checked or ()]
        lines = []
        if self.check.update:
            counts = {s: sum(o.status == s for o in outcomes) for s in (ADDED, UPDATED, REMOVED)}
            if any(counts.values()):
                lines.append(f"--update-expected: {counts[ADDED]} added, {counts[UPDATED]} updated, "
                             f"{counts[REMOVED]} removed in {self.check.root}")
            else:
                lines.append(f"--update-expected: nothing to change in {self.check.root}")
        return lines + self.abandon(prompts)

    def abandon(self, prompts):
        """The temporary folder removed unless a prompt differed (then a line says where it is
        kept). Also for a run that stops at once, without its other closing lines."""
        if not self.scratch or self.kept:
            return []
        if any(o.failed for p in prompts for o in p.checked or ()):
            self.kept = True
            return [f"outputs and difference images are kept in {self.scratch} (add --output-dir DIR to choose "
                    "the folder)"]
        import shutil

        shutil.rmtree(self.scratch, ignore_errors=True)
        return []

    def folder(self):
        """The temporary folder outputs are saved in (no --output-dir), or None."""
        return self.scratch

    def folder_gone(self):
        """The temporary folder was removed (finish, abandon): nothing may point into it."""
        return bool(self.scratch) and not self.kept
