"""The files a run writes besides its outputs' downloads: opened before it starts (--output-dir
and its manifest, --expect, --report, each writer with a worker of its own) and, at the end,
--junit."""

import os
from typing import NamedTuple, Optional

from comfy_cli import errors, report


class Files(NamedTuple):
    folder: Optional[object]  # outputs.OutputDir, where downloads go (--output-dir or --expect's scratch)
    expecting: Optional[object]  # expect.ForRun (--expect)
    manifest: Optional[object]  # manifest.Manifest (--output-dir)
    manifest_worker: Optional[object]
    live: Optional[object]  # livereport.LiveReport (--report)


def open_files(opts, new_worker):
    """--output-dir (the folder and its manifest), --expect and --report, per the run's Options;
    `new_worker(name)`: a worker whose results go on the run's queue."""
    folder = expecting = manifest = manifest_worker = live = None
    if opts.expect:
        from comfy_cli.expect import ForRun

        expecting = ForRun(opts.expect, opts.tolerance, opts.update_expected, opts.output_dir,
                           opts.overwrite, opts.include_temp)
    if opts.output_dir or expecting:
        from comfy_cli.outputs import OutputDir

        folder = OutputDir(opts.output_dir or expecting.folder(), opts.overwrite)
    if opts.output_dir:
        from comfy_cli.manifest import Manifest

        manifest = Manifest(opts.output_dir)
        if opts.report:  # (the page may go into a folder of its own in DIR)
            os.makedirs(os.path.dirname(os.path.abspath(opts.report)), exist_ok=True)
        manifest_worker = new_worker("manifest")
    if opts.report:
        from comfy_cli.livereport import LiveReport

        live = LiveReport(opts.report, new_worker("report"))
    return Files(folder, expecting, manifest, manifest_worker, live)


def write_junit(path, prompts, seconds, overwrite):
    """--junit FILE, atomically; None, or why it could not be written."""
    from comfy_cli.outputs import write_new

    text = errors.redact(report.junit_xml(prompts, seconds)).encode()
    try:
        write_new(path, lambda fh: fh.write(text), overwrite)
    except OSError as exc:
        return f"--junit {path}: cannot write: {exc.strerror or exc}"
    return None
