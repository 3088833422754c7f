"""--report FILE during a run: the page is rewritten by a worker of its own, at the pace of
`htmlreport.Pace` and never two rewrites at once, then once more at the end (main thread)."""

import os
import threading
import time

from comfy_cli.errors import redact


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

    def start(self):
        self.worker.start()

    def last(self, meta):
        """The run is over: the page a last time (main thread); None, or why it could not be written."""
        self.write(list(self.records), meta)
        return self.problem

    def stop(self):
        self.worker.stop()
        self.worker.join(30)  # (an older page must not replace the last one)


def meta(opts, paths, servers, total, wall_started, seconds, code=None, running=None, queued=None):
    """What the page says besides the prompts' lines (made on the main thread). `opts`: the
    run's Options; `paths`: the workflow files; `servers`: their base URLs; `total`: how many
    prompts the run has; `code`: the exit code once the run is over (None: still running)."""

    def clock(t):
        return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(t))

    def way_to(folder):  # from the page to a folder, as a relative link prefix
        rel = os.path.relpath(os.path.abspath(folder), os.path.dirname(os.path.abspath(opts.report)))
        return "" if rel == "." else rel.replace(os.sep, "/") + "/"

    names = sorted(set(paths))
    title = "comfy-cli report: " + ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return {"title": redact(title), "finished": code is not None, "exit_code": code, "wall_s": seconds,
            "servers": list(servers), "total": total, "started": clock(wall_started), "updated": clock(time.time()),
            "files": way_to(opts.output_dir) if opts.output_dir else None,
            "expected": way_to(opts.expect) if opts.expect else None, "refresh": 5, "running": running,
            "queued": queued}
