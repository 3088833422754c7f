"""--journal FILE: what was submitted where and how each prompt ended, so that a batch can be
taken up again after the CLI itself was killed.

The file is NDJSON, appended to and fsynced line by line: a header naming the batch, then
`submit` lines (written *before* the POST leaves, so a crash right after sending still knows
the prompt id), `output` lines (a file handled: a resumed run does not fetch it twice) and
`end` lines (written once a prompt is settled, with its outputs, so a resumed run's summary
still lists them and where they were saved). Reading it back gives, per
batch item, its last known attempt: ended (done, not run again), submitted but not ended (it
is looked for on its server: followed if there, sent again with the same id if it never
arrived), or nothing (submitted as new).
"""

import json
import os
import threading

from comfy_cli import errors
from comfy_cli.errors import UsageError

FORMAT = "comfy-cli.journal/1"
# What in a line comes from the server (its error text, outputs, file names), and may hold a
# secret it echoes: redacted as the terminal is. Ids and the batch's fingerprint are ours.
SERVER_TEXT = ("error", "outputs", "key", "path")


class Journal:
    def __init__(self, path, fingerprint, client_id):
        """Open (or start) the journal at `path` for the batch `fingerprint`; refuse another
        batch's journal. `client_id` is kept from the first run, so prompts still running send
        their progress to the resumed run's socket."""
        self.path = path
        self.items = {}  # item -> the last submit or end record about it (a dict)
        self.outputs = {}  # prompt id -> {output key: local path or None}: files already handled
        self.client_id = client_id
        self._lock = threading.Lock()  # submitters and the journal worker write from their threads
        existing = self._read(fingerprint)
        try:
            self._fh = open(path, "a", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--journal {path}: cannot write: {exc.strerror or exc}") from None
        if not existing:
            self._write({"journal": FORMAT, "batch": fingerprint, "client_id": client_id})

    def last(self, item):
        """The last submit or end record about batch item `item` (a dict), or None."""
        return self.items.get(item)

    def handled(self, prompt_id):
        """{output key: local path or None}: the files of `prompt_id` an earlier run handled."""
        return dict(self.outputs.get(prompt_id, {}))

    def _read(self, fingerprint):
        if os.path.isdir(self.path):
            raise UsageError(f"--journal {self.path}: is a directory")
        try:
            with open(self.path, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except FileNotFoundError:
            return False
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--journal {self.path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
        if not lines:
            return False
        records = []
        for n, line in enumerate(lines, 1):
            try:
                records.append(json.loads(line))
            except ValueError:
                if n == len(lines):
                    break  # a line cut short by a crash: what it said never happened
                raise UsageError(f"--journal {self.path}: line {n} is not JSON; not a comfy-cli journal?") from None
        head = records[0] if records else {}
        if not isinstance(head, dict) or head.get("journal") != FORMAT:
            raise UsageError(f"--journal {self.path}: not a comfy-cli journal")
        if head.get("batch") != fingerprint:
            raise UsageError(f"--journal {self.path}: it records another batch (other files, options or servers); "
                             "use a new journal file")
        self.client_id = head.get("client_id") or self.client_id
        for record in records[1:]:
            if not isinstance(record, dict) or not isinstance(record.get("item"), int):
                continue
            if record.get("event") == "output" and isinstance(record.get("key"), list):
                self.outputs.setdefault(record.get("prompt_id"), {})[tuple(record["key"])] = record.get("path")
            else:
                self.items[record["item"]] = record
        return True

    def _write(self, record):
        record = {k: errors.redact_obj(v) if k in SERVER_TEXT else v for k, v in record.items()}
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def submitted(self, prompt, attempt):
        """Its POST is about to leave; `attempt`: its dispatch.Attempt (item, number, server)."""
        self._write({"item": attempt.item, "attempt": attempt.number, "prompt_id": prompt.prompt_id,
                     "server": attempt.server, "event": "submit"})

    def output(self, prompt, attempt, key, path):
        """An output file was handled (downloaded to `path`, or its URL shown): not again."""
        self._write({"item": attempt.item, "prompt_id": prompt.prompt_id, "event": "output", "key": list(key),
                     "path": path})

    @staticmethod
    def end_record(prompt, attempt):
        """The `end` line, made on the main thread (the prompt may change once it is queued)."""
        return {"item": attempt.item, "attempt": attempt.number, "prompt_id": prompt.prompt_id,
                "server": attempt.server, "event": "end", "status": prompt.status, "error": prompt.error,
                "outputs": dict(prompt.outputs)}

    def ended(self, record):
        self._write(record)

    def close(self):
        self._fh.close()


def fingerprint(workflows, servers, options):
    """What makes a batch this batch: every prompt's graph and name, the servers, and the
    options that change what is sent."""
    import hashlib

    digest = hashlib.sha256()
    for wf in workflows:
        digest.update(wf.name.encode())
        digest.update(json.dumps(wf.graph, sort_keys=True).encode())
    digest.update(json.dumps([list(servers), options], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]
