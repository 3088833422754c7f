"""Each ended prompt's manifest line (--output-dir's manifest.jsonl, --report's page).

The line is made on the main thread when a prompt is reported (manifest.record, pure), kept for
the live report and handed to the manifest's own worker, which appends it.
"""

import datetime

from comfy_cli import errors
from comfy_cli.manifest import record


class Records:
    def __init__(self, manifest, worker, live, opts, run_id, saved, places, view_url, attempt):
        """`manifest`/`worker`: the file and its writer (None without --output-dir); `live`: the
        --report page (or None); `saved(prompt_id)`: a prompt's files; `places`: prompt id ->
        index for prompts followed (not a batch's); `view_url(prompt, item)`: an output's URL;
        `attempt(prompt)`: its dispatch.Attempt (item, try, server)."""
        self.manifest, self.worker, self.live = manifest, worker, live  # where lines go
        self.opts, self.run_id = opts, run_id
        self.saved, self.places, self.view_url = saved, places, view_url  # what it asks the run
        self.attempt = attempt
        self.wanted = manifest is not None or live is not None

    def start(self):
        if self.worker is not None:
            self.worker.start()

    def close(self):
        """Every line written, then the file closed."""
        if self.manifest is not None:
            self.worker.stop()
            self.worker.join(10)
            self.manifest.close()

    def problem(self):
        """Why a line could not be written, or None."""
        return self.manifest.failure() if self.manifest is not None else None

    def add(self, prompt):
        """A prompt ended: its line, kept for the report and handed to the writer."""
        if not self.wanted:
            return
        attempt = self.attempt(prompt)
        index = attempt.item if attempt.item is not None else self.places.get(prompt.prompt_id)
        ended = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")
        doc = errors.redact_obj(record(prompt, index, self.run_id, self.saved(prompt.prompt_id), self.opts.output_dir,
                                       self.view_url, self.opts.include_temp, self.opts.plan, ended, attempt))
        if self.live is not None:
            self.live.add(doc)
        # (A killed run may have written a line it did not journal: not twice.)
        if self.manifest is not None and self.manifest.earlier_line(prompt.prompt_id) is None:
            self.worker.put(self.manifest.write, doc)

    def earlier(self, prompts):
        """A run taken up from its journal: the prompts that ended before keep their lines (a
        line the killed run had no time to write is written now)."""
        if self.manifest is None:
            return
        for prompt in prompts:
            if prompt.settled and self.attempt(prompt).item is not None:
                doc = self.manifest.earlier_line(prompt.prompt_id)
                if doc is None:
                    self.add(prompt)
                elif self.live is not None:
                    self.live.add(doc)
