"""--report FILE during a run: the page is rewritten by a worker of its own, at the pace of
`htmlreport.Pace` and never two rewrites at once, then once more at the end (main thread)."""

import threading
import time


class LiveReport:
    def __init__(self, path, worker):
        from comfy_cli.htmlreport import Pace

        self.path = path
        self.worker = worker
        self.pace = Pace()
        self.idle = threading.Event()  # no rewrite in progress (set by the worker)
        self.idle.set()
        self.took = 0.0  # how long the last rewrite took
        self.problem = None  # why the last write failed
        self.records = []  # what the page shows of the manifest line of every prompt that ended

    def add(self, doc):
        """A prompt's manifest line: what the page shows of it (a long batch keeps one per prompt)."""
        from comfy_cli.htmlreport import FIELDS

        self.records.append({k: doc.get(k) for k in FIELDS})

    def resting(self, now):
        """No rewrite may start now (one is being made, or the last was too recent)."""
        return not self.idle.is_set() or (self.pace.at is not None and now < self.pace.at)

    def due(self, now, running, open_count):
        """Does the page need rewriting, the run being where these numbers say?"""
        return self.pace.due(now, (len(self.records), running, open_count), self.took)

    def rewrite(self, meta):
        """On the worker: the page as it is now."""
        self.idle.clear()
        self.worker.put(self.write, list(self.records), meta)

    def write(self, records, meta):
        """Render the page and put it in place atomically."""
        from comfy_cli.htmlreport import render
        from comfy_cli.outputs import write_new

        began = time.monotonic()
        try:
            text = render(records, meta).encode("utf-8")
            write_new(self.path, lambda fh: fh.write(text), overwrite=True)
            self.problem = None
        except OSError as exc:
            self.problem = f"--report {self.path}: cannot write: {exc.strerror or exc}"
        finally:
            self.took = time.monotonic() - began
            self.idle.set()

    def stop(self):
        self.worker.stop()
        self.worker.join(30)  # (an older page must not replace the last one)
