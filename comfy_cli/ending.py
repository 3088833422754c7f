"""What a run says and writes once its loop is over (main thread, after the workers stopped):
the end notes, --junit, the last --report page, --expect's closing lines, the summary line,
--json or --events' summary; and the exit code. What it all amounts to is summary.py's (pure)."""

from comfy_cli import report, runfiles
from comfy_cli import summary as sm


class Ending:
    def __init__(self, view, out, err, stream, opts, records, live=None, expecting=None, downloading=False):
        """`records`: the manifest lines (records.Records); `live`: the --report page;
        `downloading`: outputs are saved to a folder (else they are listed by URL)."""
        self.view, self.out, self.err, self.stream = view, out, err, stream  # where it says things
        self.records, self.live, self.expecting = records, live, expecting  # the files it may write
        self.opts, self.downloading = opts, downloading

    def line(self, end, seconds):
        return sm.line(end, self.downloading, seconds)

    def finish(self, end, fatal, seconds, view_url, meta):
        """Say and write it all; return the exit code. `fatal`: why the run broke off, or None;
        `view_url(prompt, item)`: an output's URL; `meta(code)`: the --report page's meta."""
        opts = self.opts
        for line in sm.left_behind(end):
            self.view.note(line)
        missing = []  # what was asked for and could not be written
        problem = self.records.problem()
        if problem:
            missing.append(f"--output-dir: {problem}")
            self.view.note(missing[-1])
        if opts.junit:
            problem = runfiles.write_junit(opts.junit, end.attempts, seconds, opts.overwrite)
            if problem:
                missing.append(problem)
                self.view.note(problem)
        if self.live is not None:
            problem = self.live.last(meta(self._code(end, fatal, missing)))
            if problem:
                missing.append(problem)
                self.view.note(problem)
        code = self._code(end, fatal, missing)
        for line in self.expecting.finish(end.finals) if self.expecting else ():
            self.view.note(line)
        if fatal is None and not opts.submit_only:  # (`submit` says what it sent itself)
            self.err.write(self.line(end, seconds) + "\n")
            self.err.flush()
        if opts.json or self.stream:
            self._summary(end, code, view_url)
        return code

    def _code(self, end, fatal, missing):
        return sm.exit_code(end.finals, end.outcomes, self.opts.submit_only, bool(missing) or fatal is not None)

    def _summary(self, end, code, view_url):
        """--json's document, or --events' last line."""
        saved = sm.saved(end)
        if self.expecting and self.expecting.folder_gone():
            saved = {}  # (the temporary folder is gone: no paths into it)
        doc = report.summary(end.attempts, view_url, end.names, code, self.opts.include_temp, saved,
                             lazy=not self.stream)
        if self.stream:
            self.stream.summary(doc)
        else:
            report.write_json(self.out, doc)
            self.out.flush()
