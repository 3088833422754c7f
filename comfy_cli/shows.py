"""The supervisor's view commands, carried out on the main thread: the bars or lines, --events,
and what a prompt's end hands to the writers (its journal lines, its manifest line).

Nothing here decides: each command is shown as it is. Only writers' workers do the file I/O.
"""

from comfy_cli import report
from comfy_cli import view as views


class Shows:
    def __init__(self, view, stream, opts, several, records, attempt, expecting=None, journal=None,
                 journal_put=None):
        """`stream`: the --events writer or None; `opts`: the run's Options (json, output_dir,
        verbose); `several`: the run has several servers (lines name the server); `records`:
        the manifest lines (records.Records); `attempt(prompt)`: its dispatch.Attempt (item,
        try, server); `journal_put(fn, *args)`: the journal's worker."""
        self.view, self.stream, self.opts, self.several = view, stream, opts, several
        self.attempt = attempt
        self.records, self.expecting = records, expecting  # what a prompt's end goes to
        self.journal, self.journal_put = journal, journal_put
        self.urls = 0  # /view URLs printed on stdout

    def urls_printed(self):
        """How many /view URLs went to stdout (a --simulate run says they die with it)."""
        return self.urls

    def added(self, server, c):
        prompt = c.prompt
        attempt = self.attempt(prompt)
        self.view.added(prompt, attempt.server)
        if self.several and isinstance(self.view, views.LinesView):
            which = f" (attempt {attempt.number})" if attempt.number > 1 else ""
            self.view.note(f"{prompt.workflow.name}: sent to {attempt.server}{which}")
        if self.stream:
            self.stream.added(prompt, attempt)

    def changed(self, server, c):
        self.view.update(c.prompt)
        if self.stream:
            self.stream.update(c.prompt)

    def output(self, server, c):
        attempt = self.attempt(c.prompt)
        if self.journal is not None and attempt.item is not None:
            self.journal_put(self.journal.output, c.prompt, attempt, report.output_key(c.node, c.item), c.path)
        if self.stream:
            self.stream.output(c.prompt, c.node, c.item, server.view_url(c.item), c.path)
        elif not self.opts.json and (c.path or not self.opts.output_dir):
            shown = c.path if self.opts.output_dir else None  # (--expect's temporary folder: URLs, as without)
            self.view.result(shown or server.view_url(c.item))
            self.urls += shown is None

    def report(self, server, c):
        prompt = c.prompt
        self.records.add(prompt)
        attempt = self.attempt(prompt)
        if self.journal is not None and attempt.item is not None:
            self.journal_put(self.journal.ended, self.journal.end_record(prompt, attempt))
        self.view.update(prompt)
        for line in report.failure_lines(prompt, self.opts.verbose):
            self.view.note(line)
        if prompt.checked:
            for line in self.expecting.changes(prompt) + self.expecting.diffs(prompt):
                self.view.note(line)
        if self.stream:
            self.stream.finished(prompt)

    def note(self, server, c):
        self.view.note(f"{server.name}: {c.text}" if self.several and server is not None
                       and not c.text.startswith(server.name) else c.text)

    def mode(self, server, c):
        text = f"{server.name}: {c.text}" if self.several and server is not None else c.text
        self.view.transport(text, c.polling)
        if self.stream:
            self.stream.transport(text, c.polling)
